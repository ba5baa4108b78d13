"""Fine-tuning harness: train a swapped model and measure how its head generalises.

:func:`train` takes a :class:`TrainConfig` (or a run directory to resume), builds the model with
``surgery.swap_head``, trains it on an in-memory data set (analysis.data, analysis.batches) and
writes a run directory (analysis.rundir). Each epoch records train loss/accuracy measured in eval
mode on a fixed train sample, validation loss/accuracy, their gap, time, img/s and peak memory.

Resume is exact: checkpoints hold the model, optimiser, RNG states and the position inside the
epoch, and batch order and augmentation are functions of (seed, epoch), so on CPU a resumed run
ends with the same metrics as an uninterrupted one. The loop is written for one process; DDP
hooks are the sampler's ``rank`` / ``world_size``, :class:`DistInfo` (reductions, rank-0 writes).
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batches import BatchTransform, EpochSampler
from .data import DataSplits, load_dataset
from .rundir import plot_curves, read_json, write_json, write_metrics
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

REGIMES = ("full", "linear-probe", "two-stage")
OPTIMIZERS = ("adamw", "sgd")
_RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
              "curves.png")


@dataclass
class TrainConfig:
    """Everything a run needs; stored in ``config.json`` so ``--resume`` can rebuild it."""

    # model (surgery.swap_head)
    model: str = "resnet18"
    head: str = "gap"
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0
    pretrained: bool = False
    checkpoint: str | None = None     # local backbone weights
    in_chans: int | None = None       # None: the data's channels from scratch, 3 when pretrained
    # data (analysis.data)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = None     # stratified subset of the training pool; None: all
    val_size: int | float = 0.1       # held out from train: a count, or a fraction if < 1
    train_eval_size: int | None = None  # fixed train sample for eval-mode metrics; None: as val
    img_size: int | None = None       # None: the data's own size
    augment: bool = True              # random crop (pad img_size/8) and horizontal flip
    data_options: dict[str, Any] = field(default_factory=dict)
    # optimisation
    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int | None = None  # None: 2 x batch_size
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9             # SGD only
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    clip_grad: float | None = None    # max global L2 norm of the gradients
    regime: str = "full"
    head_epochs: int = 1              # two-stage: epochs of head-only training first
    backbone_lr_scale: float = 0.1    # two-stage: backbone lr = lr * this in stage two
    # system
    device: str = "auto"
    amp: str = "auto"                 # auto: on for CUDA (bf16 if supported, else fp16)
    channels_last: bool | None = None  # None: on for CUDA
    seed: int = 0
    # run directory
    out: str = "runs"
    name: str | None = None
    overwrite: bool = False
    ckpt_steps: int = 0               # also checkpoint every N steps inside an epoch (0: off)
    ckpt_minutes: float = 5.0         # ... and at least every this many minutes (0: off)
    progress: bool = True
    kill_after_steps: int | None = None  # testing: SIGKILL this process after N steps

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, naming the choices."""
        if self.regime not in REGIMES:
            raise ValueError(f"unknown regime {self.regime!r}; choose from: {', '.join(REGIMES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from: "
                             f"{', '.join(OPTIMIZERS)}")
        if self.amp not in ("auto", "on", "off"):
            raise ValueError(f"amp must be auto, on or off, got {self.amp!r}")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.img_size is not None and self.img_size < 1:
            raise ValueError(f"img-size must be a positive number of pixels, got {self.img_size}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        self._check_names()

    def _check_names(self) -> None:
        """Model and head names, before any data is read."""
        import timm

        import surgery

        if self.head not in surgery.HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose from: {', '.join(surgery.HEADS)}")
        if not timm.is_model(self.model.split(".", 1)[0]):
            close = ", ".join(surgery.closest_model_names(self.model.split(".", 1)[0])) or "none"
            raise ValueError(f"unknown model {self.model!r}; closest: {close}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if "hidden" in d:
            d["hidden"] = tuple(d["hidden"])
        return cls(**d)


def run_name(cfg: TrainConfig) -> str:
    """Default run directory name: model, head, data, subset size, regime and seed."""
    parts = [cfg.model, cfg.head]
    if cfg.hidden:
        parts.append("h" + "x".join(map(str, cfg.hidden)))
    if cfg.dropout:
        parts.append(f"d{cfg.dropout:g}")
    parts += [cfg.dataset, f"n{cfg.train_size or 'all'}"]
    if cfg.regime != "full":
        parts.append(cfg.regime)
    parts.append(f"s{cfg.seed}")
    return "-".join(parts).replace("/", "_")


def _prepare_dir(cfg: TrainConfig, dist: DistInfo) -> Path:
    run_dir = Path(cfg.out) / (cfg.name or run_name(cfg))
    taken = [f for f in _RUN_FILES if (run_dir / f).exists()]
    if taken and not cfg.overwrite:
        raise ValueError(f"run directory {str(run_dir)!r} already holds a run ({', '.join(taken)}); "
                         f"continue it with --resume {run_dir}, start over with --overwrite, or "
                         "choose another --name")
    if dist.is_main:
        for f in taken:
            (run_dir / f).unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def _save_ckpt(path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    import surgery

    surgery.save(model, path, extra=extra)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          data: DataSplits | None = None, dist: DistInfo | None = None,
          on_step: Callable[[dict[str, Any]], None] | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run (or resume) one fine-tuning run and return its summary (also in ``summary.json``).

    ``data`` skips loading when the caller (a study) already holds the splits; ``on_step``
    receives ``{epoch, step, global_step, loss, model, optimizer}`` after every optimiser step (a hook may raise to
    stop the run), ``on_epoch`` each epoch's metrics row. Raises :class:`NonFiniteLossError` when
    the loss becomes NaN or inf; ``last.pt`` then still holds the last good state.
    """
    dist = dist or DistInfo()
    state: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume {str(run_dir)!r}: no config.json there (is it "
                                    "a run directory written by tools/finetune.py?)")
        cfg = TrainConfig.from_dict(read_json(run_dir / "config.json")["config"])
        cfg.kill_after_steps = None  # a testing switch of the interrupted invocation only
        if (run_dir / "summary.json").is_file():
            return dict(read_json(run_dir / "summary.json"))
        if (run_dir / "last.pt").is_file():
            from surgery.serialize import read

            state = read(run_dir / "last.pt")
    elif config is None:
        raise ValueError("train() needs a TrainConfig or resume=RUN_DIR")
    else:
        cfg = config
        cfg.check()
        run_dir = _prepare_dir(cfg, dist)
    t_start = time.perf_counter()
    system = resolve_system(cfg)
    device = system["device"]
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                            train_size=cfg.train_size, val_size=cfg.val_size, seed=cfg.seed,
                            **cfg.data_options)
    img_size = cfg.img_size or data.image_size[0]
    torch.manual_seed(cfg.seed)
    model, in_chans, mean, std = build_model(cfg, data, img_size, fresh=state is None)
    model.to(device)
    if system["channels_last"]:
        model.to(memory_format=torch.channels_last)
    if state is not None:
        model.load_state_dict(state["state_dict"])
    optimizer = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(device.type) if system["amp_dtype"] == torch.float16 else None
    transform = BatchTransform(img_size, in_chans, mean, std, device=device, augment=cfg.augment,
                               channels_last=system["channels_last"])
    step_fn = TrainStep(model, optimizer, transform, label_smoothing=cfg.label_smoothing,
                        clip_grad=cfg.clip_grad, amp_dtype=system["amp_dtype"], scaler=scaler)
    sampler = EpochSampler(len(data.train_y), cfg.batch_size, seed=cfg.seed,
                           drop_last=len(data.train_y) > cfg.batch_size,
                           rank=dist.rank, world_size=dist.world_size)
    steps = len(sampler)
    total_steps, warmup = cfg.epochs * steps, int(round(cfg.warmup_epochs * steps))
    n_eval = min(len(data.train_y), cfg.train_eval_size or max(len(data.val_y), 1))
    g_eval = torch.Generator().manual_seed(cfg.seed + 2)
    eval_idx = torch.sort(torch.randperm(len(data.train_y), generator=g_eval)[:n_eval]).values
    train_eval = (data.train_x[eval_idx], data.train_y[eval_idx])
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size
    train_x, train_y = data.train_x, data.train_y
    if device.type == "cuda" and train_x.numel() < 2**31:  # small data lives on the device
        train_x, train_y = train_x.to(device), train_y.to(device)
    costs = model_costs(model, (in_chans, img_size, img_size))

    # where to start, and what was measured before an interruption
    ex: dict[str, Any] = state["extra"] if state is not None else {}
    epoch0, step0 = int(ex.get("epoch", 0)), int(ex.get("step", 0))
    history: list[dict[str, Any]] = list(ex.get("history", []))
    best = dict(ex.get("best", {"val_acc": -1.0, "epoch": 0}))
    acc = dict(ex.get("totals", {"time_s": 0.0, "train_time_s": 0.0, "train_images": 0}))
    if state is not None:
        optimizer.load_state_dict(ex["optimizer"])
        if scaler is not None and ex.get("scaler"):
            scaler.load_state_dict(ex["scaler"])
        _set_rng_state(ex["rng"])
    elif dist.is_main:
        write_json(run_dir / "config.json", {
            "config": asdict(cfg),
            "resolved": {"device": str(device), "amp": str(system["amp_dtype"]),
                         "channels_last": system["channels_last"], "in_chans": in_chans,
                         "img_size": img_size, "num_classes": data.num_classes,
                         "classes": data.classes, "mean": list(mean), "std": list(std),
                         "data": data.info, "data_source": data.source,
                         "steps_per_epoch": steps, "recipe": model.recipe},
            "versions": _versions()})

    def checkpoint(epoch: int, step: int, running: dict[str, float], aug: torch.Generator,
                   t_seg: float) -> None:
        if not dist.is_main:
            return
        _check_weights(model, epoch, step, run_dir)
        totals = dict(acc, time_s=acc["time_s"] + time.perf_counter() - t_seg)
        _save_ckpt(run_dir / "last.pt", model, {
            "kind": "last", "epoch": epoch, "step": step, "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "rng": _rng_state(),
            "aug_rng": aug.get_state(), "running": running, "history": history, "best": best,
            "totals": totals})

    for epoch in range(epoch0, cfg.epochs):
        set_regime(model, cfg, epoch)
        aug = torch.Generator().manual_seed(cfg.seed * 7919 + epoch + 17)
        running = {"loss_sum": 0.0, "seen": 0, "train_time_s": 0.0}
        if epoch == epoch0 and step0 > 0:
            aug.set_state(ex["aug_rng"])
            running = dict(ex["running"])
        t_epoch = t_seg = time.perf_counter()
        t_ckpt = time.perf_counter()
        loss_sum = RunningLoss(device, running["loss_sum"])
        bar = _progress(cfg, dist, steps, step0 if epoch == epoch0 else 0, epoch)
        first = step0 if epoch == epoch0 else 0
        t_train = time.perf_counter()
        for step, idx in enumerate(sampler.batches(epoch, first), start=first):
            gstep = epoch * steps + step
            f = lr_factor(gstep, total_steps, warmup, cfg.min_lr / cfg.lr)
            for g in optimizer.param_groups:
                g["lr"] = cfg.lr * g["lr_scale"] * f
            idx_d = idx.to(train_x.device)
            loss = step_fn(train_x[idx_d], train_y[idx_d], aug)
            loss_sum.add(loss, len(idx))
            running["seen"] += len(idx)
            if loss_sum.free_to_read or step % 20 == 0 or step == steps - 1:
                _check_finite(loss_sum, epoch, step, run_dir)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{cfg.lr * f:.2e}")
            if on_step is not None:
                on_step({"epoch": epoch, "step": step, "global_step": gstep, "loss": loss,
                         "model": model, "optimizer": optimizer})
            mid = step + 1 < steps and (
                (cfg.ckpt_steps and (step + 1) % cfg.ckpt_steps == 0)
                or (cfg.ckpt_minutes and time.perf_counter() - t_ckpt > 60 * cfg.ckpt_minutes))
            if mid:
                _check_finite(loss_sum, epoch, step, run_dir)
                now = time.perf_counter()
                snap = dict(running, loss_sum=loss_sum.total,
                            train_time_s=running["train_time_s"] + now - t_train)
                checkpoint(epoch, step + 1, snap, aug, t_seg)
                t_ckpt = time.perf_counter()
            if cfg.kill_after_steps is not None and gstep + 1 >= cfg.kill_after_steps:
                os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.close()
        running["loss_sum"] = loss_sum.total
        running["train_time_s"] += time.perf_counter() - t_train
        step0 = 0
        tr_loss, tr_acc = evaluate(model, *train_eval, transform, eval_bs, system["amp_dtype"], dist)
        va_loss, va_acc = evaluate(model, data.val_x, data.val_y, transform, eval_bs,
                                   system["amp_dtype"], dist)
        seen_all = dist.sum(running["seen"])
        row = {"epoch": epoch + 1, "lr": cfg.lr * f, "train_loss": tr_loss, "train_acc": tr_acc,
               "val_loss": va_loss, "val_acc": va_acc, "gap_acc": tr_acc - va_acc,
               "gap_loss": va_loss - tr_loss,
               "train_loss_running": running["loss_sum"] / max(1, running["seen"]),
               "epoch_time_s": time.perf_counter() - t_epoch,
               "img_per_s": seen_all / max(running["train_time_s"], 1e-9),
               "peak_mem_mb": peak_mem_mb(device)}
        history.append(row)
        acc["train_time_s"] += running["train_time_s"]
        acc["train_images"] += seen_all
        acc["time_s"] += time.perf_counter() - t_seg
        if va_acc > best["val_acc"] and dist.is_main:
            best = {"val_acc": va_acc, "epoch": epoch + 1}
            _save_ckpt(run_dir / "best.pt", model, {"kind": "best", "epoch": epoch + 1, "row": row})
        t_seg = time.perf_counter()
        checkpoint(epoch + 1, 0, {"loss_sum": 0.0, "seen": 0, "train_time_s": 0.0}, aug, t_seg)
        if dist.is_main:
            write_metrics(run_dir, history)
            plot_curves(run_dir / "curves.png", history, f"{cfg.model} / {cfg.head} / {cfg.dataset}")
        if on_epoch is not None:
            on_epoch(row)
        acc["time_s"] += time.perf_counter() - t_seg

    return _finish(cfg, run_dir, model, data, transform, eval_bs, system, dist, history, best,
                   acc, costs, t_start, device)


def _finish(cfg: TrainConfig, run_dir: Path, model: nn.Module, data: DataSplits,
            transform: BatchTransform, eval_bs: int, system: dict[str, Any], dist: DistInfo,
            history: list[dict[str, Any]], best: dict[str, Any], acc: dict[str, Any],
            costs: dict[str, Any], t_start: float, device: torch.device) -> dict[str, Any]:
    """Test the best-validation checkpoint and write ``summary.json``."""
    from surgery.serialize import read

    if (run_dir / "best.pt").is_file():
        model.load_state_dict(read(run_dir / "best.pt")["state_dict"])
    te_loss, te_acc = evaluate(model, data.test_x, data.test_y, transform, eval_bs,
                               system["amp_dtype"], dist)
    b = history[best["epoch"] - 1] if best.get("epoch") else history[-1]
    last = history[-1]
    summary = {
        "model": cfg.model, "head": cfg.head, "hidden": list(cfg.hidden), "dropout": cfg.dropout,
        "dataset": cfg.dataset, "regime": cfg.regime, "train_size": len(data.train_y),
        "img_size": cfg.img_size or data.image_size[0], "seed": cfg.seed, "epochs": len(history),
        "test_acc": te_acc, "test_loss": te_loss, "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        # the generalisation figures of the checkpoint the test accuracy comes from
        "train_acc": b["train_acc"], "val_acc": b["val_acc"], "gap_acc": b["gap_acc"],
        "gap_loss": b["gap_loss"], "train_loss": b["train_loss"], "val_loss": b["val_loss"],
        "final_train_acc": last["train_acc"], "final_val_acc": last["val_acc"],
        "final_gap_acc": last["gap_acc"], "final_gap_loss": last["gap_loss"],
        **costs,
        "time_s": acc["time_s"],  # wall time of the epochs (training + evaluation), all segments
        "train_time_s": acc["train_time_s"],
        "epoch_time_s": sum(r["epoch_time_s"] for r in history) / len(history),
        "img_per_s": acc["train_images"] / max(acc["train_time_s"], 1e-9),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in history),
        "device": str(device), "run_dir": str(run_dir),
    }
    if dist.is_main:
        write_json(run_dir / "summary.json", summary)
    return summary


def _check_finite(loss_sum: RunningLoss, epoch: int, step: int, run_dir: Path) -> None:
    if not math.isfinite(loss_sum.total):
        last = run_dir / "last.pt"
        keep = (f"the last good checkpoint is {last}" if last.exists()
                else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"training loss became NaN or inf at epoch {epoch + 1}, step {step + 1}; stopped "
            f"({keep}); try a lower --lr, --clip-grad 1.0, or --amp off")


def _check_weights(model: nn.Module, epoch: int, step: int, run_dir: Path) -> None:
    """Never checkpoint NaN/inf weights: the previous ``last.pt`` stays the last good one."""
    flags = [torch.isfinite(p).all() for p in model.parameters()]
    if flags and not bool(torch.stack(flags).all()):
        raise NonFiniteLossError(
            f"weights became NaN or inf (after {epoch} epochs and {step} steps); stopped "
            f"without overwriting {run_dir / 'last.pt'} (the last good checkpoint); try a lower "
            "--lr, --clip-grad 1.0, or --amp off")


def _progress(cfg: TrainConfig, dist: DistInfo, steps: int, initial: int, epoch: int) -> Any:
    if not (cfg.progress and dist.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, initial=initial, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step", leave=False, dynamic_ncols=True)


def _versions() -> dict[str, str]:
    import timm

    return {"torch": torch.__version__, "timm": timm.__version__}
