"""The optional packages export needs: onnx, onnxscript (the dynamo exporter) and onnxruntime.

They come in the ``export`` extra. ``has_onnx`` / ``has_onnxruntime`` / ``has_onnxscript`` say
what is importable; :func:`require_export` raises one error naming the extra to install, so a
missing package is a one-line message, not a traceback from deep inside torch.onnx.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXPORT_EXTRA_HINT", "MissingExtraError", "has_onnx", "has_onnxruntime",
           "has_onnxscript", "require_export"]

EXPORT_EXTRA_HINT = "pip install -e '.[export]' (or: pip install onnx onnxscript onnxruntime)"


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


has_onnx = _importable("onnx")
has_onnxruntime = _importable("onnxruntime")
has_onnxscript = _importable("onnxscript")


class MissingExtraError(ImportError, ValueError):
    """An optional package of the ``export`` extra is not installed.

    An ImportError for library callers, and a ValueError so that command-line tools report it
    as a one-line user error.
    """


def require_export(verify: bool = True) -> None:
    """Raise :class:`MissingExtraError` unless onnx (and, with ``verify``, onnxruntime) import.

    onnxscript is not required here: without it the dynamo exporter fails and the TorchScript
    exporter is used, which the export result reports.
    """
    missing = [] if has_onnx else ["onnx"]
    if verify and not has_onnxruntime:
        missing.append("onnxruntime")
    if missing:
        raise MissingExtraError(f"ONNX export needs {' and '.join(missing)}, which are not "
                                f"installed: {EXPORT_EXTRA_HINT}")
