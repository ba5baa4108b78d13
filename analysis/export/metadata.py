"""What a deployment needs to feed the exported model, stored in the ONNX file's metadata.

ONNX metadata are string key/value pairs; :func:`deployment_metadata` writes the keys of
:data:`METADATA_KEYS` (lists as JSON text) and :func:`read_metadata` turns them back into
numbers and lists. What each key holds is listed in docs/export.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .source import ExportSource

__all__ = ["METADATA_KEYS", "deployment_metadata", "read_metadata", "set_metadata"]

METADATA_KEYS = ("model", "head", "head_spec", "num_classes", "input_size", "input_layout", "channels",
                 "dynamic_axes", "mean", "std", "preprocess", "class_names", "feature_layout")
_JSON_KEYS = ("dynamic_axes", "mean", "std", "class_names")
_INT_KEYS = ("num_classes", "channels")
PREPROCESS = ("float32 NCHW; x = (pixel / 255 - mean) / std per channel; logits out "
              "(softmax not included)")


def deployment_metadata(source: ExportSource, dynamic_axes: Sequence[str]) -> dict[str, str]:
    """The metadata entries for ``source`` exported with ``dynamic_axes``, as strings."""
    model = source.model
    h, w = source.input_size
    meta: dict[str, Any] = {
        "model": source.name,
        "head": source.head,
        "head_spec": source.head_spec or source.head,
        "num_classes": model.num_classes,
        "input_size": f"{h}x{w}",
        "input_layout": "NCHW",
        "channels": source.in_chans,
        "dynamic_axes": list(dynamic_axes),
        "mean": list(source.mean),
        "std": list(source.std),
        "preprocess": PREPROCESS,
        "feature_layout": model.features.layout,
    }
    if source.class_names is not None:
        meta["class_names"] = list(source.class_names)
    return {k: json.dumps(v) if k in _JSON_KEYS else str(v) for k, v in meta.items()}


def set_metadata(proto: Any, entries: dict[str, str]) -> None:
    """Add ``entries`` to an ``onnx.ModelProto``'s metadata (replacing keys it already has)."""
    keep = [(p.key, p.value) for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for key, value in [*keep, *entries.items()]:
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an ONNX file, lists and counts decoded (keys as :data:`METADATA_KEYS`).

    Reads the graph structure only, not the weights. Unknown keys are returned as strings.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {str(path)!r}")
    proto = onnx.load(str(path), load_external_data=False)
    meta: dict[str, Any] = {}
    for prop in proto.metadata_props:
        value: Any = prop.value
        if prop.key in _JSON_KEYS:
            value = json.loads(value)
        elif prop.key in _INT_KEYS:
            value = int(value)
        meta[prop.key] = value
    return meta
