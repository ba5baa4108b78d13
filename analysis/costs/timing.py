"""Latency, throughput and peak memory of inference and of one training step.

Times are medians over ``repeats`` timed runs after ``warmup`` untimed ones (milliseconds per
batch; throughput in images per second). Peak memory is in MiB: on CUDA the allocator's maximum
allocated bytes (reset before each phase); on CPU the process's peak resident set size (VmHWM),
which Linux lets us reset per phase by writing ``5`` to ``/proc/self/clear_refs``. Where that is
not possible the CPU figure is the peak over the whole process lifetime so far, and the result
says so (``memory_kind``). CPU figures include everything the process holds (weights, the
Python interpreter, other models), so compare them within one run.
"""

from __future__ import annotations

import ctypes
import gc
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..machine import resolve_device

__all__ = ["measure", "reset_rss_peak", "rss_peak_bytes"]

_MIB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_peak_bytes() -> int | None:
    """Peak resident set size of this process (VmHWM), bytes; None off Linux."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _release_freed_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc's ``malloc_trim``):
    memory a process freed but still holds would otherwise count in the next peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), after handing freed memory back, so that
    the new peak starts from what the process really holds; False when not possible."""
    if not _CLEAR_REFS.exists():
        return False
    _release_freed_memory()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


class _Memory:
    """Peak-memory probe for one device: reset before a phase, read after it (bytes)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda max allocated" if self.cuda else "process peak RSS (VmHWM)"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif not reset_rss_peak():
            self.kind = "process peak RSS (VmHWM) over the process lifetime: reset not possible"

    def peak(self) -> int | None:
        if self.cuda:
            torch.cuda.synchronize()
            return int(torch.cuda.max_memory_allocated())
        return rss_peak_bytes()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``step`` for ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def _loss(out: Any) -> torch.Tensor:
    """Cross-entropy against random classes for logits; mean square for anything else."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    if out.dim() == 2:
        target = torch.randint(0, out.shape[1], (out.shape[0],), device=out.device)
        return F.cross_entropy(out.float(), target)
    return out.float().square().mean()


def _check(model: nn.Module, input_size: Any, batch_size: Any, warmup: Any, repeats: Any
           ) -> tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise ValueError(f"measure expects an nn.Module, got {type(model).__name__}")
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("cannot time a model on the meta device: build it on a real device")
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else (input_size,)
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"input_size must be (channels, height, width), got {input_size!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("warmup", warmup, 0),
                             ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return (batch_size, *size)


def measure(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224),
            batch_size: int = 1, device: str | torch.device = "cpu", warmup: int = 2,
            repeats: int = 5, train: bool = True) -> dict[str, Any]:
    """Time inference (and, with ``train``, one SGD training step) of ``model`` on ``device``.

    Returns ``infer_latency_ms`` (median per batch), ``infer_throughput`` (img/s),
    ``infer_peak_mib``, the same three with ``train_`` for a forward + backward + optimiser step,
    and ``memory_kind`` saying what the memory figures are. The model is moved to ``device``.
    The training step uses SGD with learning rate 0 and restores the buffers afterwards (batch
    norm statistics), so the model's weights and state are left as they were.
    """
    shape = _check(model, input_size, batch_size, warmup, repeats)
    device = resolve_device(device)
    model.to(device)
    x = torch.randn(shape, device=device)
    memory = _Memory(device)
    was_training = model.training
    result: dict[str, Any] = {"device": str(device), "batch_size": batch_size,
                              "input_size": list(shape[1:]), "warmup": warmup,
                              "repeats": repeats}
    try:
        model.eval()
        memory.reset()
        with torch.no_grad():
            times = _time(lambda: model(x), device, warmup, repeats)
        _record(result, "infer", times, batch_size, memory.peak())
        if train:
            _train_phase(model, x, device, memory, warmup, repeats, result)
    finally:
        model.train(was_training)
    result["memory_kind"] = memory.kind
    return result


def _record(result: dict[str, Any], phase: str, times: list[float], batch: int,
            peak: int | None) -> None:
    median = statistics.median(times)
    result[f"{phase}_latency_ms"] = median * 1e3
    result[f"{phase}_throughput"] = batch / median
    result[f"{phase}_peak_mib"] = None if peak is None else peak / _MIB


def _train_phase(model: nn.Module, x: torch.Tensor, device: torch.device, memory: _Memory,
                 warmup: int, repeats: int, result: dict[str, Any]) -> None:
    """forward + backward + SGD(lr=0) step; buffers and gradients restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    grads = [p.grad for p in params]
    optimizer = torch.optim.SGD(params, lr=0.0) if params else None
    model.train()

    def step() -> None:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        loss = _loss(model(x))
        if loss.requires_grad:
            loss.backward()
        if optimizer is not None:
            optimizer.step()

    try:
        memory.reset()
        times = _time(step, device, warmup, repeats)
        _record(result, "train", times, x.shape[0], memory.peak())
    finally:
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name in buffers:
                    buf.copy_(buffers[name])
        for p, g in zip(params, grads, strict=True):
            p.grad = g

