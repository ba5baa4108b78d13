"""Many heads of one kind as one stack: a learning-rate x weight-decay sweep in one wider pass.

:class:`StackedHeads` holds ``L`` heads built alike (same spec, features and seed) as stacked
parameters, member ``i`` of every tensor being head ``i``, and runs them the fastest way that
applies: ``mlp`` (a parameter-free pooling then Linear / ReLU / Dropout: pooled once, the first
Linear one matmul ``L`` times as wide), ``vmap`` (``torch.func.vmap`` over one template) or
``loop`` (one member at a time), vmap or loop as timed once. Members share one seed, so the
stack draws each dropout mask once, as ``nn.Dropout`` would for each member alone. Each member
has its own optimiser (analysis.training.stacked_optim).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from surgery import PoolHead

from .stacked_optim import MemberOptimizers

__all__ = ["MODES", "MaskDropout", "StackedHeads"]

MODES = ("mlp", "vmap", "loop")


class MaskDropout(nn.Module):
    """Dropout whose mask (already divided by the keep probability) comes in as a buffer; in
    eval mode, or with ``p`` 0, it does nothing (as ``nn.Dropout``, which then draws nothing)."""

    def __init__(self, p: float, feature: bool):
        super().__init__()
        self.p, self.feature = float(p), feature
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        mask: torch.Tensor = self.mask  # type: ignore[assignment]
        return x * mask

    def mask_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The noise shape ``F.dropout`` (elements) or ``F.dropout2d`` (channels) draws."""
        if self.feature:
            return (input_shape[0], input_shape[1], *([1] * (len(input_shape) - 2)))
        return tuple(input_shape)


def _swap_dropouts(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
            setattr(module, name, MaskDropout(child.p, not isinstance(child, nn.Dropout)))
        else:
            _swap_dropouts(child)


def _mlp_layers(template: nn.Module) -> list[tuple[str, str]] | None:
    """``(kind, module name)`` of a PoolHead whose pooling has no parameters and whose
    pre-logits are Linear / ReLU / Dropout only, ending with ``fc``; else None."""
    if not isinstance(template, PoolHead) or any(True for _ in template.pool.parameters()):
        return None
    layers = []
    for name, m in template.pre_logits.named_children():
        kind = ("linear" if isinstance(m, nn.Linear) else "relu" if isinstance(m, nn.ReLU)
                else "dropout" if isinstance(m, MaskDropout) and not m.feature else None)
        if kind is None:
            return None
        layers.append((kind, f"pre_logits.{name}"))
    return [*layers, ("linear", "fc")]


class StackedHeads:
    """``heads`` (one kind, built alike, one seed) as one stack on ``device``, each with its
    weight decay; ``make_optimizer`` builds a member's optimiser from its parameter groups;
    ``dropout_seed`` seeds the masks (the members' shared stream).

    ``train_step`` runs one optimiser step of every member on one batch and returns the members'
    losses; ``logits`` evaluates them; ``keep`` drops members; ``state_dict(i)`` is member ``i``
    as its head's state dict.
    """

    def __init__(self, heads: Sequence[nn.Module], weight_decays: Sequence[float],
                 make_optimizer: Callable[[list[dict[str, Any]]], torch.optim.Optimizer],
                 dropout_seed: int, *, label_smoothing: float = 0.0,
                 clip_grad: float | None = None, amp_dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu"):
        if not heads or len(heads) != len(weight_decays):
            raise ValueError("a stack needs at least one head and a weight decay per head")
        self.device = torch.device(device)
        self.template = copy.deepcopy(heads[0]).to(self.device)
        _swap_dropouts(self.template)
        self.params = {n: torch.stack([dict(h.named_parameters())[n].detach().to(self.device)
                                       for h in heads]).requires_grad_(p.requires_grad)
                       for n, p in self.template.named_parameters()}
        masks = {f"{n}.mask" for n, m in self.template.named_modules()
                 if isinstance(m, MaskDropout)}
        self.buffers = {n: torch.stack([dict(h.named_buffers())[n].to(self.device) for h in heads])
                        for n, b in self.template.named_buffers()
                        if n not in masks and b is not None}
        self.optimizers = MemberOptimizers(self.params, weight_decays, make_optimizer)
        self.generator = torch.Generator().manual_seed(int(dropout_seed))
        self.label_smoothing, self.clip_grad, self.amp_dtype = label_smoothing, clip_grad, amp_dtype
        self.dropouts = [(n, m) for n, m in self.template.named_modules()
                         if isinstance(m, MaskDropout) and m.p > 0]
        self._layers = _mlp_layers(self.template)
        self.input_shapes: dict[str, tuple[int, ...]] | None = None
        self.mode: str | None = None  # one of MODES, decided on the first batch

    def __len__(self) -> int:
        return len(next(iter(self.params.values())))

    # -- how the members run -------------------------------------------------------------------
    def _prepare(self, x: torch.Tensor) -> None:
        """Record each dropout layer's input shape (one forward of member 0 in train mode, on
        copies: a module with running statistics would update them), then choose the mode."""
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [m.register_forward_hook(lambda _m, i, _o, n=n: shapes.__setitem__(
            n, tuple(i[0].shape[1:]))) for n, m in self.dropouts]
        self.template.train()
        with torch.no_grad():
            first = {n: t[0].clone() for n, t in {**self.params, **self.buffers}.items()}
            functional_call(self.template, first, (x[:2],))
        for h in hooks:
            h.remove()
        self.input_shapes = shapes
        self.mode = "mlp" if self._layers is not None else self._choose_mode(x)

    def _choose_mode(self, x: torch.Tensor) -> str:
        """``vmap`` when it batches this head and a forward and backward through it is faster
        than ``loop``, timed once on copies of the weights."""
        if len(self) == 1:
            return "loop"
        times = {}
        for mode in ("vmap", "loop"):
            try:
                times[mode] = min(self._time_step(x, mode) for _ in range(2))
            except Exception:  # an operator or module vmap cannot batch
                if mode == "loop":
                    raise
        return "vmap" if times.get("vmap", float("inf")) <= times["loop"] else "loop"

    def _time_step(self, x: torch.Tensor, mode: str) -> float:
        state = {n: t.detach().clone().requires_grad_(t.requires_grad)
                 for n, t in {**self.params, **self.buffers}.items()}
        shapes = self.input_shapes or {}
        masks = {f"{name}.mask": torch.ones(m.mask_shape((len(x), *shapes[name])),
                                            device=self.device) for name, m in self.dropouts}
        t0 = time.perf_counter()
        with self._autocast():
            logits = self._forward(state, masks, x, mode)
        logits.float().logsumexp(-1).sum().backward()
        return time.perf_counter() - t0

    def _masks(self, batch: int) -> dict[str, torch.Tensor]:
        """This step's dropout masks, each drawn once for all members (they share a seed)."""
        masks = {}
        for name, m in self.dropouts:
            shape = m.mask_shape((batch, *(self.input_shapes or {})[name]))
            draw = torch.empty(shape).bernoulli_(1 - m.p, generator=self.generator)
            masks[f"{name}.mask"] = draw.div_(1 - m.p).to(self.device)
        return masks

    def _forward(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                 x: torch.Tensor, mode: str) -> torch.Tensor:
        """Logits of every member, (members, B, classes)."""
        if mode == "mlp":
            return self._mlp(state, masks, x)
        n = len(next(iter(state.values())))

        def one(s: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.template, {**s, **m}, (x,))
        if mode == "vmap":
            batched = {k: v.expand(n, *v.shape) for k, v in masks.items()}
            return vmap(one, in_dims=(0, 0))(state, batched)
        members = {k: v.unbind(0) for k, v in state.items()}  # one stack in the backward pass
        return torch.stack([one({k: v[i] for k, v in members.items()}, masks) for i in range(n)])

    def _mlp(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
        """Pool once, then the members' layers: the first Linear as one wide matmul over the
        shared input, later ones as one batched matmul."""
        h = self.template.pool(x)  # type: ignore[operator]
        shared = True
        for kind, name in self._layers or ():
            if kind == "linear":
                w, b = state[f"{name}.weight"], state[f"{name}.bias"]  # (L, out, in), (L, out)
                if shared:
                    wide = h @ w.reshape(-1, w.shape[-1]).t()  # (B, L * out)
                    h = wide.view(len(h), len(w), -1).transpose(0, 1) + b[:, None]
                else:
                    h = torch.baddbmm(b[:, None], h, w.transpose(1, 2))
                shared = False
            elif kind == "relu":
                h = F.relu(h)
            elif self.template.training and f"{name}.mask" in masks:
                h = h * masks[f"{name}.mask"]
        return h

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # -- training and evaluation ---------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lrs: Sequence[float]) -> torch.Tensor:
        """One optimiser step of every member on the batch ``(x, y)`` at this step's learning
        rates ``lrs``; returns each member's mean loss (detached), shape (members,)."""
        if self.mode is None:
            self._prepare(x)
        self.template.train()
        masks = self._masks(len(x))
        with self._autocast():
            logits = self._forward({**self.params, **self.buffers}, masks, x, str(self.mode))
        losses = torch.stack([F.cross_entropy(lg, y, label_smoothing=self.label_smoothing)
                              for lg in logits.unbind(0)])
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()
        self.optimizers.step(self.params, lrs, self.clip_grad)
        return losses.detach()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on ``x`` in eval mode, float32, (members, B, classes)."""
        if self.mode is None:
            self._prepare(x)
        self.template.eval()
        with self._autocast():
            out = self._forward({**self.params, **self.buffers}, {}, x, str(self.mode))
        return out.float()

    def finite(self) -> torch.Tensor:
        """Per member: whether all its trainable weights are finite."""
        flags = [torch.isfinite(p.detach()).reshape(len(p), -1).all(1)
                 for p in self.params.values() if p.requires_grad]
        if not flags:
            return torch.ones(len(self), dtype=torch.bool)
        return torch.stack(flags).all(0).cpu()

    def keep(self, index: Sequence[int]) -> None:
        """Keep members ``index`` (positions, in order); the others are dropped."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        for name, p in self.params.items():
            self.params[name] = p.detach()[idx.to(p.device)].contiguous().requires_grad_(
                p.requires_grad)
        for name, b in self.buffers.items():
            self.buffers[name] = b[idx.to(b.device)].contiguous()
        self.optimizers.keep(idx.tolist(), self.params)

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i`` as its head's ``state_dict`` (on the CPU, copied)."""
        out = {n: t[i].detach().cpu().clone() for n, t in {**self.params, **self.buffers}.items()}
        return {k: out[k] for k in self.template.state_dict().keys() if k in out}
