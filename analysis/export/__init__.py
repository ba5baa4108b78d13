"""headswap.analysis.export: ship a swapped model as ONNX, verified in onnxruntime.

``source_from_name`` / ``source_from_path`` give the model and what a deployment must know
(input size, channels, mean/std, class names); ``export_onnx`` writes the file (dynamo exporter
first, TorchScript as fallback; dynamic batch, height and width where the head and backbone
allow; metadata; atomic write); ``verify_onnx`` compares onnxruntime with torch at each size;
``export_verified`` does both and falls back to fixed sizes when dynamic ones compute wrongly;
``compare_latency`` times both. onnx and onnxruntime come in the ``export`` extra:
``has_onnx`` / ``has_onnxruntime`` say whether they are installed.
"""

from __future__ import annotations

from .deps import (
    EXPORT_EXTRA_HINT,
    MissingExtraError,
    has_onnx,
    has_onnxruntime,
    has_onnxscript,
    require_export,
)
from .dynamic import AXES, DYNAMIC_MODES, DynamicPlan, plan_dynamic
from .exporter import (
    DEFAULT_OPSET,
    OPSETS,
    ExportError,
    ExportResult,
    check_opset,
    export_onnx,
    exporter_reason,
)
from .latency import compare_latency
from .metadata import METADATA_KEYS, deployment_metadata, read_metadata
from .pipeline import export_verified
from .source import ExportSource, source_from_name, source_from_path
from .verify import REFUSED, is_refused, onnx_session, tolerance, verify_onnx, verify_size

__all__ = [
    "AXES", "DEFAULT_OPSET", "DYNAMIC_MODES", "EXPORT_EXTRA_HINT", "METADATA_KEYS", "OPSETS",
    "REFUSED", "DynamicPlan", "ExportError", "ExportResult", "ExportSource", "MissingExtraError",
    "check_opset", "compare_latency", "deployment_metadata", "export_onnx", "export_verified",
    "exporter_reason", "has_onnx", "has_onnxruntime", "has_onnxscript", "is_refused",
    "onnx_session", "plan_dynamic", "read_metadata", "require_export", "source_from_name",
    "source_from_path", "tolerance", "verify_onnx", "verify_size"
]
