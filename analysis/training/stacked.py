"""Many heads of one kind as one stack: a learning-rate x weight-decay sweep in one wider pass.

:class:`StackedHeads` holds ``L`` heads built alike (the same spec on the same features, each
initialised as its run alone would be) as stacked parameters, member ``i`` of every tensor being
head ``i``, and runs them with ``torch.func.vmap`` over ``functional_call`` of one template: the
features are not copied per member, parameter-free work (pooling) runs once, and a Linear
becomes one matmul ``L`` times as wide. Each member has its own learning rate and weight decay
(analysis.training.stacked_optim) and, for dropout, its own generator: the template's dropout
layers take a mask drawn per member in the order and shape ``nn.Dropout`` draws it, so a member
sees the masks its run alone would draw from the global stream. Heads that vmap cannot batch
(a module with running statistics, an operator without a batching rule) run one member at a
time on the same stacked tensors.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from .stacked_optim import StackedOptimizer, clip_members

__all__ = ["MaskDropout", "StackedHeads"]


class MaskDropout(nn.Module):
    """Dropout whose mask (already divided by the keep probability) comes in as a buffer, so
    that each member of a stack gets its own; in eval mode, or with ``p`` 0, it does nothing
    (as ``nn.Dropout``, which then draws nothing either)."""

    def __init__(self, p: float, feature: bool):
        super().__init__()
        self.p, self.feature = float(p), feature
        self.register_buffer("mask", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.mask

    def mask_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """The noise shape ``F.dropout`` (elements) or ``F.dropout2d`` (channels) draws."""
        if self.feature:
            return (input_shape[0], input_shape[1], *([1] * (len(input_shape) - 2)))
        return tuple(input_shape)


def _swap_dropouts(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Dropout | nn.Dropout1d | nn.Dropout2d | nn.Dropout3d):
            feature = not isinstance(child, nn.Dropout)
            setattr(module, name, MaskDropout(child.p, feature))
        else:
            _swap_dropouts(child)


class StackedHeads:
    """``heads`` (one kind, built alike) as one stack on ``device``, each with its learning rate
    (``lrs``, before the schedule), weight decay and dropout stream (``dropout_seeds``).

    ``train_step`` runs one optimiser step of every member on one batch and returns the members'
    losses; ``logits`` evaluates them; ``keep`` drops members; ``state_dict(i)`` is member ``i``
    as its head's state dict.
    """

    def __init__(self, heads: Sequence[nn.Module], lrs: Sequence[float],
                 weight_decays: Sequence[float], dropout_seeds: Sequence[int], *,
                 optimizer: str = "adamw", momentum: float = 0.9, label_smoothing: float = 0.0,
                 clip_grad: float | None = None, amp_dtype: torch.dtype | None = None,
                 device: torch.device | str = "cpu"):
        if not heads or not len(heads) == len(lrs) == len(weight_decays) == len(dropout_seeds):
            raise ValueError("a stack needs one learning rate, weight decay and dropout seed per "
                             "head, and at least one head")
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
        self.lrs = list(lrs)
        self.optimizer = StackedOptimizer(self.params, optimizer, weight_decays, momentum)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in dropout_seeds]
        self.label_smoothing, self.clip_grad, self.amp_dtype = label_smoothing, clip_grad, amp_dtype
        self.dropouts = [(n, m) for n, m in self.template.named_modules()
                         if isinstance(m, MaskDropout) and m.p > 0]
        self._input_shapes: dict[str, tuple[int, ...]] | None = None
        self.batched: bool | None = None  # vmap works (decided on the first batch)

    def __len__(self) -> int:
        return len(self.lrs)

    # -- forward -------------------------------------------------------------------------------
    def _record_shapes(self, x: torch.Tensor) -> None:
        """The input shape (without the batch) of each dropout layer, from one forward of
        member 0 in train mode; then whether to run the members through vmap or one at a time
        (:meth:`_choose_mode`)."""
        shapes: dict[str, tuple[int, ...]] = {}
        hooks = [m.register_forward_hook(lambda _m, i, _o, n=n: shapes.__setitem__(
            n, tuple(i[0].shape[1:]))) for n, m in self.dropouts]
        self.template.train()
        with torch.no_grad():  # on copies: a module with running statistics updates them
            first = {n: t[0].clone() for n, t in {**self.params, **self.buffers}.items()}
            functional_call(self.template, first, (x[:2],))
        for h in hooks:
            h.remove()
        self._input_shapes = shapes
        self.batched = self._choose_mode(x)

    def _choose_mode(self, x: torch.Tensor) -> bool:
        """vmap when it batches this head and a forward and backward through it is faster than
        one member at a time (a Linear on an unbatched 3-D input, as attention pooling's keys,
        can be slower batched), timed once on copies of the weights and masks of ones."""
        if len(self) == 1:
            return False
        times = {}
        for batched in (True, False):
            try:
                times[batched] = min(self._time_step(x, batched) for _ in range(2))
            except Exception:  # an operator or module vmap cannot batch
                if not batched:
                    raise
        return times.get(True, float("inf")) <= times[False]

    def _time_step(self, x: torch.Tensor, batched: bool) -> float:
        state = {n: t.detach().clone().requires_grad_(t.requires_grad)
                 for n, t in {**self.params, **self.buffers}.items()}
        masks = {f"{name}.mask": torch.ones(len(self), *m.mask_shape(
            (len(x), *self._input_shapes[name])), device=self.device)  # type: ignore[index]
            for name, m in self.dropouts}
        t0 = time.perf_counter()
        with self._autocast():
            logits = self._call(state, masks, x, batched)
        logits.float().logsumexp(-1).sum().backward()
        return time.perf_counter() - t0

    def _masks(self, batch: int) -> dict[str, torch.Tensor]:
        """This step's dropout masks, (members, *noise shape), each member from its generator."""
        masks = {}
        for name, m in self.dropouts:
            shape = m.mask_shape((batch, *self._input_shapes[name]))  # type: ignore[index]
            draws = [torch.empty(shape).bernoulli_(1 - m.p, generator=g) for g in self.generators]
            masks[f"{name}.mask"] = torch.stack(draws).div_(1 - m.p).to(self.device)
        return masks

    def _call(self, state: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
              x: torch.Tensor, batched: bool) -> torch.Tensor:
        """Logits of every member in ``state``, (members, B, classes)."""
        def one(s: dict[str, torch.Tensor], m: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.template, {**s, **m}, (x,))
        if batched:
            return vmap(one, in_dims=(0, 0))(state, masks)
        n = len(next(iter(state.values())))
        return torch.stack([one({k: v[i] for k, v in state.items()},
                                {k: v[i] for k, v in masks.items()}) for i in range(n)])

    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    # -- training and evaluation ---------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lrs: Sequence[float]) -> torch.Tensor:
        """One optimiser step of every member on the batch ``(x, y)`` at this step's learning
        rates ``lrs``; returns each member's mean loss (detached), shape (members,)."""
        if self._input_shapes is None:
            self._record_shapes(x)
        self.template.train()
        masks = self._masks(len(x))
        with self._autocast():
            logits = self._call({**self.params, **self.buffers}, masks, x, bool(self.batched))
        losses = torch.stack([F.cross_entropy(lg, y, label_smoothing=self.label_smoothing)
                              for lg in logits.unbind(0)])
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()
        if self.clip_grad:
            clip_members(self.params, float(self.clip_grad))
        self.optimizer.step(self.params, lrs)
        return losses.detach()

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits on ``x`` in eval mode, float32, (members, B, classes)."""
        if self._input_shapes is None:
            self._record_shapes(x)
        self.template.eval()
        with self._autocast():
            out = self._call({**self.params, **self.buffers}, {}, x, bool(self.batched))
        return out.float()

    def finite(self) -> torch.Tensor:
        """Per member: whether all its trainable weights are finite."""
        flags = [torch.isfinite(p.detach()).reshape(len(p), -1).all(1) for p in self.params.values()
                 if p.requires_grad]
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
        self.optimizer.keep(idx)
        self.lrs = [self.lrs[i] for i in idx.tolist()]
        self.generators = [self.generators[i] for i in idx.tolist()]

    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i`` as its head's ``state_dict`` (on the CPU, copied)."""
        out = {n: t[i].detach().cpu().clone() for n, t in {**self.params, **self.buffers}.items()}
        keys = self.template.state_dict().keys()
        return {k: out[k] for k in keys if k in out}

    def nbytes(self) -> int:
        """Bytes of the members' weights (what each copy of them costs: gradients, optimiser
        state and the best epoch's weights are as large again)."""
        return sum(t.numel() * t.element_size() for t in self.params.values())
