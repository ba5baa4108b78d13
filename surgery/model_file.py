"""Reading a headswap model file: its recipe, state dict and checksum, validated.

The weights readers (a headswap file as a backbone checkpoint) and :mod:`surgery.serialize`
(rebuilding the whole model) both need this, and it builds no model, so it sits below both.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .files import why_unreadable
from .heads import as_hidden

__all__ = ["FORMAT_VERSION", "read_model_file", "state_checksum"]

FORMAT_VERSION = 1
_RECIPE_KEYS = ("backbone", "head", "num_classes", "input_size")


def state_checksum(state: Mapping[str, Any]) -> str:
    """``'crc32:XXXXXXXX'`` over every entry of a state dict: its name, dtype, shape and bytes,
    in name order. Detects flipped or truncated tensor data (accidents, not tampering)."""
    crc = 0
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            header = f"{key}|{value.dtype}|{tuple(value.shape)}|"
            crc = zlib.crc32(header.encode(), crc)
            crc = zlib.crc32(t.view(torch.uint8).numpy().data, crc)
        else:
            crc = zlib.crc32(f"{key}|{value!r}|".encode(), crc)
    return f"crc32:{crc:08x}"


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw contents of a headswap file (recipe, state_dict, extra), validated."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{str(path)!r} is a directory, not a headswap model file (written by "
                         "surgery.save)")
    if not path.is_file():
        raise FileNotFoundError(f"no headswap model file at {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read {str(path)!r} ({why_unreadable(path, err)}); is it a "
                         "file written by surgery.save?") from None
    if isinstance(payload, dict) and payload.get("format") == "headswap-head":
        raise ValueError(f"{str(path)!r} holds a head and a training state only (the last.pt of "
                         "a linear probe on cached features); open the run's best.pt, which "
                         "holds the whole model")
    if not isinstance(payload, dict) or payload.get("format") != "headswap":
        raise ValueError(f"{str(path)!r} is not a headswap model file (written by surgery.save); "
                         "for plain weights use surgery.load_backbone(name, checkpoint=path)")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written by a newer headswap (format "
                         f"{payload['version']} > {FORMAT_VERSION}); upgrade headswap")
    _check_contents(payload, path)
    return payload


def _check_contents(payload: dict[str, Any], path: Path) -> None:
    """A complete recipe and a state dict whose checksum (when stored) matches; ``hidden`` as a
    list (an int is one layer)."""
    recipe, state = payload.get("recipe"), payload.get("state_dict")
    missing = [k for k in _RECIPE_KEYS if not isinstance(recipe, Mapping) or k not in recipe]
    if missing or not isinstance(state, Mapping):
        what = f"its recipe has no {', '.join(missing)}" if missing else "it holds no state dict"
        raise ValueError(f"{str(path)!r} is an incomplete headswap model file: {what}; write it "
                         "with surgery.save(model, path)")
    recipe = payload["recipe"]
    recipe["hidden"] = list(as_hidden(recipe.get("hidden")))
    recipe.setdefault("dropout", 0.0)
    stored = payload.get("checksum")
    if isinstance(stored, str) and stored.startswith("crc32:"):
        found = state_checksum(state)
        if found != stored:
            raise ValueError(f"{str(path)!r} is damaged: its weights do not match the checksum "
                             f"stored when it was saved ({found} != {stored}); the file changed "
                             "after it was written (a disk or copy error): use another copy, or "
                             "save the model again")
