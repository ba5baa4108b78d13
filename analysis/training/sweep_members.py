"""The members of a sweep and successive halving: what one pass trains and what it stops.

A :class:`SweepMember` is one (head, learning rate, weight decay, seed) of a sweep
(analysis.training.sweep): its run alone's config, and what became of it (``status``, its
metrics per epoch, its best epoch and that epoch's head weights). :class:`Halving` decides,
after each of its rung epochs, which settings of each head go on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import surgery
from surgery import atomic_write

from .config import TrainConfig

__all__ = ["MEMBER_STATUS", "Halving", "SweepMember"]

MEMBER_STATUS = ("ok", "diverged", "pruned")


@dataclass
class SweepMember:
    """One (head, learning rate, weight decay, seed) of a sweep and what became of it:
    ``status`` (:data:`MEMBER_STATUS`), why it stopped early (``stopped``), its metrics rows
    per epoch (as ``metrics.jsonl``), its best epoch and that epoch's head weights."""

    head: str  # a head spec, as TrainConfig.head takes it
    lr: float
    weight_decay: float
    seed: int
    status: str = "ok"
    stopped: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"val_acc": -1.0, "epoch": 0})
    best_state: dict[str, torch.Tensor] | None = None
    best_file: str | None = None  # where best_state went once its pass ended (memory bounded)
    totals: dict[str, Any] = field(
        default_factory=lambda: {"time_s": 0.0, "train_time_s": 0.0, "train_images": 0})

    @property
    def label(self) -> str:
        return surgery.head_label(surgery.parse_head(self.head))

    @property
    def setting(self) -> tuple[str, float, float]:
        """(head label, lr, weight decay): what the seeds of one setting share."""
        return self.label, self.lr, self.weight_decay

    def spill(self, directory: Path) -> None:
        """Move the best epoch's head weights to a file in ``directory``: a sweep in several
        passes keeps in memory only the pass under way, not every finished member's copy."""
        if self.best_state is None:
            return
        key = f"{self.head}|{self.lr!r}|{self.weight_decay!r}|{self.seed}"
        path = directory / f"{hashlib.blake2b(key.encode(), digest_size=8).hexdigest()}.pt"
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: torch.save(self.best_state, f))
        self.best_file, self.best_state = str(path), None

    def head_state(self) -> dict[str, torch.Tensor] | None:
        """The best epoch's head weights, from memory or from the file they were moved to."""
        if self.best_state is None and self.best_file is not None:
            return torch.load(self.best_file, map_location="cpu", weights_only=True)
        return self.best_state

    def config(self, base: TrainConfig) -> TrainConfig:
        """The TrainConfig of this member's run alone."""
        return replace(base, head=self.head, hidden=(), dropout=0.0, lr=self.lr,
                       weight_decay=self.weight_decay, seed=self.seed)

    def record(self) -> dict[str, Any]:
        """JSON-ready: the setting, status, best validation accuracy and epoch, the history."""
        return {"head": self.label, "head_spec": self.head, "lr": self.lr,
                "weight_decay": self.weight_decay, "seed": self.seed, "status": self.status,
                "stopped": self.stopped, "epochs": len(self.history),
                "val_acc": self.best["val_acc"] if self.best["epoch"] else None,
                "best_epoch": self.best["epoch"] or None, "history": self.history}


@dataclass(frozen=True)
class Halving:
    """Successive halving (Jamieson and Talwalkar 2016): after each epoch of ``rungs``, keep
    per head the ``keep`` fraction (at least ``min_keep``) of its settings with the best mean
    best-so-far validation accuracy over seeds; the rest stop, ``pruned``. A setting with a
    diverged seed is pruned at the next rung (it cannot be chosen)."""

    rungs: tuple[int, ...] = ()
    keep: float = 0.5
    min_keep: int = 2

    @classmethod
    def at_fractions(cls, epochs: int, fractions: Sequence[float], keep: float = 0.5,
                     min_keep: int = 2) -> Halving:
        """Rungs after these fractions of ``epochs`` (rounded up; the last epoch never)."""
        rungs = sorted({max(1, math.ceil(f * epochs)) for f in fractions} - {epochs})
        return cls(tuple(r for r in rungs if r < epochs), keep, min_keep)

    def survivors(self, members: Sequence[SweepMember]) -> set[tuple[str, float, float]]:
        """The settings that go on, of the members still training."""
        by_setting: dict[tuple[str, float, float], list[SweepMember]] = {}
        for m in members:
            by_setting.setdefault(m.setting, []).append(m)
        keep: set[tuple[str, float, float]] = set()
        for label in {s[0] for s in by_setting}:
            scored = [(sum(m.best["val_acc"] for m in ms) / len(ms), s)
                      for s, ms in by_setting.items() if s[0] == label
                      and all(m.status == "ok" for m in ms)]
            n = max(self.min_keep, math.ceil(self.keep * len(scored)))
            keep |= {s for _, s in sorted(scored, key=lambda t: -t[0])[:n]}
        return keep
