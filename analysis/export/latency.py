"""Median latency of torch eager against onnxruntime, side by side on this machine (CPU).

Both run the same random batch with the same number of intra-op threads (torch's), a few
untimed warm-up calls, then the median of ``repeats`` timed calls, in milliseconds per batch.
torch is timed by :func:`analysis.costs.measure` (inference only); onnxruntime by the same loop.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from analysis.costs import measure

from .verify import onnx_session

__all__ = ["compare_latency"]


def _onnx_ms(session: Any, x: torch.Tensor, warmup: int, repeats: int) -> float:
    name = session.get_inputs()[0].name
    feed = {name: x.numpy()}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def compare_latency(model: nn.Module, path: str | Path, input_size: tuple[int, int],
                    in_chans: int = 3, batches: Sequence[int] = (1, 8), warmup: int = 2,
                    repeats: int = 7) -> dict[str, dict[str, float | None]]:
    """``{"torch": {"b1": ms, "b8": ms}, "onnxruntime": {...}}`` at ``input_size`` (H, W).

    A batch the file does not take (exported with a fixed batch) is None for onnxruntime.
    """
    session = onnx_session(path)
    fixed_batch = session.get_inputs()[0].shape[0]
    result: dict[str, dict[str, float | None]] = {"torch": {}, "onnxruntime": {}}
    for b in batches:
        key = f"b{b}"
        timed = measure(model, (in_chans, *input_size), batch_size=b, device="cpu",
                        warmup=warmup, repeats=repeats, train=False)
        result["torch"][key] = float(timed["infer_latency_ms"])
        if isinstance(fixed_batch, int) and fixed_batch != b:
            result["onnxruntime"][key] = None
            continue
        x = torch.randn(b, in_chans, *input_size, generator=torch.Generator().manual_seed(b))
        result["onnxruntime"][key] = _onnx_ms(session, x, warmup, repeats)
    return result
