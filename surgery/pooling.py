"""Poolings: how a head collapses the backbone's feature positions to one vector per image.

Every pooling reads the features through the same layout handling (NCHW and NHWC maps, token
sequences with prefix tokens, channels-first sequences), so each works on every layout the probe
reports. They are ours, written against ``x.mean`` / ``x.amax``, never timm's ``global_pool``:
:class:`FeaturePool` (avg, max, avgmax, flatten), :class:`GeMPool`, :class:`AttentionPool`,
:class:`ClassTokenPool` and :class:`PyramidPool`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .layout import FeatureInfo
from .registry import head_names

__all__ = [
    "POOLINGS", "FeaturePool", "GeMPool", "AttentionPool", "ClassTokenPool", "PyramidPool",
    "GridMismatchError", "GridTooSmallError", "positions", "position_dim", "feature_grid",
    "default_num_heads", "no_class_token_reason",
]

POOLINGS = ("avg", "max", "avgmax", "flatten")


class GridMismatchError(ValueError):
    """A Flatten head was fed a feature grid other than the one it was built for."""

    def __init__(self, built: tuple[int, ...], got: tuple[int, ...], built_input: tuple[int, int]):
        self.built, self.got, self.built_input = built, got, built_input
        super().__init__(self.describe(None))

    def describe(self, got_input: tuple[int, int] | None) -> str:
        def grid(g: tuple[int, ...]) -> str:
            return f"{g[0]}-token" if len(g) == 1 else "x".join(map(str, g))
        seen = f" (input {got_input[0]}x{got_input[1]})" if got_input else ""
        return (f"Flatten head was built for a {grid(self.built)} grid (input "
                f"{self.built_input[0]}x{self.built_input[1]}) but got {grid(self.got)}{seen}; "
                f"pooling heads ({head_names(any_input_size=True)}) take any size")


class GridTooSmallError(ValueError):
    """A pyramid pooling head was fed a grid with fewer cells a side than its finest level."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)

    def describe(self, got_input: tuple[int, int] | None) -> str:
        if got_input is None:
            return self.message
        return self.message.replace("; use", f" (input {got_input[0]}x{got_input[1]}); use", 1)


def positions(x: torch.Tensor, info: FeatureInfo) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Features as (B, C, L) for NCHW / NCL or (B, L, C) otherwise, prefix tokens removed.

    Returns the tensor and its spatial grid (for the Flatten size check). The position dimension
    is :func:`position_dim` of the layout.
    """
    if x.dim() == 2:  # backbone pooled already
        x = x.unsqueeze(1)
    if info.layout == "NCHW":
        return x.flatten(2), tuple(x.shape[2:])
    if info.layout == "NCL":
        return x, (x.shape[2],)
    if info.layout == "NHWC":
        return x.flatten(1, 2), tuple(x.shape[1:3])
    x = x[:, info.num_prefix_tokens:]
    return x, (x.shape[1],)


def position_dim(info: FeatureInfo) -> int:
    """The dimension of :func:`positions`' output that runs over positions."""
    return 2 if info.layout in ("NCHW", "NCL") else 1


def _runtime_grid(n: int, built: tuple[int, ...]) -> tuple[int, int] | None:
    """(H, W) of ``n`` tokens: the built grid, or one with its aspect ratio (other input sizes)."""
    if len(built) != 2:
        return None
    if n == built[0] * built[1]:
        return built[0], built[1]
    guess = max(1, round(math.sqrt(n * built[0] / built[1])))
    for rows in (guess, guess - 1, guess + 1):
        if rows > 0 and n % rows == 0:
            return rows, n // rows
    return None


def feature_grid(x: torch.Tensor, info: FeatureInfo) -> torch.Tensor:
    """Features as maps (B, C, H, W), prefix tokens removed; a token sequence that forms no
    rectangle becomes one row (B, C, 1, L). Used by pyramid pooling and class activation maps."""
    if info.layout == "NCHW" and x.dim() == 4:
        return x
    if info.layout == "NHWC" and x.dim() == 4:
        return x.permute(0, 3, 1, 2)
    seq, _ = positions(x, info)
    if position_dim(info) == 1:
        seq = seq.transpose(1, 2)  # (B, C, L)
    grid = _runtime_grid(seq.shape[2], info.grid)
    if grid is None:
        return seq.unsqueeze(2)
    return seq.reshape(seq.shape[0], seq.shape[1], grid[0], grid[1])


class FeaturePool(nn.Module):
    """Collapse the feature positions to one vector per image.

    ``avg``: mean over positions (C features); ``max``: maximum (C); ``avgmax``: both,
    concatenated (2C); ``flatten``: every position kept (C * positions), fixed grid.
    """

    def __init__(self, pool: str, info: FeatureInfo):
        super().__init__()
        if pool not in POOLINGS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {', '.join(POOLINGS)}")
        self.pool = pool
        self.info = info
        # positions as positions() sees them: the patch-token count for token models
        self.grid = info.grid if info.layout in ("NCHW", "NHWC") else (info.num_positions,)

    @property
    def out_features(self) -> int:
        c = self.info.channels
        return {"avg": c, "max": c, "avgmax": 2 * c, "flatten": c * self.info.num_positions}[self.pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = positions(x, self.info)
        dim = position_dim(self.info)
        if self.pool == "avg":
            return x.mean(dim)
        if self.pool == "max":
            return x.amax(dim)
        if self.pool == "avgmax":
            return torch.cat([x.mean(dim), x.amax(dim)], dim=1)
        if tuple(grid) != tuple(self.grid):
            raise GridMismatchError(self.info.grid, tuple(grid), self.info.input_size)
        return x.flatten(1)

    def extra_repr(self) -> str:
        return f"pool={self.pool!r}, layout={self.info.layout}, grid={self.info.grid}"


class GeMPool(nn.Module):
    """Generalized mean over the positions: ``(mean(clamp(x, eps)^p))^(1/p)`` per channel.

    ``p = 1`` is the average of the clamped features, ``p -> inf`` their maximum. ``p`` is a
    parameter (``learn_p=True``, learned with the head) or a buffer (frozen); either way it is in
    the state dict. The clamp makes the power defined: features below ``eps`` count as ``eps``
    (and pass no gradient), which matters for token models, whose normalised features are about
    half negative.
    """

    def __init__(self, info: FeatureInfo, p: float = 3.0, learn_p: bool = True, eps: float = 1e-6):
        super().__init__()
        self.info, self.eps, self.learn_p = info, float(eps), bool(learn_p)
        initial = torch.tensor(float(p))
        if learn_p:
            self.p = nn.Parameter(initial)
        else:
            self.register_buffer("p", initial)

    @property
    def out_features(self) -> int:
        return self.info.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = positions(x, self.info)
        p: torch.Tensor = self.p
        return x.clamp(min=self.eps).pow(p).mean(position_dim(self.info)).pow(p.reciprocal())

    def extra_repr(self) -> str:
        p = "?" if self.p.is_meta else f"{float(self.p.detach()):g}"
        return f"p={p}, learn_p={self.learn_p}, eps={self.eps:g}"


def default_num_heads(channels: int) -> int:
    """The largest divisor of ``channels`` not above ``channels // 64``, at least 1."""
    cap = max(1, channels // 64)
    return next(h for h in range(cap, 0, -1) if channels % h == 0)


class AttentionPool(nn.Module):
    """Attention pooling: one learned query attends over all positions, then a projection.

    ``q``, ``k``, ``v`` and ``proj`` are C x C linear maps; the query is a learned C-vector (as
    timm's ``AttentionPoolLatent`` without its norm and MLP). Parameters: 4 C^2 + 5 C.
    With one query the keys and values need not be computed at every position: head h's score
    of position i is ``q_h . (K_h x_i + b_h) = (K_h^T q_h) . x_i + q_h . b_h``, and its output
    ``sum_i a_i (V_h x_i + c_h) = V_h (sum_i a_i x_i) + c_h``. So the query is folded into the
    keys once (``u_h = K_h^T q_h``), each head pools the features with its attention weights,
    and only then are the values projected: the same function as attention over projected keys
    and values, at 4 C^2 + C + 2 H L C MACs per image over L positions and H heads instead of
    (2 L + 2) C^2 (20x fewer on a 7x7 grid of 512 channels).
    """

    def __init__(self, info: FeatureInfo, num_heads: int | None = None):
        super().__init__()
        c = info.channels
        heads = default_num_heads(c) if num_heads is None else int(num_heads)
        if c % heads:
            divisors = [d for d in range(1, c + 1) if c % d == 0 and d <= max(1, c // 16)]
            raise ValueError(f"attn:num_heads={heads} does not divide the {c} feature channels; "
                             f"choose a divisor of {c}, e.g. {', '.join(map(str, divisors[-4:]))}")
        self.info, self.num_heads = info, heads
        self.scale = float(c // heads) ** -0.5  # a Python float: no op for the MAC counters
        self.query = nn.Parameter(torch.zeros(1, 1, c))
        nn.init.trunc_normal_(self.query, std=c ** -0.5)
        self.q, self.k, self.v, self.proj = (nn.Linear(c, c) for _ in range(4))

    @property
    def out_features(self) -> int:
        return self.info.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, _ = positions(x, self.info)
        if position_dim(self.info) == 2:
            tokens = tokens.transpose(1, 2)  # (B, L, C)
        b, c, h = tokens.shape[0], tokens.shape[2], self.num_heads
        d = c // h
        q = self.q(self.query.reshape(1, c)).reshape(h, 1, d)
        keys = torch.bmm(q, self.k.weight.reshape(h, d, c)).reshape(h, c)  # u_h = K_h^T q_h
        shift = torch.bmm(q, self.k.bias.reshape(h, d, 1)).reshape(h)  # q_h . b_h
        scores = (torch.matmul(tokens, keys.t()) + shift) * self.scale  # (B, L, H)
        weights = scores.softmax(dim=1).transpose(1, 2)  # (B, H, L)
        pooled = torch.bmm(weights, tokens)  # (B, H, C): each head's weighted mean
        values = torch.bmm(pooled.transpose(0, 1), self.v.weight.reshape(h, d, c).transpose(1, 2))
        out = values.transpose(0, 1) + self.v.bias.reshape(h, d)  # (B, H, d)
        return self.proj(out.reshape(b, c))

    def extra_repr(self) -> str:
        return f"channels={self.info.channels}, num_heads={self.num_heads}"


class ClassTokenPool(nn.Module):
    """The class token (position 0 of the prefix tokens, where timm puts ``cls_token``), after
    the model's final norm: the one inside ``forward_features``, or ``norm`` (timm's ``fc_norm``,
    moved here from the backbone by the swap) for models that normalise after pooling."""

    def __init__(self, info: FeatureInfo, norm: nn.Module | None = None):
        super().__init__()
        if not info.class_token:
            raise ValueError(no_class_token_reason(info))
        self.info = info
        self.norm = norm if norm is not None else nn.Identity()

    @property
    def out_features(self) -> int:
        return self.info.channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x[:, 0])


def no_class_token_reason(info: FeatureInfo, name: str = "this model") -> str:
    """Why the token head does not apply, and which heads do."""
    if info.layout != "NLC":
        why = f"its features are {info.layout} maps, not tokens"
    elif info.num_prefix_tokens:
        why = (f"its {info.num_prefix_tokens} prefix token{'s' if info.num_prefix_tokens > 1 else ''}"
               " (register or distillation) without a cls_token")
    else:
        why = "its tokens are all patch tokens, no cls_token"
    return (f"{name} has no class token ({why}), so the token head does not apply; the pooling "
            f"heads do ({head_names()})")


def _tracing(x: torch.Tensor) -> bool:
    """Whether the pooling is being traced, exported or counted (on the meta device): then the
    explicit bins, which export with dynamic sizes and which the MAC rules count cell by cell."""
    return (x.is_meta or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            or torch.compiler.is_compiling())


def _bounds(size: int, n: int) -> list[tuple[int, int]]:
    """Bin i of n over ``size`` cells: [floor(i size / n), ceil((i + 1) size / n)), as
    ``adaptive_*_pool``; plain integer arithmetic on the size, so it exports with dynamic sizes."""
    return [((i * size) // n, ((i + 1) * size + n - 1) // n) for i in range(n)]


class PyramidPool(nn.Module):
    """Spatial pyramid pooling (He et al. 2014): each level ``n`` cuts the grid into ``n x n``
    bins, pools each (``max`` or ``avg``), and the levels are concatenated: C * sum(n^2)
    features (C x 21 at levels 1, 2, 4) for any grid with at least ``max(levels)`` cells a side.

    Traced, exported or counted, the bins are explicit slices with boundaries computed from the
    input size, so the head exports to ONNX with dynamic sizes; otherwise the same bins come
    from ``F.adaptive_max_pool2d`` / ``adaptive_avg_pool2d``, one kernel per level (the same
    values, much faster than a slice per bin). Token sequences that form no
    rectangle are cut into ``n^2`` bins along the sequence.
    """

    def __init__(self, info: FeatureInfo, levels: Sequence[int] = (1, 2, 4), pool: str = "max"):
        super().__init__()
        if not levels:
            raise ValueError("spp needs at least one level, e.g. spp:levels=1x2x4")
        if pool not in ("max", "avg"):
            raise ValueError(f"spp:pool={pool} is not valid; choose max or avg")
        self.info, self.levels, self.pool = info, tuple(int(n) for n in levels), pool
        self.one_d = len(info.grid) != 2  # tokens without a rectangle: bins along the sequence
        rows, cols = (1, info.grid[0]) if self.one_d else info.grid
        self._check(rows, cols, f" at input {info.input_size[0]}x{info.input_size[1]}")

    @property
    def out_features(self) -> int:
        return self.info.channels * sum(n * n for n in self.levels)

    def _check(self, rows: int, cols: int, where: str = "") -> None:
        finest = max(self.levels)
        need = (1, finest * finest) if self.one_d else (finest, finest)
        if rows < need[0] or cols < need[1]:
            levels = "x".join(map(str, self.levels))
            raise GridTooSmallError(
                f"spp:levels={levels} needs a feature grid of at least {need[0]}x{need[1]} cells, "
                f"got {rows}x{cols}{where}; use a larger input size or coarser levels "
                f"(e.g. spp:levels=1x2)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = feature_grid(x, self.info)
        rows, cols = grid.shape[2], grid.shape[3]
        self._check(rows, cols)
        if not _tracing(grid):  # the same bins, in one kernel per level
            adaptive = F.adaptive_max_pool2d if self.pool == "max" else F.adaptive_avg_pool2d
            return torch.cat([adaptive(grid, (1, n * n) if self.one_d else (n, n)).flatten(1)
                              for n in self.levels], dim=1)
        reduce = torch.amax if self.pool == "max" else torch.mean
        levels = []
        for n in self.levels:
            nr, nc = (1, n * n) if self.one_d else (n, n)
            bins = [reduce(grid[:, :, r0:r1, c0:c1], dim=(2, 3))
                    for r0, r1 in _bounds(rows, nr) for c0, c1 in _bounds(cols, nc)]
            levels.append(torch.stack(bins, dim=2).flatten(1))  # channel-major, as adaptive pool
        return torch.cat(levels, dim=1)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, pool={self.pool!r}, layout={self.info.layout}"
