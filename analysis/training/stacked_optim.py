"""AdamW and SGD over stacked parameters: every member of a stack has its own learning rate and
weight decay, and all members update in the same few tensor operations.

A sweep (analysis.training.sweep) trains the heads of one kind at many learning rates as one
stack of parameters, member ``i`` of every tensor being one head. torch.optim cannot give the
members of one tensor different learning rates, so :class:`StackedOptimizer` performs the update
of ``torch.optim.AdamW`` (decoupled weight decay) or ``torch.optim.SGD`` (momentum, Nesterov) as
torch's single-tensor implementation writes it, with the per-member scalars as a column of
factors: on the CPU a member then ends where the same head trained alone with torch.optim ends,
up to float rounding (tested, 1e-5 relative on the logits). Tensors of one dimension per member
(biases, norms) get no weight decay, as in :func:`analysis.training.build_optimizer`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["StackedOptimizer", "clip_members"]

_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as build_optimizer uses it
_EPS = 1e-8


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Per-member scalars as float64 -> the tensor's dtype, shaped to broadcast over a member."""
    col = torch.tensor(list(values), dtype=torch.float64).to(like.dtype).to(like.device)
    return col.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """The optimiser of one stack: ``kind`` ``adamw`` or ``sgd``; ``weight_decays`` one per member.

    ``step(lrs)`` takes this step's learning rate of each member (schedule applied); ``keep``
    drops members (their state goes with them).
    """

    def __init__(self, params: dict[str, torch.Tensor], kind: str,
                 weight_decays: Sequence[float], momentum: float = 0.9):
        if kind not in ("adamw", "sgd"):
            raise ValueError(f"unknown optimizer {kind!r}; choose from: adamw, sgd")
        self.kind, self.momentum = kind, momentum
        self.weight_decays = list(weight_decays)
        self.steps = 0
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        for name, p in params.items():
            if not p.requires_grad:
                continue
            if kind == "adamw":
                self.state[name] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            else:
                self.state[name] = {}

    @staticmethod
    def decays(p: torch.Tensor) -> bool:
        """Weight decay applies to a member's tensor of more than one dimension."""
        return p.dim() - 1 > 1

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], lrs: Sequence[float]) -> None:
        """One update of every member from the gradients in ``params[...].grad``."""
        self.steps += 1
        for name, p in params.items():
            if name not in self.state or p.grad is None:
                continue
            wds = self.weight_decays if self.decays(p) else [0.0] * len(lrs)
            if self.kind == "adamw":
                self._adamw(p, self.state[name], lrs, wds)
            else:
                self._sgd(p, self.state[name], lrs, wds)

    def _adamw(self, p: torch.Tensor, st: dict[str, torch.Tensor], lrs: Sequence[float],
               wds: Sequence[float]) -> None:
        beta1, beta2 = _BETAS
        grad, exp_avg, exp_avg_sq = p.grad, st["exp_avg"], st["exp_avg_sq"]
        if any(wd != 0 for wd in wds):
            p.mul_(_column([1 - lr * wd for lr, wd in zip(lrs, wds, strict=True)], p))
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step = float(self.steps)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(_EPS)
        # torch's addcdiv_ computes self + (value * t1) / t2, each in float32
        p.add_(exp_avg.mul(_column([-(lr / bias_correction1) for lr in lrs], p)).div_(denom))

    def _sgd(self, p: torch.Tensor, st: dict[str, torch.Tensor], lrs: Sequence[float],
             wds: Sequence[float]) -> None:
        grad = p.grad
        if any(wd != 0 for wd in wds):
            grad = grad + p * _column(wds, p)
        if self.momentum:
            buf = st.get("momentum_buffer")
            if buf is None:
                buf = st["momentum_buffer"] = grad.clone()
            else:
                buf.mul_(self.momentum).add_(grad)
            grad = grad.add(buf, alpha=self.momentum)  # Nesterov, as build_optimizer asks
        p.add_(grad * _column([-lr for lr in lrs], p))

    def keep(self, index: torch.Tensor) -> None:
        """Keep members ``index`` (positions in the stack, in order) and their state."""
        self.weight_decays = [self.weight_decays[int(i)] for i in index]
        for st in self.state.values():
            for key, t in st.items():
                st[key] = t[index.to(t.device)].contiguous()


@torch.no_grad()
def clip_members(params: dict[str, torch.Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` for each member alone: its gradients scaled so that
    their global L2 norm is at most ``max_norm``."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.reshape(len(g), -1).norm(dim=1) for g in grads], dim=1)  # (members, tensors)
    total = norms.norm(dim=1)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))
