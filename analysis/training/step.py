"""One optimiser step, the learning-rate schedule, evaluation and the running loss.

Kept apart from the loop (analysis.training.loop) so that the throughput benchmark uses exactly
the step the harness uses.
"""

from __future__ import annotations

import math
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..costs import reset_rss_peak, rss_peak_bytes
from ..data import iterate
from .distributed import DistInfo

__all__ = ["NonFiniteLossError", "RunningLoss", "TrainStep", "evaluate", "head_threads", "lr_factor",
           "peak_mem_mb", "reset_peak_mem"]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or inf; the run stopped, ``last.pt`` is the last good state.

    Tools exit with :attr:`exit_code` (3) for it, so scripts tell a diverged run from a bad option.
    """

    exit_code = 3


LARGE_HEADS = 20_000_000  # parameters from which heads' matmuls gain from every core


@contextmanager
def head_threads(device: torch.device, params: int = 0) -> Iterator[None]:
    """One CPU thread while heads train on cached features: a head's small operations wait on
    thread synchronisation more than they gain from a second thread. Heads of :data:`LARGE_HEADS`
    ``params`` or more (a 4096-wide MLP on a 7x7 grid) keep every thread: their matmuls are
    large enough to share. Other devices are left alone."""
    if torch.device(device).type != "cpu" or params >= LARGE_HEADS:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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
    """One optimiser step on a batch: device transform, forward, loss, backward, update.

    The batch is uint8 images with a BatchTransform, or cached features with the transform of
    analysis.training.cached (``model`` is then the head). ``grad_sync`` runs after the backward
    pass (averaging a head's gradients over ranks where no DDP wrapper does it). Returns the
    (detached) mean loss of the batch without synchronising the device.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 transform: Any, *, label_smoothing: float = 0.0,
                 clip_grad: float | None = None, amp_dtype: torch.dtype | None = None,
                 scaler: torch.amp.GradScaler | None = None,
                 grad_sync: Callable[[], None] | None = None):
        self.model, self.optimizer, self.transform = model, optimizer, transform
        self.label_smoothing, self.clip_grad = label_smoothing, clip_grad
        self.amp_dtype, self.scaler = amp_dtype, scaler
        self.grad_sync = grad_sync
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
            if self.grad_sync is not None:
                self.grad_sync()
            if self.clip_grad:
                self.scaler.unscale_(self.optimizer)
                self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_sync is not None:
                self.grad_sync()
            if self.clip_grad:
                self._clip()
            self.optimizer.step()
        return loss.detach()

    def _clip(self) -> None:
        params = [p for p in self._params if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, float(self.clip_grad or 0.0))


@torch.inference_mode()
def evaluate(model: nn.Module, x: Any, y: torch.Tensor, transform: Any,
             batch_size: int, amp_dtype: torch.dtype | None = None,
             dist: DistInfo | None = None) -> tuple[float, float]:
    """Mean cross-entropy (nats) and accuracy (fraction) of ``model`` in eval mode on ``(x, y)``.

    ``x`` is uint8 images with a BatchTransform, or cached feature rows with their transform and
    the head as ``model``.

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


def reset_peak_mem(device: torch.device) -> None:
    """Start a new peak for :func:`peak_mem_mb` (each run's peak is its own, even when one
    process runs many): the CUDA allocator's peak, or on Linux the process's peak RSS (VmHWM)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_rss_peak()


def peak_mem_mb(device: torch.device) -> float:
    """Peak memory in MiB since :func:`reset_peak_mem`: the CUDA allocator's peak on GPU, the
    process's peak RSS on CPU (where it cannot be reset, the peak of the process's lifetime)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = rss_peak_bytes()
    if peak is not None:
        return peak / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
