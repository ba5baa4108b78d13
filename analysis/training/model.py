"""What a run trains: the swapped model, its regime, its optimiser, and what it costs.

``build_model`` calls ``surgery.swap_head`` with the run's options and picks the normalisation
(the pretrained configuration's mean/std; from scratch the data's own statistics: the training
subset's when the backbone trains, the whole pool's when it starts frozen);
``set_regime`` decides what trains in each epoch; ``build_optimizer`` makes the parameter groups.
"""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from surgery import HeadSwapped, one_line

from ..costs import count_flops, count_params
from ..machine import resolve_device

if TYPE_CHECKING:
    from ..data import DataSplits
    from .config import TrainConfig

__all__ = ["build_backbone", "build_model", "make_optimizer", "head_init_seed", "step_seed", "build_optimizer", "model_costs", "resolve_system", "set_regime",
           "timm_kwargs"]


def resolve_system(cfg: TrainConfig) -> dict[str, Any]:
    """Device, AMP dtype and memory format from the config's ``auto`` settings."""
    device = resolve_device(cfg.device)
    amp_dtype = None
    if cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda"):
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp_dtype = torch.bfloat16
    # channels-last: faster convolutions on CUDA and with oneDNN on CPU
    # (benchmarks/train_throughput.py), the same for models without 2-D convolutions
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    return {"device": device, "amp_dtype": amp_dtype, "channels_last": channels_last}


def timm_kwargs(model: str, timm_options: dict[str, Any] | None, img_size: int) -> dict[str, Any]:
    """The timm options a run builds ``model`` with: ``timm_options``, plus ``img_size`` for
    models with a fixed input size (ViT-style position embeddings made for it)."""
    import timm

    kwargs: dict[str, Any] = dict(timm_options or {})
    pcfg = timm.get_pretrained_cfg(model.split(".")[0])
    if pcfg is not None and pcfg.to_dict().get("fixed_input_size"):
        kwargs.setdefault("img_size", img_size)
    return kwargs


_HEAD_SEED_OFFSET = 7_919  # the head's stream, apart from the backbone's
_STEP_SEED_OFFSET = 104_729  # the global stream the training steps start from (dropout)


def head_init_seed(seed: int) -> int:
    """The seed a run's head is initialised from, after its backbone is built: a head starts the
    same whatever the backbone's construction drew, so many heads built on one backbone (a
    sweep, analysis.training.sweep) start as each run alone does."""
    return seed + _HEAD_SEED_OFFSET


def step_seed(seed: int) -> int:
    """The seed of the global random stream when a new run's first step starts (the head's
    dropout masks draw from it): what a sweep member's own generator starts from too."""
    return seed + _STEP_SEED_OFFSET


def _in_chans(cfg: TrainConfig, data: DataSplits, settings: dict[str, Any]) -> int:
    weights = cfg.pretrained or cfg.checkpoint is not None
    return int(cfg.in_chans or settings.get("in_chans") or (3 if weights else data.channels))


def build_backbone(cfg: TrainConfig, data: DataSplits, img_size: int,
                   fresh: bool = True) -> nn.Module:
    """The run's timm model before the swap, with its weights (random ones drawn from the
    global stream: seed it with the run's seed first, as :func:`build_model`'s caller does)."""
    import surgery

    settings = surgery.checkpoint_settings(cfg.checkpoint)
    kwargs = {**settings.get("timm_kwargs", {}),
              **timm_kwargs(cfg.model, cfg.timm_options, img_size)}
    return surgery.load_backbone(cfg.model, in_chans=_in_chans(cfg, data, settings),
                                 pretrained=cfg.pretrained and fresh,
                                 checkpoint=cfg.checkpoint if fresh else None, **kwargs)


def build_model(cfg: TrainConfig, data: DataSplits, img_size: int, fresh: bool = True,
                backbone: nn.Module | None = None
                ) -> tuple[HeadSwapped, int, tuple[float, ...], tuple[float, ...]]:
    """``swap_head`` for the run; returns the model, its input channels and the normalisation.

    From scratch the model takes the data's channels and statistics (under a frozen backbone
    those of the whole training pool, the same for every seed, so one feature cache serves them
    all); pretrained it keeps 3 channels (grayscale is repeated) and its own mean / std; from a
    headswap model file, what its backbone was trained with. The mean / std go into the recipe,
    so every saved file carries them. ``fresh=False`` (resuming) skips downloading weights the
    checkpoint replaces. ``backbone``: a timm model built as this config builds it, copied instead
    of building another (a sweep builds many heads on one). The head is initialised from
    :func:`head_init_seed`.
    """
    import surgery

    weights = cfg.pretrained or cfg.checkpoint is not None
    settings = surgery.checkpoint_settings(cfg.checkpoint)  # a headswap model file's recipe
    in_chans = _in_chans(cfg, data, settings)
    backbone = (build_backbone(cfg, data, img_size, fresh) if backbone is None
                else copy.deepcopy(backbone))
    torch.manual_seed(head_init_seed(cfg.seed))
    try:
        model = surgery.swap_head(backbone, head=cfg.head_spec(), num_classes=data.num_classes,
                                  input_size=img_size)
    except ValueError as err:
        if "cannot run at input" not in str(err):
            raise
        raise ValueError(f"img-size {img_size} is too small for {cfg.model}: {err}; use a larger "
                         "--img-size") from None
    mean, std = _normalization(model, data, cfg, weights, settings.get("normalization"))
    model.recipe["normalization"] = {"mean": list(mean), "std": list(std)}  # saved with it
    return model, in_chans, mean, std


def _normalization(model: HeadSwapped, data: DataSplits, cfg: TrainConfig, weights: bool,
                   stored: dict[str, Any] | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean / std (0..1 pixel scale) the inputs are normalised with: those a headswap model
    file's backbone was trained with, a pretrained configuration's, or the data's own (its
    training pool's under a frozen backbone)."""
    if stored:
        return tuple(stored["mean"]), tuple(stored["std"])
    if weights:
        mcfg: dict[str, Any] = dict(getattr(model.backbone, "pretrained_cfg", None) or {})
        return tuple(mcfg.get("mean", data.mean)), tuple(mcfg.get("std", data.std))
    if cfg.frozen(0) and data.pool_mean:
        return data.pool_mean, data.pool_std
    return data.mean, data.std


def set_regime(model: HeadSwapped, cfg: TrainConfig, epoch: int) -> None:
    """Train mode and trainable parameters for ``epoch`` under the config's regime.

    A frozen backbone also stays in eval mode, so BatchNorm statistics do not move either.
    """
    frozen = cfg.frozen(epoch)
    model.train()
    for p in model.backbone_parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()
        model.head.train()
    for p in model.head_parameters():
        p.requires_grad_(True)


def build_optimizer(model: HeadSwapped, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with a backbone and a head parameter group (``lr_scale`` per group).

    Biases and norm weights (1-D tensors) get no weight decay, as in timm's param_groups_weight_decay.
    """
    scale = cfg.backbone_lr_scale if cfg.regime == "two-stage" else 1.0
    groups = []
    for name, params, s in (("backbone", list(model.backbone_parameters()), scale),
                            ("head", list(model.head_parameters()), 1.0)):
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        for suffix, ps, wd in (("", decay, cfg.weight_decay), ("_no_decay", no_decay, 0.0)):
            groups.append({"params": ps, "weight_decay": wd, "lr_scale": s, "name": name + suffix,
                           "lr": cfg.lr * s})
    return make_optimizer(groups, cfg)


def make_optimizer(groups: list[dict[str, Any]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimiser over ``groups``: SGD (momentum, Nesterov) or AdamW, the fused AdamW
    where torch has it for the parameters (float tensors on CPU or CUDA): one pass over memory
    per step instead of a dozen.
    A sweep (analysis.training.stacked) gives each member one of these too."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                                 for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)


def model_costs(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """``params`` / ``head_params`` and ``gmacs`` / ``head_gmacs`` (10^9 multiply-adds per image).

    Counts come from analysis.costs; a counter that fails leaves its keys None (with a warning)
    rather than guessing, so a finished run is never lost to a counting problem.
    """
    out: dict[str, Any] = {"params": None, "head_params": None, "gmacs": None, "head_gmacs": None}
    try:
        params = count_params(model)
        out["params"], out["head_params"] = params["total"], params["head"]
    except Exception as err:  # a failing counter must not lose a finished run
        warnings.warn(f"parameter count unavailable ({one_line(err)})", stacklevel=2)
    try:
        macs = count_flops(model, input_size=input_size)
        out["gmacs"] = float(macs["total"]) / 1e9
        if macs.get("head") is not None:
            out["head_gmacs"] = float(macs["head"]) / 1e9
    except Exception as err:
        warnings.warn(f"MAC count unavailable ({one_line(err)})", stacklevel=2)
    return out
