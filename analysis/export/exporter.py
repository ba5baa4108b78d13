"""ONNX export with torch's two exporters: dynamo first, TorchScript as the fallback.

``export_onnx`` decides which axes can be dynamic (analysis.export.dynamic), traces the model on an
example input, adds the deployment metadata and writes the file atomically: an export that fails
leaves no .onnx behind (and an existing file untouched). The dynamo exporter (``torch.export``
plus onnxscript) is tried first; when it fails, or cannot write the opset asked for, the
TorchScript exporter is used and the result says why. When ``torch.export`` traces height and
width as constants (shape-dependent code in the backbone), the dynamo export is redone with those
axes fixed rather than falling back. ``dynamo_budget`` bounds the CPU time the dynamo exporter
may take: past it (an LSTM unrolled step by step over symbolic sizes can take an hour), the
TorchScript exporter is used, as for any other dynamo failure.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import surgery

from ..runtime import CpuBudgetExceeded, cpu_budget
from .deps import require_export
from .dynamic import AXES, plan_dynamic
from .metadata import deployment_metadata, set_metadata
from .source import ExportSource

__all__ = ["DEFAULT_OPSET", "OPSETS", "ExportError", "ExportResult", "check_opset", "export_onnx",
           "exporter_reason"]

_AXIS_DIM = {"batch": 0, "height": 2, "width": 3}  # AXES by their position in NCHW
DEFAULT_OPSET = 18
# opsets each exporter writes (torch 2.x): dynamo 18+, TorchScript up to 20
OPSETS = {"dynamo": (18, 23), "torchscript": (7, 20)}
_MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for a single-file ONNX model
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(ValueError):
    """Neither exporter produced a file; the message names each exporter's reason."""


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote. ``dynamic_axes`` are read back from the file's input."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    dynamic_axes: list[str]
    fixed_reason: str | None
    fallback_reason: str | None
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    file_bytes: int
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def check_opset(opset: int) -> None:
    """Refuse an opset neither exporter writes, naming the ranges each one supports."""
    low = min(r[0] for r in OPSETS.values())
    high = max(r[1] for r in OPSETS.values())
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        ranges = ", ".join(f"{k} {a}-{b}" for k, a, b in ((k, *v) for k, v in OPSETS.items()))
        raise ValueError(f"unsupported opset {opset!r}: torch's exporters write opsets "
                         f"{low}-{high} ({ranges}); {DEFAULT_OPSET} is the default")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress lines and tracer warnings off stdout / stderr.

    File descriptor 1 too: torch's TorchScript exporter logs the whole IR graph from C++ to
    stdout when it fails (its ONNX log is always on, torch 2.x), which would break ``--format
    json`` and the one-line error.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull, warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            os.dup2(devnull.fileno(), 1)
            warnings.simplefilter("ignore")
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def exporter_reason(err: BaseException) -> str:
    """One line for an exporter failure: the exception summary torch.onnx prints, if any."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    _, sep, summary = text.partition("## Exception summary")
    if sep:
        lines = [ln.strip() for ln in summary.splitlines() if ln.strip()]
        if lines:
            first = re.sub(r"^<class '(?:[\w.]+\.)?(\w+)'>:\s*", r"\1: ", lines[0])
            detail = next((ln for ln in lines[1:] if ln.startswith("- ")), "")
            return surgery.one_line(f"{first} {detail}".strip(), with_type=False)
    return surgery.one_line(text if text.strip() else type(err).__name__, with_type=False)


def _dynamo(model: torch.nn.Module, x: torch.Tensor, axes: Sequence[str], opset: int) -> Any:
    spec = ({_AXIS_DIM[a]: a for a in axes},) if axes else None
    with _quiet():
        program = torch.onnx.export(model, (x,), dynamo=True, verbose=False,
                                    dynamic_shapes=spec, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset)
    if program is None:
        raise RuntimeError("the dynamo exporter returned no program")
    proto = program.model_proto
    if _file_opset(proto) != opset:  # it falls back to its own opset when conversion fails
        raise RuntimeError(f"wrote opset {_file_opset(proto)} instead of {opset}")
    _check_graph(proto)
    return proto


def _dynamo_within(seconds: float | None, model: torch.nn.Module, x: torch.Tensor,
                   axes: Sequence[str], opset: int) -> Any:
    """:func:`_dynamo` under a CPU budget of ``seconds``: its own budget spent is a RuntimeError,
    a dynamo failure like any other; a caller's budget (a coverage pair's) passes through."""
    budget = None
    try:
        with cpu_budget(seconds) as budget:
            return _dynamo(model, x, axes, opset)
    except CpuBudgetExceeded as err:
        if budget is None or err.budget is not budget:
            raise
        raise RuntimeError(str(err)) from None


def _check_graph(proto: Any) -> None:
    """Refuse a graph onnx's checker rejects, so that TorchScript gets its turn: the dynamo
    exporter has written files no runtime loads (gemma4_vit_167m: a node input that no node
    produces). Over protobuf's 2 GiB the checker needs a file; the size error comes later."""
    import onnx

    if proto.ByteSize() > _MAX_PROTO_BYTES:
        return
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as err:
        raise RuntimeError(f"it wrote an invalid graph ({surgery.one_line(err, 300)})") from None


def _torchscript(model: torch.nn.Module, x: torch.Tensor, axes: Sequence[str], opset: int) -> Any:
    import onnx

    dynamic = {INPUT_NAME: {_AXIS_DIM[a]: a for a in axes}}
    if "batch" in axes:
        dynamic[OUTPUT_NAME] = {0: "batch"}
    with tempfile.TemporaryDirectory(prefix="headswap-onnx-") as tmp, _quiet():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamic_axes=dynamic or None, do_constant_folding=True)
        return onnx.load(str(path))


def _specialised(err: BaseException) -> list[str]:
    """Axes ``torch.export`` traced as constants, from its dynamic-shape conflict message."""
    text = str(err)
    if "inferred a static shape" not in text and "specializ" not in text.lower():
        return []
    dims = {int(d) for d in re.findall(r"shape\[(\d)\]", text)}
    named = [a for a, d in _AXIS_DIM.items() if d in dims]
    return named or ["height", "width"]


def _file_opset(proto: Any) -> int:
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _describe(values: Any) -> list[dict[str, Any]]:
    """Name, shape (ints, or axis names where dynamic) and dtype of graph inputs / outputs."""
    import onnx

    described = []
    for v in values:
        t = v.type.tensor_type
        shape = [d.dim_param or int(d.dim_value) for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "?"
        described.append({"name": v.name, "shape": shape, "dtype": dtype})
    return described


def _attempts(model: torch.nn.Module, x_for: Any, axes: tuple[str, ...], opset: int,
              dynamo_budget: float | None = None
              ) -> tuple[Any, str, tuple[str, ...], str | None, str | None]:
    """Run the exporters in order; returns (proto, exporter, axes, fixed_reason, fallback_reason).

    ``x_for(axes)`` gives the example input for those axes (batch 2 when batch is dynamic:
    ``torch.export`` always specialises a dimension of size 1).
    """
    reasons: list[str] = []
    fixed: str | None = None
    lo, hi = OPSETS["dynamo"]
    if not lo <= opset <= hi:
        reasons.append(f"it writes opsets {lo}-{hi}, not {opset}")
    else:
        try:
            return (_dynamo_within(dynamo_budget, model, x_for(axes), axes, opset), "dynamo", axes,
                    None, None)
        except Exception as err:  # noqa: BLE001 - the reason is reported, then TorchScript
            reason = exporter_reason(err)
            traced = [a for a in _specialised(err) if a in axes]
            if not traced:
                reasons.append(reason)
            else:
                kept = tuple(a for a in axes if a not in traced)
                fixed = (f"torch.export specialised {' and '.join(traced)} to the example "
                         "input's size (shape-dependent code in the backbone)")
                axes = kept  # TorchScript would trace the same sizes as constants
                try:
                    return (_dynamo_within(dynamo_budget, model, x_for(axes), axes, opset),
                            "dynamo", axes, fixed, None)
                except Exception as err2:  # noqa: BLE001
                    reasons.append(exporter_reason(err2))
    lo, hi = OPSETS["torchscript"]
    if not lo <= opset <= hi:
        raise ExportError(f"dynamo exporter: {'; '.join(reasons)}; TorchScript exporter: it "
                          f"writes opsets {lo}-{hi}, not {opset}")
    try:
        proto = _torchscript(model, x_for(axes), axes, opset)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"dynamo exporter: {'; '.join(reasons)}; TorchScript exporter: "
                          f"{exporter_reason(err)}") from None
    return proto, "torchscript", axes, fixed, "; ".join(reasons)


def _example(source: ExportSource) -> Any:
    h, w = source.input_size
    gen = torch.Generator().manual_seed(0)

    def x_for(axes: Sequence[str]) -> torch.Tensor:
        return torch.randn(2 if "batch" in axes else 1, source.in_chans, h, w, generator=gen)
    return x_for


def _check_runs(source: ExportSource) -> None:
    """The model must accept its own example input before an exporter traces it."""
    h, w = source.input_size
    try:
        with torch.no_grad():
            source.model(torch.zeros(1, source.in_chans, h, w))
    except Exception as err:  # noqa: BLE001 - the model's own refusal, as one line
        raise ValueError(f"{source.name} with the {source.head} head refuses its example input "
                         f"{h}x{w}: {surgery.one_line(err, 200, with_type=False)}") from None


def export_onnx(source: ExportSource, out: str | Path, dynamic: str = "auto",
                opset: int = DEFAULT_OPSET, dynamo_budget: float | None = None) -> ExportResult:
    """Export ``source.model`` (eval mode, float32, CPU) to ``out`` with its metadata.

    ``dynamic``: ``auto`` (batch, plus height and width where the head and backbone allow),
    ``batch`` or ``none``. ``dynamo_budget``: CPU seconds the dynamo exporter may take before
    the TorchScript exporter is used instead (None: no limit). Raises ``ValueError`` for bad arguments, :class:`ExportError` when
    neither exporter succeeds; ``out`` is written only when export succeeded.
    """
    require_export(verify=False)
    out = Path(out)
    check_opset(opset)
    surgery.check_writable(out, "out")  # before a long export
    model = source.model.eval().float().cpu()
    _check_runs(source)
    plan = plan_dynamic(source, dynamic)
    proto, exporter, axes, traced_reason, fallback = _attempts(model, _example(source),
                                                              plan.axes, opset, dynamo_budget)
    got = _describe(proto.graph.input)
    dims = got[0]["shape"] if got else []
    dynamic_axes = [a for a in AXES if len(dims) > _AXIS_DIM[a] and isinstance(dims[_AXIS_DIM[a]], str)]
    fixed = traced_reason or plan.reason
    if fixed is None and dynamic_axes != list(AXES):
        fixed = f"the {exporter} exporter wrote {', '.join(a for a in AXES if a not in dynamic_axes)} fixed"
    meta = deployment_metadata(source, dynamic_axes)
    set_metadata(proto, meta)
    data = proto.SerializeToString()
    if len(data) > _MAX_PROTO_BYTES:
        raise ExportError(f"{source.name}: the ONNX model is {len(data) / 2**30:.1f} GiB, over "
                          "protobuf's 2 GiB single-file limit")
    try:
        surgery.atomic_write_bytes(out, data)
    except OSError as err:
        raise ValueError(f"cannot write {str(out)!r}: {surgery.one_line(err)}") from None
    return ExportResult(path=out, exporter=exporter, opset=_file_opset(proto),
                        dynamic_axes=dynamic_axes, fixed_reason=fixed,
                        fallback_reason=fallback or None, inputs=got,
                        outputs=_describe(proto.graph.output), file_bytes=len(data),
                        metadata=meta)
