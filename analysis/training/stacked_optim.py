"""One optimiser per member of a stack, each the optimiser its run alone would have.

A sweep (analysis.training.sweep) holds the heads of one kind at many learning rates as one
stack of parameters, member ``i`` of every tensor being one head. torch.optim cannot give the
members of one tensor different learning rates, so :class:`MemberOptimizers` gives every member
its own optimiser (analysis.training.make_optimizer: the fused AdamW, or SGD), built over
views of its slice of the stacked tensors, with the parameter groups a run alone has (weight
decay on tensors of more than one dimension, none on biases and norms): a member's update is
the same kernel on the same numbers as its run alone. Gradient clipping is each member's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["MemberOptimizers"]

MakeOptimizer = Callable[[list[dict[str, Any]]], torch.optim.Optimizer]


class MemberOptimizers:
    """The optimisers of a stack's members over views of ``params`` (name -> stacked tensor);
    ``make`` builds one from parameter groups; ``weight_decays`` one per member."""

    def __init__(self, params: dict[str, torch.Tensor], weight_decays: Sequence[float],
                 make: MakeOptimizer):
        self.names = [n for n, p in params.items() if p.requires_grad]
        self.views = [self._views(params, i) for i in range(len(weight_decays))]
        self.optimizers = []
        for views, wd in zip(self.views, weight_decays, strict=True):
            decay = [views[n] for n in self.names if views[n].dim() > 1]
            no_decay = [views[n] for n in self.names if views[n].dim() <= 1]
            groups = [{"params": ps, "weight_decay": w, "lr_scale": 1.0}
                      for ps, w in ((decay, wd), (no_decay, 0.0))]
            self.optimizers.append(make(groups))

    def _views(self, params: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s slice of each trainable tensor: leaves sharing the stack's storage."""
        return {n: params[n].detach()[i] for n in self.names}

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor], lrs: Sequence[float],
             clip_grad: float | None = None) -> None:
        """One update of every member from ``params[...].grad`` at this step's ``lrs``
        (clipped first, each member alone, to a global L2 norm of ``clip_grad``)."""
        for i, (views, opt) in enumerate(zip(self.views, self.optimizers, strict=True)):
            grads = []
            for n in self.names:
                g = params[n].grad
                views[n].grad = None if g is None else g[i]
                if g is not None:
                    grads.append(views[n])
            if clip_grad and grads:
                torch.nn.utils.clip_grad_norm_(grads, float(clip_grad))
            for group in opt.param_groups:
                group["lr"] = lrs[i] * group["lr_scale"]
            opt.step()
            for v in views.values():
                v.grad = None

    def keep(self, index: Sequence[int], params: dict[str, torch.Tensor]) -> None:
        """Keep members ``index`` (old positions, in order), now at positions 0, 1, ... of the
        new stacked ``params``: their optimisers move, with their state, onto the new views."""
        views, optimizers = [], []
        for new, old in enumerate(index):
            opt, fresh = self.optimizers[old], self._views(params, new)
            swap = {id(self.views[old][n]): fresh[n] for n in self.names}
            for group in opt.param_groups:
                group["params"] = [swap[id(p)] for p in group["params"]]
            opt.state = defaultdict(dict, {swap[id(p)]: s for p, s in opt.state.items()})
            views.append(fresh)
            optimizers.append(opt)
        self.views, self.optimizers = views, optimizers
