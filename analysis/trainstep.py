"""The pieces of the training loop: model, optimiser, schedule, regime, one step, evaluation.

Kept apart from analysis.train (the loop and the run directory) so that the throughput benchmark
and later a study runner or a DDP wrapper use exactly the step the harness uses.
"""

from __future__ import annotations

import math
import resource
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from .batches import BatchTransform, iterate

if TYPE_CHECKING:
    from .data import DataSplits
    from .trainconfig import TrainConfig

__all__ = ["DistInfo", "NonFiniteLossError", "RunningLoss", "TrainStep", "build_model", "build_optimizer",
           "evaluate", "lr_factor", "model_costs", "peak_mem_mb", "resolve_system", "set_regime"]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or inf; the run stopped, ``last.pt`` is the last good state."""


@dataclass
class DistInfo:
    """Who this process is in a distributed run. The default is a single process.

    ``all_reduce`` sums a tensor across ranks in place (``torch.distributed.all_reduce`` under
    DDP) and ``barrier`` waits for every rank; only rank 0 writes files and shows progress.
    analysis.distributed.setup builds one from torchrun's environment.
    """

    rank: int = 0
    world_size: int = 1
    all_reduce: Callable[[torch.Tensor], Any] | None = None
    local_rank: int = 0
    barrier: Callable[[], Any] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Barrier across ranks (nothing for a single process)."""
        if self.barrier is not None and self.world_size > 1:
            self.barrier()

    def sum(self, value: float) -> float:
        if self.all_reduce is None or self.world_size == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        self.all_reduce(t)
        return float(t.item())


def resolve_system(cfg: TrainConfig) -> dict[str, Any]:
    """Device, AMP dtype and memory format from the config's ``auto`` settings."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {cfg.device!r} asked for but CUDA is not available; use "
                             "--device cpu or auto")
    amp_dtype = None
    if cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda"):
        if device.type == "cuda":
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            amp_dtype = torch.bfloat16
    # channels-last: faster convolutions on CUDA and with oneDNN on CPU (1.9x for mobilenetv3
    # in benchmarks/train_throughput.py), the same for models without 2-D convolutions
    channels_last = True if cfg.channels_last is None else cfg.channels_last
    return {"device": device, "amp_dtype": amp_dtype, "channels_last": channels_last}


def build_model(cfg: TrainConfig, data: DataSplits, img_size: int,
                fresh: bool = True) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
    """``swap_head`` for the run; returns the model, its input channels and the normalisation.

    From scratch the model takes the data's channels and the data's own statistics; pretrained
    (or from a checkpoint) it keeps 3 channels (grayscale is repeated) and its own mean / std.
    ``fresh=False`` (resuming) skips downloading weights that the checkpoint replaces anyway.
    """
    import timm

    import surgery

    weights = cfg.pretrained or cfg.checkpoint is not None
    in_chans = cfg.in_chans or (3 if weights else data.channels)
    kwargs: dict[str, Any] = {}
    pcfg = timm.get_pretrained_cfg(cfg.model.split(".")[0])
    if pcfg is not None and pcfg.to_dict().get("fixed_input_size"):
        kwargs["img_size"] = img_size  # ViT-style models: position embeddings for this size
    try:
        model = surgery.swap_head(
            cfg.model, head=cfg.head, num_classes=data.num_classes, hidden=cfg.hidden,
            dropout=cfg.dropout, input_size=img_size, in_chans=in_chans,
            pretrained=cfg.pretrained and fresh, checkpoint=cfg.checkpoint if fresh else None,
            **kwargs)
    except ValueError as err:
        if "cannot run at input" not in str(err):
            raise
        raise ValueError(f"img-size {img_size} is too small for {cfg.model}: {err}; use a larger "
                         "--img-size") from None
    if weights:
        mcfg = model.backbone.pretrained_cfg
        mean, std = tuple(mcfg.get("mean", data.mean)), tuple(mcfg.get("std", data.std))
    else:
        mean, std = data.mean, data.std
    return model, in_chans, mean, std


def set_regime(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """Train mode and trainable parameters for ``epoch`` under the config's regime.

    A frozen backbone also stays in eval mode, so BatchNorm statistics do not move either.
    """
    frozen = cfg.regime == "linear-probe" or (cfg.regime == "two-stage" and epoch < cfg.head_epochs)
    model.train()
    for p in model.backbone_parameters():
        p.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()
        model.head.train()
    for p in model.head_parameters():
        p.requires_grad_(True)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def lr_factor(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """Multiplier of the base lr at optimiser step ``step``: linear warm-up, then cosine to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    t = min(1.0, (step - warmup) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class RunningLoss:
    """Sum of per-sample training losses over an epoch, read without a sync on every CUDA step.

    On CPU it is a Python float (``loss.item()`` costs nothing there); on CUDA a float64 device
    tensor. Starting from a checkpoint's ``total`` keeps the order of additions, so a resumed
    epoch reports the same sum bit for bit.
    """

    def __init__(self, device: torch.device, total: float = 0.0):
        self._tensor = (torch.tensor(total, dtype=torch.float64, device=device)
                        if device.type != "cpu" else None)
        self._float = float(total)

    def add(self, loss: torch.Tensor, n: int) -> None:
        if self._tensor is None:
            self._float += loss.item() * n
        else:
            self._tensor += loss.double() * n

    @property
    def total(self) -> float:
        return self._float if self._tensor is None else float(self._tensor)

    @property
    def free_to_read(self) -> bool:
        """True when reading ``total`` does not stall the device (CPU)."""
        return self._tensor is None


class TrainStep:
    """One optimiser step on a uint8 batch: device transform, forward, loss, backward, update.

    Returns the (detached) mean loss of the batch without synchronising the device.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 transform: BatchTransform, *, label_smoothing: float = 0.0,
                 clip_grad: float | None = None, amp_dtype: torch.dtype | None = None,
                 scaler: torch.amp.GradScaler | None = None):
        self.model, self.optimizer, self.transform = model, optimizer, transform
        self.label_smoothing, self.clip_grad = label_smoothing, clip_grad
        self.amp_dtype, self.scaler = amp_dtype, scaler
        self.device = transform.device
        self._params = [p for g in optimizer.param_groups for p in g["params"]]

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.transform(x, train=True, generator=generator)
        y = y.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss = F.cross_entropy(self.model(x), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)
                self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.clip_grad:
                self._clip()
            self.optimizer.step()
        return loss.detach()

    def _clip(self) -> None:
        params = [p for p in self._params if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, float(self.clip_grad or 0.0))


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, transform: BatchTransform,
             batch_size: int, amp_dtype: torch.dtype | None = None,
             dist: DistInfo | None = None) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy (fraction) of ``model`` in eval mode on ``(x, y)``.

    Under DDP each rank takes its share and the sums are reduced, so every sample counts once.
    """
    if len(y) == 0:
        return float("nan"), float("nan")
    dist = dist or DistInfo()
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=transform.device)
    for sl in iterate(len(y), batch_size, dist.rank, dist.world_size):
        xb = transform(x[sl], train=False)
        yb = y[sl].to(transform.device)
        with torch.autocast(transform.device.type, dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(xb)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, yb, reduction="sum").double()
        sums[1] += (logits.argmax(1) == yb).sum()
        sums[2] += len(yb)
    if dist.all_reduce is not None and dist.world_size > 1:
        dist.all_reduce(sums)
    for m, t in was_training.items():
        m.training = t
    loss, correct, n = sums.tolist()
    return loss / n, correct / n


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory in MiB: CUDA allocator peak on GPU, the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def model_costs(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """``params`` / ``head_params`` and ``gmacs`` / ``head_gmacs`` (10^9 multiply-adds per image).

    Counts come from analysis.params / analysis.flops; a counter that is missing or fails leaves
    its key None (with a warning) rather than guessing.
    """
    out: dict[str, Any] = {"params": None, "head_params": None, "gmacs": None, "head_gmacs": None}
    try:
        from .params import count_params

        out.update(_read_params(count_params(model)))
    except Exception as err:  # a missing or failing counter must not lose a finished run
        warnings.warn(f"parameter count unavailable ({type(err).__name__}: {err})", stacklevel=2)
    try:
        from .flops import count_flops

        macs = count_flops(model, input_size=input_size)
        out["gmacs"] = _read_macs(macs) / 1e9
        if isinstance(macs, dict) and macs.get("head") is not None:
            out["head_gmacs"] = float(macs["head"]) / 1e9
    except Exception as err:
        warnings.warn(f"MAC count unavailable ({type(err).__name__}: {err})", stacklevel=2)
    return out


def _read_params(result: Any) -> dict[str, Any]:
    if isinstance(result, int):
        return {"params": result}
    get = result.get if isinstance(result, dict) else lambda k, d=None: getattr(result, k, d)
    return {"params": get("total"), "head_params": get("head")}


def _read_macs(result: Any) -> float:
    if isinstance(result, int | float):
        return float(result)
    get = result.get if isinstance(result, dict) else lambda k, d=None: getattr(result, k, d)
    for key in ("macs", "total", "total_macs"):
        if get(key) is not None:
            return float(get(key))
    raise TypeError(f"cannot read a MAC count from {type(result).__name__}")
