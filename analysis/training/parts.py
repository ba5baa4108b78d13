"""The pieces of one fine-tuning run, each built by its own small function from the config.

:func:`assemble_run` puts them together for the loop (analysis.training.loop): the data, the
model on its device (sync-BN, memory format, resumed weights), the optimiser and AMP scaler, the
model as the step sees it (DDP or itself), the epoch sampler and the schedule, the costs, and
the feeds: what an epoch trains and evaluates on (:class:`Feed`). Epochs whose backbone trains
feed images through the whole model (with augmentation); frozen-backbone epochs feed images
without random augmentation, or, with the feature cache (analysis.training.cached), cached
features through the head alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgery import HeadSwapped

from ..data import BatchTransform, DataSplits, EpochSampler, ImageArray, Images, take, to_device
from . import checkpoints as ckpt
from . import distributed
from .cached import FeatureTransform, cache_decision, grad_sync, head_costs, open_features
from .config import TrainConfig, load_run_data
from .distributed import DistInfo
from .model import build_model, build_optimizer, model_costs, set_regime
from .step import TrainStep

__all__ = ["Feed", "RunParts", "Schedule", "assemble_run", "batch_transforms", "epoch_sampler", "place_model",
           "run_config_record"]


@dataclass(frozen=True)
class Schedule:
    """Optimiser steps per epoch, in the whole run, and of linear warm-up."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int


@dataclass
class Feed:
    """What an epoch trains and evaluates on: images through the whole model, or cached
    features through its head (``cached``). Inputs are indexed like tensors by the sampler."""

    step: TrainStep
    evaluated: nn.Module      # what evaluation runs: the model, or its head
    transform: Any            # BatchTransform, or cached.FeatureTransform
    train_x: Any              # training images (on the device when they fit), or feature rows
    train_y: torch.Tensor
    train_eval: tuple[Any, torch.Tensor]  # fixed sample for eval-mode train metrics
    val: tuple[Any, torch.Tensor]
    test: tuple[Any, torch.Tensor] | None  # None: the run ends on another feed
    cached: bool = False


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
    sampler: EpochSampler
    schedule: Schedule
    eval_batch_size: int
    costs: dict[str, Any]
    frozen_feed: Feed         # epochs with a frozen backbone
    training_feed: Feed       # epochs in which the backbone trains
    feature_cache: dict[str, Any]  # what the cache did (``used`` False and why not, or its info)

    def feed(self, cfg: TrainConfig, epoch: int) -> Feed:
        """The feed of ``epoch`` (0-based; past the last epoch: the last one's)."""
        return self.frozen_feed if cfg.frozen(min(epoch, cfg.epochs - 1)) else self.training_feed

    @property
    def head_only_checkpoints(self) -> bool:
        """Checkpoints hold the head alone: the backbone never trains and is rebuilt from the
        config (a linear probe on cached features)."""
        return self.frozen_feed.cached and self.frozen_feed is self.training_feed


def place_model(model: HeadSwapped, cfg: TrainConfig, dist: DistInfo, device: torch.device,
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
        ckpt.load_weights(model, state)
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


def epoch_sampler(cfg: TrainConfig, n: int, dist: DistInfo) -> EpochSampler:
    """The run's batch order over ``n`` training images: shuffled by seed and epoch, each epoch
    at least ``steps_floor() / epochs`` steps (further passes over a small training set)."""
    return EpochSampler(n, cfg.batch_size, seed=cfg.seed, drop_last=n > cfg.batch_size,
                        rank=dist.rank, world_size=dist.world_size,
                        min_steps=math.ceil(cfg.steps_floor() / cfg.epochs))


def _schedule(cfg: TrainConfig, sampler: EpochSampler) -> Schedule:
    steps = len(sampler)
    return Schedule(steps, cfg.epochs * steps, int(round(cfg.warmup_epochs * steps)))


def _train_eval_index(data: DataSplits, cfg: TrainConfig) -> torch.Tensor:
    """A fixed sample of the training set (as large as validation), evaluated like validation."""
    n = len(data.train_y)
    n_eval = min(n, cfg.train_eval_size or max(len(data.val_y), 1))
    g = torch.Generator().manual_seed(cfg.seed + 2)
    return torch.sort(torch.randperm(n, generator=g)[:n_eval]).values


def _training_tensors(data: DataSplits, device: torch.device) -> tuple[Images, torch.Tensor]:
    """The training images and labels, moved to the GPU when they are small enough (images on
    disk are copied a chunk at a time); on the CPU they stay where they are."""
    x = data.train_x
    size = x.nbytes if isinstance(x, ImageArray) else len(x) * int(torch.Size(x.shape[1:]).numel())
    if device.type == "cuda" and size < 2**31:
        return to_device(x, device), data.train_y.to(device)
    return x, data.train_y


def _image_feed(cfg: TrainConfig, data: DataSplits, trained: nn.Module, model: HeadSwapped,
                optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                transform: BatchTransform, amp: torch.dtype | None) -> Feed:
    """Images through the whole model (the backbone runs every step)."""
    step = TrainStep(trained, optimizer, transform, label_smoothing=cfg.label_smoothing,
                     clip_grad=cfg.clip_grad, amp_dtype=amp, scaler=scaler)
    train_x, train_y = _training_tensors(data, transform.device)
    idx = _train_eval_index(data, cfg)
    return Feed(step, model, transform, train_x, train_y,  # rows of images on disk stay there
                (take(data.train_x, idx), data.train_y[idx]), (data.val_x, data.val_y),
                (data.test_x, data.test_y))


def _cached_feed(cfg: TrainConfig, data: DataSplits, model: HeadSwapped, opened: Any,
                 optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None,
                 transform: BatchTransform, amp: torch.dtype | None, dist: DistInfo) -> Feed:
    """Cached features through the head alone (the frozen backbone ran once, at extraction)."""
    feats = FeatureTransform(transform.device, transform.channels_last, cfg.feature_cache_views)
    sync = grad_sync(list(model.head_parameters()), dist)
    step = TrainStep(model.head, optimizer, feats, label_smoothing=cfg.label_smoothing,
                     clip_grad=cfg.clip_grad, amp_dtype=amp, scaler=scaler, grad_sync=sync)
    idx = _train_eval_index(data, cfg)
    test = (opened.test, data.test_y) if opened.test is not None else None
    return Feed(step, model.head, feats, opened.train, data.train_y,
                (_Subset(opened.train_plain, idx), data.train_y[idx]), (opened.val, data.val_y),
                test, cached=True)


class _Subset:
    """Rows ``index`` of feature rows, indexed like a tensor (the fixed train-metrics sample)."""

    def __init__(self, rows: Any, index: torch.Tensor):
        self.rows, self.index = rows, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, sl: Any) -> torch.Tensor:
        return self.rows[self.index[sl]]


def batch_transforms(cfg: TrainConfig, img_size: int, in_chans: int, mean: tuple[float, ...],
                std: tuple[float, ...], device: torch.device,
                channels_last: bool) -> tuple[BatchTransform, BatchTransform]:
    """The batch transforms of frozen-backbone epochs and of epochs in which it trains; they
    differ in augmentation only, off by default while the backbone is frozen."""
    def make(augment: bool) -> BatchTransform:
        return BatchTransform(img_size, in_chans, mean, std, device=device, augment=augment,
                              channels_last=channels_last)
    frozen = make(cfg.augment if cfg.augment is not None else False)
    training = make(cfg.augment if cfg.augment is not None else True)
    return frozen, training


def assemble_run(cfg: TrainConfig, state: dict[str, Any] | None, data: DataSplits | None,
                 dist: DistInfo, system: dict[str, Any], first_epoch: int,
                 run_dir: Path | None = None, backbone: nn.Module | None = None) -> RunParts:
    """Build every piece of a run; ``state`` is the ``last.pt`` being resumed (or None);
    ``backbone``: the run's timm model before the swap, already built (build_model copies it)."""
    device, amp, channels_last = system["device"], system["amp_dtype"], system["channels_last"]
    data = data if data is not None else load_run_data(cfg)
    img_size = cfg.img_size or data.image_size[0]
    torch.manual_seed(cfg.seed)
    # a head-only checkpoint (a run on cached features) holds no backbone: load it as a new run does
    fresh = state is None or ckpt.is_head_only(state)
    model, in_chans, mean, std = build_model(cfg, data, img_size, fresh=fresh, backbone=backbone)
    model = place_model(model, cfg, dist, device, channels_last, state)
    optimizer = build_optimizer(model, cfg)
    trained = _wrap_for_regime(model, cfg, dist, device, first_epoch)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    t_frozen, t_training = batch_transforms(cfg, img_size, in_chans, mean, std, device, channels_last)
    training = _image_feed(cfg, data, trained, model, optimizer, scaler, t_training, amp)
    frozen = (training if t_frozen.augment == t_training.augment
              else _image_feed(cfg, data, trained, model, optimizer, scaler, t_frozen, amp))
    use, why_not = cache_decision(cfg, model)
    cache_info: dict[str, Any] = {"used": False, "why_not": why_not}
    input_size = (in_chans, img_size, img_size)
    costs = None
    if use:
        opened = open_features(cfg, model, data, t_frozen, system,
                               run_dir or Path(cfg.out) / str(cfg.name), dist)
        _check_backbone(state, opened.info["weights"])
        cache_info = opened.info
        frozen = _cached_feed(cfg, data, model, opened, optimizer, scaler, t_frozen, amp, dist)
        if cfg.regime == "linear-probe":
            training = frozen
        costs = head_costs(model, input_size, opened.key, tuple(opened.val.shape[1:]))
    elif why_not and cfg.feature_cache == "auto" and cfg.frozen(0):
        warnings.warn(f"feature cache not used: {why_not}", stacklevel=3)
    n = len(data.train_y)
    sampler = epoch_sampler(cfg, n, dist)
    return RunParts(
        data=data, img_size=img_size, in_chans=in_chans, mean=mean, std=std, model=model,
        trained=trained, optimizer=optimizer, scaler=scaler, sampler=sampler,
        schedule=_schedule(cfg, sampler), eval_batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        costs=costs or model_costs(model, input_size), frozen_feed=frozen,
        training_feed=training, feature_cache=cache_info)


def _check_backbone(state: dict[str, Any] | None, weights: str) -> None:
    """A resumed head-only checkpoint must meet the backbone it was trained on."""
    if state is None or not ckpt.is_head_only(state):
        return
    saved = state["extra"].get("backbone_weights")
    if saved is not None and saved != weights:
        raise ValueError("the backbone rebuilt from the run's config has other weights than the "
                         f"interrupted run's (digest {weights[:12]} vs {saved[:12]}): did its "
                         "--checkpoint file change? Start the run over with --overwrite")


def run_config_record(cfg: TrainConfig, parts: RunParts, system: dict[str, Any],
                      dist: DistInfo) -> dict[str, Any]:
    """What ``config.json`` holds: the config, what ``auto`` resolved to, and the versions."""
    import timm

    data = parts.data
    return {
        "config": asdict(cfg),
        "feature_cache": parts.feature_cache,
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
