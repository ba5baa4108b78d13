"""Does the exported file compute what the model computes? onnxruntime (CPU) against torch.

At each input size the model accepts, one random batch goes through torch (eval mode, no grad)
and through an onnxruntime session of the file on disk. A size passes when

    max |onnx - torch| <= 1e-4 * max |torch| + 1e-5        (float32)

A size the model refuses (a Flatten head at another size, a backbone built for one size) or that
the file was exported without (fixed height and width) is a "refused" row, not a failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import surgery

from .deps import require_export

__all__ = ["ABS_TOL", "REL_TOL", "REFUSED", "is_refused", "onnx_session", "tolerance",
           "verify_onnx", "verify_size"]

REL_TOL = 1e-4
ABS_TOL = 1e-5
REFUSED = "refused: "


def tolerance(max_torch: float) -> float:
    """The largest |difference| a size may show: 1e-4 x max |torch output| + 1e-5."""
    return REL_TOL * max_torch + ABS_TOL


def is_refused(row: dict[str, Any]) -> bool:
    """Whether a verify row is a size the model or the file does not take (not a failure)."""
    return not row["ok"] and str(row.get("error") or "").startswith(REFUSED)


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of ``path``; ``threads`` intra-op threads (default: torch's)."""
    require_export(verify=True)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions: no colour log on stderr
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _row(size: tuple[int, int], ok: bool, abs_diff: float | None = None,
         rel_diff: float | None = None, error: str | None = None) -> dict[str, Any]:
    return {"input_size": list(size), "ok": ok, "max_abs_diff": abs_diff,
            "max_rel_diff": rel_diff, "error": error}


def _file_refuses(dims: Sequence[Any], size: tuple[int, int], why: str | None) -> str | None:
    fixed = [(i, d) for i, d in ((2, size[0]), (3, size[1]))
             if len(dims) > i and isinstance(dims[i], int) and dims[i] != d]
    if not fixed:
        return None
    built = "x".join(str(d) for d in dims[2:4])
    return f"{REFUSED}the file takes {built} inputs only" + (f" ({why})" if why else "")


def _compare(ref: np.ndarray, out: np.ndarray, size: tuple[int, int]) -> dict[str, Any]:
    if out.shape != ref.shape:
        return _row(size, False, error=f"output shape {list(out.shape)} != torch's "
                                       f"{list(ref.shape)}")
    if not np.isfinite(out).all():
        return _row(size, False, error="onnxruntime output has NaN or inf")
    top = float(np.abs(ref).max())
    diff = float(np.abs(out.astype(np.float64) - ref.astype(np.float64)).max())
    rel = diff / top if top > 0 else (0.0 if diff == 0 else float("inf"))
    ok = diff <= tolerance(top)
    return _row(size, ok, diff, rel, None if ok else
                f"max |diff| {diff:.3g} > tolerance {tolerance(top):.3g} (max |torch| {top:.3g})")


def verify_size(model: nn.Module, session: Any, size: tuple[int, int], in_chans: int,
                batch: int, fixed_reason: str | None = None, seed: int = 0) -> dict[str, Any]:
    """One verify row for input ``size`` (H, W): refused, passed, or failed with the reason."""
    inp = session.get_inputs()[0]
    refused = _file_refuses(list(inp.shape), size, fixed_reason)
    if refused:
        return _row(size, False, error=refused)
    if isinstance(inp.shape[0], int):
        batch = inp.shape[0]
    x = torch.randn(batch, in_chans, *size, generator=torch.Generator().manual_seed(seed))
    try:
        with torch.no_grad():
            ref = model(x).float().numpy()
    except Exception as err:  # noqa: BLE001 - the model's own refusal of this size
        return _row(size, False, error=f"{REFUSED}the model refuses {size[0]}x{size[1]}: "
                                       f"{surgery.one_line(err, 200, with_type=False)}")
    try:
        out = session.run(None, {inp.name: x.numpy()})[0]
    except Exception as err:  # noqa: BLE001 - a runtime failure is the row's result
        return _row(size, False, error=f"onnxruntime: {surgery.one_line(err, 240)}")
    return _compare(ref, np.asarray(out), size)


def verify_onnx(model: nn.Module, path: str | Path, sizes: Sequence[int], in_chans: int = 3,
                aspect: tuple[int, int] = (1, 1), batch: int = 3,
                fixed_reason: str | None = None) -> list[dict[str, Any]]:
    """Compare the ONNX file at ``path`` with ``model`` at each size (height in px; width keeps
    the ``aspect`` (H, W) ratio). ``batch`` is used where the file's batch is dynamic: 3, which
    is neither the exporter's example batch (2) nor 1, so a baked-in batch size shows."""
    session = onnx_session(path)
    model.eval()
    rows = []
    for i, s in enumerate(sizes):
        size = (int(s), int(round(s * aspect[1] / aspect[0])))
        rows.append(verify_size(model, session, size, in_chans, batch, fixed_reason, seed=i))
    return rows
