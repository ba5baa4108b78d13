"""A sweep's progress on disk: an interrupted sweep resumes at its last saved epoch.

:class:`SweepState` writes, at the end of an epoch at most every ``minutes`` and at the end of
every pass, each member's record (status, metrics, best epoch and weights, time) and, for the
pass under way, each stack's weights, optimiser states and dropout generator. A sweep started
again with the same members reads it back and goes on from the next epoch; since the batch
order is a function of the seed and the epoch, it ends as the uninterrupted one would. The file
is written atomically; one that does not match the members (another grid, another model) or
cannot be read is ignored (with a warning) and replaced.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from surgery import atomic_write, one_line

from .sweep_members import SweepMember

__all__ = ["SweepState"]

_RECORD = ("status", "stopped", "history", "best", "best_state", "best_file", "totals")


class SweepState:
    """The saved progress of ``members`` in ``path`` (None: never saved), at most every
    ``minutes`` within a pass (0: only at the ends of passes)."""

    def __init__(self, path: str | Path | None, members: Sequence[SweepMember], minutes: float,
                 context: str = ""):
        self.path = None if path is None else Path(path)
        self.members, self.minutes = list(members), float(minutes)
        self.signature = [context, *[f"{m.head}|{m.lr!r}|{m.weight_decay!r}|{m.seed}"
                                     for m in members]]
        self._index = {id(m): i for i, m in enumerate(self.members)}
        self._saved_at = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        """Restore the members' records and return ``{"pass", "epoch", "stacks"}`` (epochs done
        in that pass; the stacks of that pass), or None when there is nothing to resume."""
        if self.path is None or not self.path.is_file():
            return None
        try:
            payload = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, damaged, another format: start over
            warnings.warn(f"sweep progress {str(self.path)!r} is unreadable ({one_line(err)}); "
                          "starting the sweep over", stacklevel=2)
            return None
        if payload.get("signature") != self.signature:
            return None  # another grid or another model: not ours to resume
        for m, rec in zip(self.members, payload["members"], strict=True):
            for key in _RECORD:
                setattr(m, key, rec[key])
        return payload

    def due(self) -> bool:
        return bool(self.minutes) and time.monotonic() - self._saved_at >= 60 * self.minutes

    def save(self, pass_index: int, epoch: int, stacks: Sequence[Any]) -> None:
        """Write the records and ``stacks`` (the pass under way, ``epoch`` epochs done)."""
        if self.path is None:
            return
        payload = {"signature": self.signature, "pass": pass_index, "epoch": epoch,
                   "members": [{k: getattr(m, k) for k in _RECORD} for m in self.members],
                   "stacks": [self._stack_state(s) for s in stacks]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda f: torch.save(payload, f))
        self._saved_at = time.monotonic()

    def _stack_state(self, stack: Any) -> dict[str, Any]:
        heads = stack.heads
        return {"members": [self._index[id(m)] for m in stack.members],
                "params": {n: t.detach().cpu() for n, t in heads.params.items()},
                "buffers": {n: t.cpu() for n, t in heads.buffers.items()},
                "optimizers": [o.state_dict() for o in heads.optimizers.optimizers],
                "generator": heads.generator.get_state(), "mode": heads.mode,
                "shapes": heads.input_shapes}

    def restore_stack(self, stack: Any, saved: dict[str, Any]) -> list[int]:
        """Put a freshly built stack back where ``saved`` left it; returns the positions of the
        members it drops (stopped before the save)."""
        keep = [self.members[i] for i in saved["members"]]
        dropped = [i for i, m in enumerate(stack.members) if all(m is not k for k in keep)]
        return dropped

    @staticmethod
    def load_weights(stack: Any, saved: dict[str, Any]) -> None:
        """Weights, optimiser states and the dropout stream of the members kept."""
        heads = stack.heads
        with torch.no_grad():
            for n, t in saved["params"].items():
                heads.params[n].copy_(t)
            for n, t in saved["buffers"].items():
                heads.buffers[n].copy_(t)
        for opt, state in zip(heads.optimizers.optimizers, saved["optimizers"], strict=True):
            opt.load_state_dict(state)
        heads.generator.set_state(saved["generator"])
        heads.mode, heads.input_shapes = saved["mode"], saved["shapes"]
