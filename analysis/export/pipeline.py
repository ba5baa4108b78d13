"""Export, then verify, and fall back to fixed sizes when dynamic ones compute the wrong thing.

An exporter can write a graph with dynamic height and width whose internal shapes were traced as
constants anyway (a 1x1 grid at the example size, shape arithmetic in the backbone): onnxruntime
then fails, or differs from torch, at other sizes while the example size passes. Such a file is
not a deployable "any size" model, so :func:`export_verified` exports again with height and
width fixed and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .exporter import DEFAULT_OPSET, ExportResult, export_onnx
from .source import ExportSource
from .verify import is_refused, verify_onnx

__all__ = ["export_verified"]


def _broken_dynamic(result: ExportResult, rows: Sequence[dict[str, Any]],
                    built: tuple[int, int]) -> dict[str, Any] | None:
    """The first failed row at another size, when the built size passed and H/W are dynamic."""
    if "height" not in result.dynamic_axes:
        return None
    at_built = [r for r in rows if tuple(r["input_size"]) == built]
    if not at_built or not all(r["ok"] for r in at_built):
        return None
    return next((r for r in rows if not r["ok"] and not is_refused(r)), None)


def export_verified(source: ExportSource, out: str | Path, sizes: Sequence[int],
                    dynamic: str = "auto", opset: int = DEFAULT_OPSET,
                    dynamo_budget: float | None = None
                    ) -> tuple[ExportResult, list[dict[str, Any]]]:
    """:func:`export_onnx` then :func:`verify_onnx` at ``sizes`` (the built size is checked
    too, first, if it is not among them); re-exported with fixed height and width when only
    the dynamic sizes fail. Returns the result and the rows for ``sizes``."""
    h, w = source.input_size
    probe = list(dict.fromkeys([h, *sizes]))
    result = export_onnx(source, out, dynamic=dynamic, opset=opset, dynamo_budget=dynamo_budget)
    rows = verify_onnx(source.model, result.path, probe, source.in_chans, aspect=(h, w),
                       fixed_reason=result.fixed_reason)
    broken = _broken_dynamic(result, rows, (h, w))
    if broken is not None:
        size = "x".join(map(str, broken["input_size"]))
        reason = (f"the {result.exporter} export with dynamic height and width fails at {size} "
                  f"({broken['error']})")
        result = export_onnx(source, out, dynamic="batch" if "batch" in result.dynamic_axes
                             else "none", opset=opset, dynamo_budget=dynamo_budget)
        result.fixed_reason = reason
        rows = verify_onnx(source.model, result.path, probe, source.in_chans, aspect=(h, w),
                           fixed_reason=reason)
    by_size = {r["input_size"][0]: r for r in rows}
    return result, [by_size[int(s)] for s in dict.fromkeys(sizes)]
