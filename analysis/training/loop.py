"""The loop of one fine-tuning run: epochs of steps, metrics, checkpoints and the final test.

:class:`RunLoop` is what :func:`analysis.training.train` runs once it holds the run directory:
it assembles the run (analysis.training.parts), trains it and writes the run directory (analysis.training.outputs). Each
epoch records train loss/accuracy in eval mode on a fixed train sample, validation
loss/accuracy, their gap, time, img/s and peak memory. Checkpoints hold the RNG states and the
position inside the epoch, and batch order and augmentation depend only on (seed, epoch), so on
CPU a resumed run ends as an uninterrupted one. Under ``torchrun`` every rank trains its shard
of each epoch in DistributedDataParallel, evaluation sums are reduced, and only rank 0 writes.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..reporting import progress_bar
from . import checkpoints as ckpt
from . import distributed
from .cached import OwnCache
from .config import TrainConfig
from .distributed import DistInfo
from .model import set_regime, step_seed
from .outputs import RunOutputs
from .parts import RunParts, assemble_run, run_config_record
from .rundir import run_summary
from .step import RunningLoss, evaluate, head_threads, lr_factor, peak_mem_mb

__all__ = ["KILL_AFTER_STEPS_ENV", "RunLoop", "StepHook"]

StepHook = Callable[[dict[str, Any]], None]

# fault injection for the resume tests: "N" kills (SIGKILL) any run after N optimiser steps,
# "NAME=N" only the run whose directory is NAME
KILL_AFTER_STEPS_ENV = "HEADSWAP_TEST_KILL_AFTER_STEPS"


def kill_after_steps(run_name: str) -> int | None:
    """The step count after which this run kills itself, from $HEADSWAP_TEST_KILL_AFTER_STEPS."""
    value = os.environ.get(KILL_AFTER_STEPS_ENV, "")
    name, _, steps = value.rpartition("=")
    return int(steps) if steps and name in ("", run_name) else None


class RunLoop:
    """One run's loop: epochs of steps, metrics, checkpoints, and the final test."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, state: dict[str, Any] | None,
                 data: Any, dist: DistInfo, system: dict[str, Any],
                 hooks: dict[str, StepHook | None], fresh: bool):
        self.cfg, self.run_dir, self.dist = cfg, run_dir, dist
        self.on_step, self.on_epoch = hooks["step"], hooks["epoch"]
        self.fresh = fresh
        self.device, self.amp = system["device"], system["amp_dtype"]
        self.resume_state: dict[str, Any] = state["extra"] if state is not None else {}
        self.first_epoch = int(self.resume_state.get("epoch", 0))
        self.first_step = int(self.resume_state.get("step", 0))
        own_cache = OwnCache.of(cfg, run_dir, fresh=fresh and dist.is_main)
        self.outputs = RunOutputs(cfg, run_dir, dist, fresh, own_cache)
        self.kill_after = kill_after_steps(run_dir.name)
        try:
            self.parts: RunParts = assemble_run(cfg, state, data, dist, system,
                                                self.first_epoch, run_dir)
        except BaseException:
            own_cache.drop(started=False)
            raise
        # what was measured before an interruption
        self.history, self.best, self.totals = ckpt.resumed_progress(self.resume_state)
        if state is not None:
            ckpt.restore_training(self.resume_state, self.parts.optimizer, self.parts.scaler)
            ckpt.restore_rank_state(self.resume_state, dist, seed=cfg.seed,
                                    epoch0=self.first_epoch, step0=self.first_step,
                                    path=run_dir / "last.pt")
        elif dist.rank > 0:  # different dropout masks per rank (rank 0 draws as one process does)
            ckpt.seed_rank(cfg.seed, dist.rank)
        else:  # the steps' random stream starts where a sweep member's does
            torch.manual_seed(step_seed(cfg.seed))
        self.config_record = run_config_record(cfg, self.parts, system, dist)
        self._tick_at = time.perf_counter()

    def position(self) -> dict[str, Any]:
        """Where this run starts: ``epoch`` epochs and ``step`` steps of the next one done."""
        status = "new" if self.fresh else ("resumed" if self.resume_state else "restarted")
        return {"status": status, "run_dir": self.run_dir, "epoch": self.first_epoch,
                "step": self.first_step, "epochs": self.cfg.epochs,
                "steps_per_epoch": self.parts.schedule.steps_per_epoch}

    def _tick(self) -> None:
        """Add the wall time since the last tick to ``time_s`` (kept across resumed segments)."""
        now = time.perf_counter()
        self.totals["time_s"] += now - self._tick_at
        self._tick_at = now

    def fit(self) -> dict[str, Any]:
        self._tick_at = time.perf_counter()
        try:
            for epoch in range(self.first_epoch, self.cfg.epochs):
                row = self._epoch(epoch)
                self._end_epoch(row)
        except BaseException:
            self.outputs.abandon()  # a new run with nothing to resume leaves nothing behind
            raise
        return self._finish()

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (from the checkpointed step when resuming); return its metrics row.
        Epochs on cached features run on one CPU thread (analysis.training.step.head_threads)."""
        if not self.parts.feed(self.cfg, epoch).cached:
            return self._epoch_steps(epoch)
        params = sum(p.numel() for p in self.parts.model.head_parameters())
        with head_threads(self.device, params):
            return self._epoch_steps(epoch)

    def _epoch_steps(self, epoch: int) -> dict[str, Any]:
        set_regime(self.parts.model, self.cfg, epoch)
        aug = ckpt.epoch_aug_rng(self.cfg.seed, epoch, self.dist.rank)
        running = ckpt.fresh_running()
        first = self.first_step if epoch == self.first_epoch else 0
        if first:
            aug.set_state(self.resume_state["aug_rng"])
            running.update(self.resume_state["running"])
        loss_sum = RunningLoss(self.device, running["loss_sum"])
        t0 = time.perf_counter()
        lr_scale = self._train_steps(epoch, first, aug, running, loss_sum, t0)
        train_time = running["train_time_s"] + time.perf_counter() - t0
        return self._epoch_row(epoch, lr_scale, running, loss_sum, train_time, t0)

    def _train_steps(self, epoch: int, first: int, aug: torch.Generator,
                     running: dict[str, Any], loss_sum: RunningLoss, t0: float) -> float:
        """The optimiser steps of one epoch from step ``first``; returns the last lr factor."""
        cfg, parts = self.cfg, self.parts
        feed = parts.feed(cfg, epoch)
        steps, sched = parts.schedule.steps_per_epoch, parts.schedule
        bar = self._progress(first, epoch)
        t_ckpt = t0
        lr_scale = 1.0
        for step, idx in enumerate(parts.sampler.batches(epoch, first), start=first):
            gstep = epoch * steps + step
            lr_scale = lr_factor(gstep, sched.total_steps, sched.warmup_steps, cfg.min_lr / cfg.lr)
            for group in parts.optimizer.param_groups:
                group["lr"] = cfg.lr * group["lr_scale"] * lr_scale
            idx_d = idx.to(feed.train_x.device)
            loss = feed.step(feed.train_x[idx_d], feed.train_y[idx_d], aug)
            loss_sum.add(loss, len(idx))
            running["seen"] += len(idx)
            if loss_sum.free_to_read or step % 20 == 0 or step == steps - 1:
                self._check_finite(loss_sum, epoch, step)
            if not self.outputs.started:
                self.outputs.take_over(parts, self.config_record)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{cfg.lr * lr_scale:.2e}")
            if self.on_step is not None:
                self.on_step({"epoch": epoch, "step": step, "global_step": gstep, "loss": loss,
                              "model": parts.model, "optimizer": parts.optimizer})
            now = time.perf_counter()
            if step + 1 < steps and self._checkpoint_due(step, now - t_ckpt):
                self._check_finite(loss_sum, epoch, step)
                snap = dict(running, loss_sum=loss_sum.total,
                            train_time_s=running["train_time_s"] + now - t0,
                            epoch_time_s=running["epoch_time_s"] + now - t0)
                self._checkpoint(epoch, step + 1, snap, aug)
                t_ckpt = time.perf_counter()
            if self.kill_after is not None and gstep + 1 >= self.kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.close()
        return lr_scale

    def _epoch_row(self, epoch: int, lr_scale: float, running: dict[str, Any],
                   loss_sum: RunningLoss, train_time: float, t0: float) -> dict[str, Any]:
        """Evaluate train sample and validation; the epoch's metrics row."""
        parts, dist = self.parts, self.dist
        feed = parts.feed(self.cfg, epoch)
        distributed.broadcast_buffers(parts.model, dist)
        tr_loss, tr_acc = evaluate(feed.evaluated, *feed.train_eval, feed.transform,
                                   parts.eval_batch_size, self.amp, dist)
        va_loss, va_acc = evaluate(feed.evaluated, *feed.val, feed.transform,
                                   parts.eval_batch_size, self.amp, dist)
        seen = dist.sum(running["seen"])  # padded (repeated) samples of uneven shards too
        loss_total = dist.sum(loss_sum.total)
        self.totals["train_time_s"] += train_time
        self.totals["train_images"] += seen
        return {"epoch": epoch + 1, "lr": self.cfg.lr * lr_scale, "train_loss": tr_loss,
                "train_acc": tr_acc, "val_loss": va_loss, "val_acc": va_acc,
                "gap_acc": tr_acc - va_acc, "gap_loss": va_loss - tr_loss,
                "train_loss_running": loss_total / max(1, seen),
                "epoch_time_s": running["epoch_time_s"] + time.perf_counter() - t0,
                "img_per_s": seen / max(train_time, 1e-9),
                "peak_mem_mb": peak_mem_mb(self.device)}

    def _end_epoch(self, row: dict[str, Any]) -> None:
        """Record the row; best.pt when validation improved; last.pt, metrics and curves."""
        self.history.append(row)
        epoch = row["epoch"]
        if row["val_acc"] > self.best["val_acc"]:
            self.best = {"val_acc": row["val_acc"], "epoch": epoch}
            if self.dist.is_main:
                self.outputs.save(self.parts, "best.pt",
                                  {"kind": "best", "epoch": epoch, "row": row})
        self._checkpoint(epoch, 0, ckpt.fresh_running(), torch.Generator())
        self.outputs.epoch_files(self.history)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def _checkpoint_due(self, step: int, since: float) -> bool:
        """Every ``ckpt_steps`` steps, or ``ckpt_minutes`` passed (under DDP every rank must
        agree, so that is asked every 20 steps)."""
        cfg = self.cfg
        if cfg.ckpt_steps and (step + 1) % cfg.ckpt_steps == 0:
            return True
        if not cfg.ckpt_minutes:
            return False
        if self.dist.world_size == 1:
            return since > 60 * cfg.ckpt_minutes
        return step % 20 == 19 and self.dist.sum(float(since > 60 * cfg.ckpt_minutes)) > 0

    def _checkpoint(self, epoch: int, step: int, running: dict[str, Any],
                    aug: torch.Generator) -> None:
        """last.pt: ``epoch`` epochs and ``step`` steps of the next one done.

        Every rank hands its RNG, augmentation and running state to rank 0, which writes; the
        barrier after it means no rank moves on (or reads best.pt) before the files are there.
        """
        # weights are the same on every rank: all stop together
        self.outputs.check_weights(self.parts, epoch, step)
        mine, ranks = ckpt.gather_rank_states(aug, running, self.dist)
        self._tick()
        self.outputs.save_last(self.parts, ckpt.last_extra(
            epoch=epoch, step=step, optimizer=self.parts.optimizer, scaler=self.parts.scaler,
            mine=mine, ranks=ranks, history=self.history, best=self.best,
            totals=self.totals, world_size=self.dist.world_size))

    def _finish(self) -> dict[str, Any]:
        """Test the best-validation checkpoint and write ``summary.json``."""
        parts = self.parts
        best = None
        if (self.run_dir / "best.pt").is_file():
            best = ckpt.read_checkpoint(self.run_dir / "best.pt")
            ckpt.load_weights(parts.model, best)
        feed = parts.feed(self.cfg, self.cfg.epochs - 1)
        if feed.test is None:  # cached head epochs of two-stage: the test split is not cached
            feed = parts.training_feed
        test_x, test_y = feed.test or (parts.data.test_x, parts.data.test_y)
        test_loss, test_acc = evaluate(feed.evaluated, test_x, test_y, feed.transform,
                                       parts.eval_batch_size, self.amp, self.dist)
        if best is not None and ckpt.is_head_only(best) and self.dist.is_main:
            ckpt.save_checkpoint(self.run_dir / "best.pt", parts.model, best["extra"])  # whole
        self._tick()
        summary = run_summary(self.cfg, self.parts, self.history, self.best, self.totals,
                              (test_loss, test_acc), device=self.device,
                              world_size=self.dist.world_size, run_dir=self.run_dir)
        self.outputs.write_summary(summary)
        return summary

    def _check_finite(self, loss_sum: RunningLoss, epoch: int, step: int) -> None:
        if not math.isfinite(loss_sum.total):
            raise self.outputs.nonfinite_loss(epoch, step)

    def _progress(self, initial: int, epoch: int) -> Any:
        """tqdm on a terminal; one line per epoch in a file or pipe."""
        if not (self.cfg.progress and self.dist.is_main):
            return None
        return progress_bar(self.parts.schedule.steps_per_epoch,
                            f"epoch {epoch + 1}/{self.cfg.epochs}", "step", initial=initial)
