"""Fine-tuning harness: train a swapped model and measure how its head generalises.

:func:`train` takes a :class:`TrainConfig` (or a run directory to resume), builds the model with
``surgery.swap_head``, trains it on an in-memory data set (analysis.data, analysis.batches) and
writes a run directory (analysis.rundir). Each epoch records train loss/accuracy measured in eval
mode on a fixed train sample, validation loss/accuracy, their gap, time, img/s and peak memory.

Resume is exact: checkpoints (analysis.checkpoints) hold the model, optimiser, RNG states and the
position inside the epoch, and batch order and augmentation are functions of (seed, epoch), so on CPU a resumed run
ends with the same metrics as an uninterrupted one.

Under ``torchrun`` (analysis.distributed) the same loop runs in every process with the model in
DistributedDataParallel: each rank trains on its own shard of every epoch (EpochSampler's
``rank`` / ``world_size``), evaluation sums are reduced so every sample counts once, and only
rank 0 writes the run directory and shows the progress bar. Checkpoints hold every rank's RNG
and augmentation state, so a run resumed with the same number of processes continues exactly.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from . import checkpoints as ckpt
from . import distributed
from .batches import BatchTransform, EpochSampler
from .data import DataSplits, load_dataset
from .rundir import plot_curves, prepare_run_dir, write_json, write_metrics
from .trainconfig import OPTIMIZERS, REGIMES, TrainConfig, run_name
from .trainstep import (
    DistInfo,
    NonFiniteLossError,
    RunningLoss,
    TrainStep,
    build_model,
    build_optimizer,
    evaluate,
    lr_factor,
    model_costs,
    peak_mem_mb,
    resolve_system,
    set_regime,
)

__all__ = ["TrainConfig", "train", "NonFiniteLossError", "DistInfo", "TrainStep", "REGIMES",
           "OPTIMIZERS", "run_name"]

def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          data: DataSplits | None = None, dist: DistInfo | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) one fine-tuning run and return its summary (also in ``summary.json``).

    ``data`` skips loading when the caller (a study) already holds the splits. ``on_step``
    receives ``{epoch, step, global_step, loss, model, optimizer}`` after every optimiser step
    (a hook may raise to stop the run); ``on_epoch`` receives each epoch's metrics row. Resuming a
    finished run returns its summary. Raises :class:`NonFiniteLossError` when the loss or the
    weights become NaN or inf; ``last.pt`` then still holds the last good state.

    Started by torchrun (``WORLD_SIZE`` > 1) and without ``dist``, it joins the process group
    itself (gloo on CPU, nccl on CUDA, one GPU per ``LOCAL_RANK``) and leaves it at the end.
    """
    state: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        cfg, summary, state = ckpt.load_resume(run_dir)
        if summary is not None:
            return summary
    elif config is None:
        raise ValueError("train() needs a TrainConfig or resume=RUN_DIR")
    else:
        cfg = config
        cfg.check()
    system = resolve_system(cfg)
    owned = dist is None and distributed.launched()
    if dist is None:
        dist, system["device"] = distributed.setup(system["device"])
    try:
        if resume is None:
            # every rank checks before rank 0 clears or writes anything
            run_dir = prepare_run_dir(Path(cfg.out) / (cfg.name or run_name(cfg)), cfg.overwrite,
                                      write=False)
            dist.wait()
            if dist.is_main:
                prepare_run_dir(run_dir, cfg.overwrite)
        dist.wait()
        return _Trainer(cfg, run_dir, state, data, dist, system, on_step, on_epoch).fit()
    finally:
        if owned:
            distributed.shutdown()


class _Trainer:
    """One run: builds everything from the config (and a checkpoint), trains, writes the files."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, state: dict[str, Any] | None,
                 data: DataSplits | None, dist: DistInfo, system: dict[str, Any],
                 on_step: Callable[[dict[str, Any]], None] | None,
                 on_epoch: Callable[[dict[str, Any]], None] | None):
        self.cfg, self.run_dir, self.dist = cfg, run_dir, dist
        self.on_step, self.on_epoch = on_step, on_epoch
        self.device, self.amp, cl = system["device"], system["amp_dtype"], system["channels_last"]
        if data is None:
            data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                                train_size=cfg.train_size, val_size=cfg.val_size, seed=cfg.seed,
                                **cfg.data_options)
        self.data = data
        self.img_size = cfg.img_size or data.image_size[0]
        torch.manual_seed(cfg.seed)
        model, in_chans, mean, std = build_model(cfg, data, self.img_size, fresh=state is None)
        if cfg.sync_bn and dist.world_size > 1:
            if self.device.type != "cuda":
                raise ValueError(f"--sync-bn needs CUDA (torch's SyncBatchNorm has no "
                                 f"{self.device.type} kernels); drop it on {self.device.type}")
            distributed.convert_sync_bn(model)
        model.to(self.device)
        if cl:
            model.to(memory_format=torch.channels_last)
        if state is not None:
            model.load_state_dict(state["state_dict"])
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        self.ex: dict[str, Any] = state["extra"] if state is not None else {}
        self.epoch0, self.step0 = int(self.ex.get("epoch", 0)), int(self.ex.get("step", 0))
        self.ddp = self._wrap()
        self.scaler = (torch.amp.GradScaler(self.device.type) if self.amp == torch.float16
                       else None)
        self.transform = BatchTransform(self.img_size, in_chans, mean, std, device=self.device,
                                        augment=cfg.augment, channels_last=cl)
        self.step_fn = TrainStep(self.ddp, self.optimizer, self.transform,
                                 label_smoothing=cfg.label_smoothing, clip_grad=cfg.clip_grad,
                                 amp_dtype=self.amp, scaler=self.scaler)
        n = len(data.train_y)
        self.sampler = EpochSampler(n, cfg.batch_size, seed=cfg.seed, drop_last=n > cfg.batch_size,
                                    rank=dist.rank, world_size=dist.world_size)
        self.steps = len(self.sampler)
        self.total_steps = cfg.epochs * self.steps
        self.warmup = int(round(cfg.warmup_epochs * self.steps))
        # train metrics come from a fixed sample of the training set, evaluated like validation
        n_eval = min(n, cfg.train_eval_size or max(len(data.val_y), 1))
        g = torch.Generator().manual_seed(cfg.seed + 2)
        idx = torch.sort(torch.randperm(n, generator=g)[:n_eval]).values
        self.train_eval = (data.train_x[idx], data.train_y[idx])
        self.eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
        self.train_x, self.train_y = data.train_x, data.train_y
        if self.device.type == "cuda" and self.train_x.numel() < 2**31:  # small data: on device
            self.train_x, self.train_y = self.train_x.to(self.device), self.train_y.to(self.device)
        self.costs = model_costs(model, (in_chans, self.img_size, self.img_size))
        # what was measured before an interruption
        self.history, self.best, self.totals = ckpt.resumed_progress(self.ex)
        if state is not None:
            ckpt.restore_training(self.ex, self.optimizer, self.scaler)
            ckpt.restore_rank_state(self.ex, dist, seed=cfg.seed, epoch0=self.epoch0,
                                    step0=self.step0, path=run_dir / "last.pt")
        elif dist.rank > 0:  # different dropout masks per rank (rank 0 draws as one process does)
            ckpt.seed_rank(cfg.seed, dist.rank)
        if state is None and dist.is_main:
            write_json(run_dir / "config.json", {
                "config": asdict(cfg),
                "resolved": {"device": str(self.device), "amp": str(self.amp),
                             "channels_last": cl, "in_chans": in_chans, "img_size": self.img_size,
                             "num_classes": data.num_classes, "classes": data.classes,
                             "mean": list(mean), "std": list(std), "data": data.info,
                             "data_source": data.source, "steps_per_epoch": self.steps,
                             "world_size": dist.world_size, "sync_bn": cfg.sync_bn,
                             "recipe": model.recipe},
                "versions": _versions()})
        self._tick_at = time.perf_counter()

    def _wrap(self) -> torch.nn.Module:
        """DDP around the model, registering the parameters the regime will ever train.

        A linear probe never trains the backbone: freeze it first and DDP leaves it out. Two-stage
        still ahead of its head epochs unfreezes it later: everything registered, and
        ``find_unused_parameters`` for the head-only epochs.
        """
        if self.dist.world_size == 1:
            return self.model
        cfg = self.cfg
        if cfg.regime == "linear-probe":
            set_regime(self.model, cfg, self.epoch0)
        else:
            for p in self.model.parameters():
                p.requires_grad_(True)
        find_unused = cfg.regime == "two-stage" and self.epoch0 < cfg.head_epochs
        return distributed.wrap(self.model, self.dist, self.device, find_unused=find_unused)

    def _tick(self) -> None:
        """Add the wall time since the last tick to ``time_s`` (kept across resumed segments)."""
        now = time.perf_counter()
        self.totals["time_s"] += now - self._tick_at
        self._tick_at = now

    def fit(self) -> dict[str, Any]:
        self._tick_at = time.perf_counter()
        for epoch in range(self.epoch0, self.cfg.epochs):
            row = self._epoch(epoch)
            self._end_epoch(row)
        return self._finish()

    def _epoch(self, epoch: int) -> dict[str, Any]:
        """Train one epoch (from the checkpointed step when resuming); return its metrics row."""
        cfg, steps = self.cfg, self.steps
        set_regime(self.model, cfg, epoch)
        aug = ckpt.epoch_aug_rng(cfg.seed, epoch, self.dist.rank)
        running = ckpt.fresh_running()
        first = self.step0 if epoch == self.epoch0 else 0
        if first:
            aug.set_state(self.ex["aug_rng"])
            running.update(self.ex["running"])
        loss_sum = RunningLoss(self.device, running["loss_sum"])
        bar = self._progress(first, epoch)
        t0 = t_ckpt = time.perf_counter()
        f = 1.0
        for step, idx in enumerate(self.sampler.batches(epoch, first), start=first):
            gstep = epoch * steps + step
            f = lr_factor(gstep, self.total_steps, self.warmup, cfg.min_lr / cfg.lr)
            for g in self.optimizer.param_groups:
                g["lr"] = cfg.lr * g["lr_scale"] * f
            idx_d = idx.to(self.train_x.device)
            loss = self.step_fn(self.train_x[idx_d], self.train_y[idx_d], aug)
            loss_sum.add(loss, len(idx))
            running["seen"] += len(idx)
            if loss_sum.free_to_read or step % 20 == 0 or step == steps - 1:
                self._check_finite(loss_sum, epoch, step)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{cfg.lr * f:.2e}")
            if self.on_step is not None:
                self.on_step({"epoch": epoch, "step": step, "global_step": gstep, "loss": loss,
                              "model": self.model, "optimizer": self.optimizer})
            now = time.perf_counter()
            if step + 1 < steps and ((cfg.ckpt_steps and (step + 1) % cfg.ckpt_steps == 0) or
                                     self._time_for_checkpoint(step, now - t_ckpt)):
                self._check_finite(loss_sum, epoch, step)
                snap = dict(running, loss_sum=loss_sum.total,
                            train_time_s=running["train_time_s"] + now - t0,
                            epoch_time_s=running["epoch_time_s"] + now - t0)
                self._checkpoint(epoch, step + 1, snap, aug)
                t_ckpt = time.perf_counter()
            if cfg.kill_after_steps is not None and gstep + 1 >= cfg.kill_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.close()
        train_time = running["train_time_s"] + time.perf_counter() - t0
        distributed.broadcast_buffers(self.model, self.dist)
        tr_loss, tr_acc = evaluate(self.model, *self.train_eval, self.transform, self.eval_bs,
                                   self.amp, self.dist)
        va_loss, va_acc = evaluate(self.model, self.data.val_x, self.data.val_y, self.transform,
                                   self.eval_bs, self.amp, self.dist)
        seen = self.dist.sum(running["seen"])  # padded (repeated) samples of uneven shards too
        loss_total = self.dist.sum(loss_sum.total)
        self.totals["train_time_s"] += train_time
        self.totals["train_images"] += seen
        return {"epoch": epoch + 1, "lr": cfg.lr * f, "train_loss": tr_loss, "train_acc": tr_acc,
                "val_loss": va_loss, "val_acc": va_acc, "gap_acc": tr_acc - va_acc,
                "gap_loss": va_loss - tr_loss,
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
                ckpt.save_checkpoint(self.run_dir / "best.pt", self.model,
                                     {"kind": "best", "epoch": epoch, "row": row})
        self._checkpoint(epoch, 0, ckpt.fresh_running(), torch.Generator())
        if self.dist.is_main:
            write_metrics(self.run_dir, self.history)
            plot_curves(self.run_dir / "curves.png", self.history,
                        f"{self.cfg.model} / {self.cfg.head} / {self.cfg.dataset}")
        if self.on_epoch is not None:
            self.on_epoch(row)

    def _time_for_checkpoint(self, step: int, since: float) -> bool:
        """``ckpt_minutes`` passed; under DDP every rank must agree, so ask every 20 steps."""
        minutes = self.cfg.ckpt_minutes
        if not minutes:
            return False
        if self.dist.world_size == 1:
            return since > 60 * minutes
        return step % 20 == 19 and self.dist.sum(float(since > 60 * minutes)) > 0

    def _checkpoint(self, epoch: int, step: int, running: dict[str, Any],
                    aug: torch.Generator) -> None:
        """last.pt: ``epoch`` epochs and ``step`` steps of the next one done.

        Every rank hands its RNG, augmentation and running state to rank 0, which writes; the
        barrier after it means no rank moves on (or reads best.pt) before the files are there.
        """
        self._check_weights(epoch, step)  # weights are the same on every rank: all stop together
        mine, ranks = ckpt.gather_rank_states(aug, running, self.dist)
        self._tick()
        if self.dist.is_main:
            ckpt.save_checkpoint(self.run_dir / "last.pt", self.model, ckpt.last_extra(
                epoch=epoch, step=step, optimizer=self.optimizer, scaler=self.scaler, mine=mine,
                ranks=ranks, history=self.history, best=self.best, totals=self.totals,
                world_size=self.dist.world_size))
        self.dist.wait()

    def _finish(self) -> dict[str, Any]:
        """Test the best-validation checkpoint and write ``summary.json``."""
        cfg, data, history = self.cfg, self.data, self.history
        if (self.run_dir / "best.pt").is_file():
            best = ckpt.read_checkpoint(self.run_dir / "best.pt")
            self.model.load_state_dict(best["state_dict"])
        te_loss, te_acc = evaluate(self.model, data.test_x, data.test_y, self.transform,
                                   self.eval_bs, self.amp, self.dist)
        self._tick()
        b = history[self.best["epoch"] - 1] if self.best.get("epoch") else history[-1]
        last = history[-1]
        summary = {
            "model": cfg.model, "head": cfg.head, "hidden": list(cfg.hidden),
            "dropout": cfg.dropout, "dataset": cfg.dataset, "regime": cfg.regime,
            "train_size": len(data.train_y), "img_size": self.img_size, "seed": cfg.seed,
            "epochs": len(history), "test_acc": te_acc, "test_loss": te_loss,
            "best_val_acc": self.best["val_acc"], "best_epoch": self.best["epoch"],
            # generalisation of the checkpoint the test accuracy comes from, then of the last
            "train_acc": b["train_acc"], "val_acc": b["val_acc"], "gap_acc": b["gap_acc"],
            "gap_loss": b["gap_loss"], "train_loss": b["train_loss"], "val_loss": b["val_loss"],
            "final_train_acc": last["train_acc"], "final_val_acc": last["val_acc"],
            "final_gap_acc": last["gap_acc"], "final_gap_loss": last["gap_loss"],
            **self.costs,
            "time_s": self.totals["time_s"],  # wall time of training, evaluation and checkpoints
            "train_time_s": self.totals["train_time_s"],
            "epoch_time_s": sum(r["epoch_time_s"] for r in history) / len(history),
            "img_per_s": self.totals["train_images"] / max(self.totals["train_time_s"], 1e-9),
            "peak_mem_mb": max(r["peak_mem_mb"] for r in history),
            "device": str(self.device), "world_size": self.dist.world_size,
            "run_dir": str(self.run_dir),
        }
        if self.dist.is_main:
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def _check_finite(self, loss_sum: RunningLoss, epoch: int, step: int) -> None:
        if not math.isfinite(loss_sum.total):
            last = self.run_dir / "last.pt"
            keep = (f"the last good checkpoint is {last}" if last.exists()
                    else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"training loss became NaN or inf at epoch {epoch + 1}, step {step + 1}; stopped "
                f"({keep}); try a lower --lr, --clip-grad 1.0, or --amp off")

    def _check_weights(self, epoch: int, step: int) -> None:
        """Never checkpoint NaN/inf weights: the previous ``last.pt`` stays the last good one."""
        flags = [torch.isfinite(p).all() for p in self.model.parameters()]
        if flags and not bool(torch.stack(flags).all()):
            raise NonFiniteLossError(
                f"weights became NaN or inf (after {epoch} epochs and {step} steps); stopped "
                f"without overwriting {self.run_dir / 'last.pt'} (the last good checkpoint); try "
                "a lower --lr, --clip-grad 1.0, or --amp off")

    def _progress(self, initial: int, epoch: int) -> Any:
        if not (self.cfg.progress and self.dist.is_main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.steps, initial=initial, desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
                    unit="step", leave=False, dynamic_ncols=True)


def _versions() -> dict[str, str]:
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__}

