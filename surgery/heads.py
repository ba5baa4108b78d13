"""Head registry: one short name per kind of classifier, one factory per name.

A head is composition: a pooling (``avg``, ``max``, ``avgmax``, ``flatten``) over the backbone's
feature positions, an optional MLP (``hidden`` sizes with ReLU and dropout), then the output
Linear. ``nin`` (Network in Network: 1x1 convolution to the classes, then global average) is the
one head with its own class, since its pooling comes last. ``original`` keeps timm's own head,
reset to the new number of classes, as the baseline.

Pooling is ours, not timm's ``global_pool``: several timm families accept ``'max'`` and silently
do something else. It is written against ``x.mean`` / ``x.amax`` over the patch positions only,
never over class, distillation or register tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .layout import FeatureInfo

__all__ = [
    "HEADS", "HeadKind", "add_head_kind", "register_head", "build_head", "check_head_args",
    "head_label", "as_hidden",
    "FeaturePool", "PoolHead", "NinHead", "GridMismatchError", "POOLINGS",
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
                "pooling heads (gap, gmp, gapmp, nin) take any size")


def _positions(x: torch.Tensor, info: FeatureInfo) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Features as (B, C, L) for NCHW / NCL or (B, L, C) otherwise, prefix tokens removed.

    Returns the tensor and its spatial grid (for the Flatten size check).
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
        # positions as _positions() sees them: the patch-token count for token models
        self.grid = info.grid if info.layout in ("NCHW", "NHWC") else (info.num_positions,)

    @property
    def out_features(self) -> int:
        c = self.info.channels
        return {"avg": c, "max": c, "avgmax": 2 * c, "flatten": c * self.info.num_positions}[self.pool]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = _positions(x, self.info)
        dim = 2 if self.info.layout in ("NCHW", "NCL") else 1
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


def _mlp(in_features: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), in_features


class PoolHead(nn.Module):
    """pooling -> [Linear-ReLU-Dropout]* -> Linear: the gap, gmp, gapmp and flatten heads."""

    def __init__(self, pool: str, info: FeatureInfo, num_classes: int,
                 hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.pool = FeaturePool(pool, info)
        self.pre_logits, width = _mlp(self.pool.out_features, hidden, dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(self.pool(x)))


class NinHead(nn.Module):
    """Network in Network: 1x1 convolutions to one map per class, then global average.

    ``hidden`` adds 1x1 conv-ReLU-Dropout layers first (NiN's mlpconv). Because pooling comes
    last, :meth:`class_maps` gives class activation maps for free.
    """

    def __init__(self, info: FeatureInfo, num_classes: int,
                 hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.info = info
        conv = info.layout == "NCHW"

        def pointwise(cin: int, cout: int) -> nn.Module:
            return nn.Conv2d(cin, cout, 1) if conv else nn.Linear(cin, cout)

        layers: list[nn.Module] = []
        width = info.channels
        for h in hidden:
            layers += [pointwise(width, h), nn.ReLU(inplace=True),
                       nn.Dropout2d(dropout) if conv else nn.Dropout(dropout)]
            width = h
        if not hidden and dropout > 0:
            layers.append(nn.Dropout2d(dropout) if conv else nn.Dropout(dropout))
        self.pre_logits = nn.Sequential(*layers)
        self.fc = pointwise(width, num_classes)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position class scores, (B, K, H, W) for maps or (B, L, K) for tokens / NCL."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if self.info.layout == "NCL":
            x = x.transpose(1, 2)
        if self.info.layout == "NLC":
            x = x[:, self.info.num_prefix_tokens:]
        scores = self.fc(self.pre_logits(x))
        return scores.permute(0, 3, 1, 2) if self.info.layout == "NHWC" else scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.class_maps(x)
        return maps.mean((2, 3)) if maps.dim() == 4 else maps.mean(1)


HeadBuilder = Callable[[FeatureInfo, int, Sequence[int], float], nn.Module]


@dataclass(frozen=True)
class HeadKind:
    """One entry of the registry: the name users type, a one-line description, a factory."""

    name: str
    description: str
    build: HeadBuilder | None  # None: built by swap_head from the backbone itself (``original``)
    any_input_size: bool = True

    def __str__(self) -> str:
        return self.name


HEADS: dict[str, HeadKind] = {}


def add_head_kind(kind: HeadKind) -> HeadKind:
    """Add ``kind`` to :data:`HEADS`; a name already taken is refused (as in every registry)."""
    if kind.name in HEADS:
        raise ValueError(f"head kind {kind.name!r} is already registered; choose another name")
    HEADS[kind.name] = kind
    return kind


def register_head(name: str, description: str, any_input_size: bool = True
                  ) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator adding a head factory ``(features, num_classes, hidden, dropout) -> Module``."""

    def add(fn: HeadBuilder) -> HeadBuilder:
        add_head_kind(HeadKind(name, description, fn, any_input_size))
        return fn

    return add


def _pool_head(pool: str) -> HeadBuilder:
    def build(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float):
        return PoolHead(pool, info, num_classes, hidden, dropout)
    return build


register_head("gap", "global average pooling, then Linear")(_pool_head("avg"))
register_head("gmp", "global max pooling, then Linear")(_pool_head("max"))
register_head("gapmp", "average and max pooling concatenated (2C features), then Linear")(
    _pool_head("avgmax"))
register_head("flatten", "Flatten + Dense over the whole feature grid (fixed input size)",
              any_input_size=False)(_pool_head("flatten"))
register_head("nin", "1x1 convolution to the classes, then global average (Network in Network)")(
    lambda info, k, hidden, dropout: NinHead(info, k, hidden, dropout))
add_head_kind(HeadKind("original", "timm's own head, reset to num_classes (baseline)", None))


def as_hidden(hidden: int | Sequence[int] | None) -> tuple[int, ...]:
    """Hidden widths as a tuple: ``512`` is one layer ``(512,)``, None is none ``()``."""
    if hidden is None:
        return ()
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return (hidden,)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a width (512) or a sequence of widths ((512, 256)), "
                         f"got {hidden!r}")
    return tuple(hidden)


def check_head_args(head: str, num_classes: int, hidden: int | Sequence[int],
                    dropout: float) -> None:
    """Validate user-supplied head options with messages that say what to pass instead."""
    hidden = as_hidden(hidden)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {tuple(hidden)!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    if head == "original" and (hidden or dropout):
        raise ValueError("the original head is timm's own: hidden and dropout apply to the "
                         "pooling heads (gap, gmp, gapmp, flatten, nin)")


def head_label(head: str, hidden: Sequence[int] = (), dropout: float = 0.0) -> str:
    """The name of a head with its options in tables, run names and study labels:
    ``gap``, ``flatten-h256-d0.5``, ``nin-h64x32``."""
    parts = [head]
    if hidden:
        parts.append("h" + "x".join(map(str, hidden)))
    if dropout:
        parts.append(f"d{dropout:g}")
    return "-".join(parts)


def build_head(head: str, info: FeatureInfo, num_classes: int,
               hidden: int | Sequence[int] = (), dropout: float = 0.0) -> nn.Module:
    """A new head of kind ``head`` for features described by ``info``."""
    check_head_args(head, num_classes, hidden, dropout)
    kind = HEADS[head]
    if kind.build is None:
        raise ValueError(f"head {head!r} is built from the backbone itself: use swap_head()")
    return kind.build(info, num_classes, as_hidden(hidden), float(dropout))
