"""The pieces of one fine-tuning run, each built by its own small function from the config.

:func:`assemble_run` puts them together for the loop (analysis.training.loop): the data, the
model on its device (sync-BN, memory format, resumed weights), the optimiser and AMP scaler, the
model as the step sees it (DDP or itself), the batch transform and the step, the epoch sampler
and the schedule, the fixed train sample that train metrics are measured on, and the costs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from surgery import HeadSwapped

from ..data import BatchTransform, DataSplits, EpochSampler, ImageArray, Images, take, to_device
from . import distributed
from .config import TrainConfig, load_run_data
from .distributed import DistInfo
from .model import build_model, build_optimizer, model_costs, set_regime
from .step import TrainStep

__all__ = ["RunParts", "Schedule", "assemble_run", "run_config_record"]


@dataclass(frozen=True)
class Schedule:
    """Optimiser steps per epoch, in the whole run, and of linear warm-up."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


@dataclass
class RunParts:
    """Everything one run trains with, built once from its config (and a checkpoint)."""

    data: DataSplits
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    model: HeadSwapped        # the swapped model itself (checkpoints, evaluation)
    trained: nn.Module        # what the step calls: the model, or DDP around it
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    transform: BatchTransform
    step: TrainStep
    sampler: EpochSampler
    schedule: Schedule
    train_x: Images           # the training images: on the GPU when they fit, else on the host
    train_y: torch.Tensor
    train_eval: tuple[Images, torch.Tensor]  # fixed sample for eval-mode train metrics
    eval_batch_size: int
    costs: dict[str, Any]


def _place_model(model: HeadSwapped, cfg: TrainConfig, dist: DistInfo, device: torch.device,
                 channels_last: bool, state: dict[str, Any] | None) -> HeadSwapped:
    """Sync-BN under DDP, the device and memory format, and resumed weights."""
    if cfg.sync_bn and dist.world_size > 1:
        if device.type != "cuda":
            raise ValueError(f"--sync-bn needs CUDA (torch's SyncBatchNorm has no "
                             f"{device.type} kernels); drop it on {device.type}")
        distributed.convert_sync_bn(model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if state is not None:
        model.load_state_dict(state["state_dict"])
    return model


def _wrap_for_regime(model: HeadSwapped, cfg: TrainConfig, dist: DistInfo, device: torch.device,
                     first_epoch: int) -> nn.Module:
    """DDP around the model, registering the parameters the regime will ever train.

    A linear probe never trains the backbone: freeze it first and DDP leaves it out. Two-stage
    still ahead of its head epochs unfreezes it later: everything registered, and
    ``find_unused_parameters`` for the head-only epochs.
    """
    if dist.world_size == 1:
        return model
    if cfg.regime == "linear-probe":
        set_regime(model, cfg, first_epoch)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    find_unused = cfg.regime == "two-stage" and first_epoch < cfg.head_epochs
    return distributed.wrap(model, dist, device, find_unused=find_unused)


def _schedule(cfg: TrainConfig, sampler: EpochSampler) -> Schedule:
    steps = len(sampler)
    return Schedule(steps, cfg.epochs * steps, int(round(cfg.warmup_epochs * steps)))


def _train_eval_sample(data: DataSplits, cfg: TrainConfig) -> tuple[Images, torch.Tensor]:
    """A fixed sample of the training set (as large as validation), evaluated like validation
    (a selection of rows: images on disk stay there)."""
    n = len(data.train_y)
    n_eval = min(n, cfg.train_eval_size or max(len(data.val_y), 1))
    g = torch.Generator().manual_seed(cfg.seed + 2)
    idx = torch.sort(torch.randperm(n, generator=g)[:n_eval]).values
    return take(data.train_x, idx), data.train_y[idx]


def _training_tensors(data: DataSplits, device: torch.device) -> tuple[Images, torch.Tensor]:
    """The training images and labels, moved to the GPU when they are small enough (images on
    disk are copied a chunk at a time); on the CPU they stay where they are."""
    x = data.train_x
    size = x.nbytes if isinstance(x, ImageArray) else x.numel()
    if device.type == "cuda" and size < 2**31:
        return to_device(x, device), data.train_y.to(device)
    return x, data.train_y


def assemble_run(cfg: TrainConfig, state: dict[str, Any] | None, data: DataSplits | None,
                 dist: DistInfo, system: dict[str, Any], first_epoch: int) -> RunParts:
    """Build every piece of a run; ``state`` is the ``last.pt`` being resumed (or None)."""
    device, amp, channels_last = system["device"], system["amp_dtype"], system["channels_last"]
    data = data if data is not None else load_run_data(cfg)
    img_size = cfg.img_size or data.image_size[0]
    torch.manual_seed(cfg.seed)
    model, in_chans, mean, std = build_model(cfg, data, img_size, fresh=state is None)
    model = _place_model(model, cfg, dist, device, channels_last, state)
    optimizer = build_optimizer(model, cfg)
    trained = _wrap_for_regime(model, cfg, dist, device, first_epoch)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    transform = BatchTransform(img_size, in_chans, mean, std, device=device,
                               augment=cfg.augment, channels_last=channels_last)
    step = TrainStep(trained, optimizer, transform, label_smoothing=cfg.label_smoothing,
                     clip_grad=cfg.clip_grad, amp_dtype=amp, scaler=scaler)
    n = len(data.train_y)
    sampler = EpochSampler(n, cfg.batch_size, seed=cfg.seed, drop_last=n > cfg.batch_size,
                           rank=dist.rank, world_size=dist.world_size)
    train_x, train_y = _training_tensors(data, device)
    return RunParts(
        data=data, img_size=img_size, in_chans=in_chans, mean=mean, std=std, model=model,
        trained=trained, optimizer=optimizer, scaler=scaler, transform=transform, step=step,
        sampler=sampler, schedule=_schedule(cfg, sampler), train_x=train_x, train_y=train_y,
        train_eval=_train_eval_sample(data, cfg),
        eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        costs=model_costs(model, (in_chans, img_size, img_size)))


def run_config_record(cfg: TrainConfig, parts: RunParts, system: dict[str, Any],
                      dist: DistInfo) -> dict[str, Any]:
    """What ``config.json`` holds: the config, what ``auto`` resolved to, and the versions."""
    import timm

    data = parts.data
    return {
        "config": asdict(cfg),
        "resolved": {"device": str(system["device"]), "amp": str(system["amp_dtype"]),
                     "channels_last": system["channels_last"], "in_chans": parts.in_chans,
                     "img_size": parts.img_size, "num_classes": data.num_classes,
                     "classes": data.classes, "mean": list(parts.mean), "std": list(parts.std),
                     "data": data.info, "data_source": data.source,
                     "steps_per_epoch": parts.schedule.steps_per_epoch,
                     "world_size": dist.world_size, "sync_bn": cfg.sync_bn,
                     "recipe": getattr(parts.model, "recipe", None)},
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
    }
