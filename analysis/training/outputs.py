"""What a run leaves in its directory: checkpoints, metrics, curves and the summary.

:class:`RunOutputs` is the writing half of a run (analysis.training.loop trains): it takes a new
run's directory over after its first good step, writes ``best.pt`` / ``last.pt`` (the head
alone while the backbone never trains), never over a good checkpoint with NaN/inf weights, and
the per-epoch metrics and curves. Under torchrun only rank 0 writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from surgery import write_json

from ..reporting import plot_curves
from ..reporting.tensorboard import EpochWriter
from . import checkpoints as ckpt
from .cached import OwnCache
from .config import TrainConfig
from .distributed import DistInfo
from .parts import RunParts
from .rundir import remove_run_files, write_metrics
from .step import NonFiniteLossError

__all__ = ["RunOutputs"]

PLOT_EVERY_S = 30  # curves on the way at most this often: short cached epochs plot less than train


class RunOutputs:
    """The files of one run directory, and whether a failed new run may remove them."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, dist: DistInfo, fresh: bool,
                 own_cache: OwnCache):
        self.cfg, self.run_dir, self.dist, self.own_cache = cfg, run_dir, dist, own_cache
        # a new run takes the directory over after its first step and, until its first
        # checkpoint, removes what it wrote if it fails
        self.fresh, self.started, self.wrote_last = fresh, not fresh, False
        self._plotted_at = time.perf_counter()
        self.events = EpochWriter(run_dir) if cfg.tensorboard and dist.is_main else None

    def take_over(self, parts: RunParts, config_record: dict[str, Any]) -> None:
        """After the first good step of a new run: replace an old run there (its files and the
        feature caches this run does not read), write config.json."""
        if self.dist.is_main:
            remove_run_files(self.run_dir)
            self.own_cache.keep_only(parts.feature_cache)
            write_json(self.run_dir / "config.json", config_record)
        self.started = True

    def abandon(self) -> None:
        """A new run failed before its first checkpoint: leave nothing behind."""
        if self.fresh and not self.wrote_last and self.dist.is_main:
            if self.started:
                remove_run_files(self.run_dir)
            self.own_cache.drop(self.started)

    def save(self, parts: RunParts, name: str, extra: dict[str, Any]) -> None:
        """A checkpoint: the head alone when the backbone never trains (analysis.training
        .checkpoints), else the whole model."""
        path = self.run_dir / name
        if parts.head_only_checkpoints:
            ckpt.save_head_checkpoint(path, parts.model, dict(
                extra, backbone_weights=parts.feature_cache.get("weights")))
        else:
            ckpt.save_checkpoint(path, parts.model, extra)

    def save_last(self, parts: RunParts, extra: dict[str, Any]) -> None:
        """``last.pt`` (rank 0), then a barrier: no rank moves on before the file is there."""
        if self.dist.is_main:
            self.save(parts, "last.pt", extra)
        self.wrote_last = True
        self.dist.wait()

    def epoch_files(self, history: list[dict[str, Any]]) -> None:
        """metrics.csv/.jsonl every epoch; curves.png at the end and at most every 30 s."""
        if not self.dist.is_main:
            return
        write_metrics(self.run_dir, history)
        if self.events is not None:
            self.events.add(history[-1])
        last = history[-1]["epoch"] == self.cfg.epochs
        if last or time.perf_counter() - self._plotted_at > PLOT_EVERY_S:
            plot_curves(self.run_dir / "curves.png", history,
                        f"{self.cfg.model} / {self.cfg.head} / {self.cfg.dataset}")
            self._plotted_at = time.perf_counter()

    def check_weights(self, parts: RunParts, epoch: int, step: int) -> None:
        """Never checkpoint NaN/inf weights: the previous ``last.pt`` stays the last good one."""
        # only what trains can have changed (a frozen backbone is not read every epoch)
        flags = [torch.isfinite(p).all() for p in parts.model.parameters() if p.requires_grad]
        if flags and not bool(torch.stack(flags).all()):
            raise NonFiniteLossError(
                f"weights became NaN or inf (after {epoch} epochs and {step} steps); stopped "
                f"without overwriting {self.run_dir / 'last.pt'} (the last good checkpoint); try "
                "a lower --lr, --clip-grad 1.0, or --amp off")

    def nonfinite_loss(self, epoch: int, step: int) -> NonFiniteLossError:
        """The error of a NaN/inf training loss, saying which checkpoint is kept."""
        last = self.run_dir / "last.pt"
        kept = last.exists() and (self.wrote_last or not self.fresh)
        keep = (f"the last good checkpoint is {last}" if kept
                else "no checkpoint had been written yet: nothing is kept")
        return NonFiniteLossError(
            f"training loss became NaN or inf at epoch {epoch + 1}, step {step + 1}; stopped "
            f"({keep}); try a lower --lr, --clip-grad 1.0, or --amp off")

    def write_summary(self, summary: dict[str, Any]) -> None:
        if self.events is not None:
            self.events.close()
        if self.dist.is_main:
            write_json(self.run_dir / "summary.json", summary)
