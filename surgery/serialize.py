"""Save and load swapped models as a recipe plus weights.

A file holds the recipe (backbone name, timm options, head kind and its spec with every option,
classes, hidden sizes, dropout, input size), the state dict and a checksum of the state dict;
:func:`load` verifies the checksum (a file damaged after writing is an error naming it, never
absurd weights), rebuilds the architecture from the recipe, without downloading anything, and
loads the weights strictly, so outputs are equal after reload (a learned GeM exponent included:
it is in the state dict). Files written before the checksum existed load as before: the checksum
is an extra key, and the format version is unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import one_line
from .files import atomic_write, why_unreadable
from .heads import as_hidden
from .swap import HeadSwapped, swap_head

__all__ = ["FORMAT_VERSION", "load", "read_model_file", "save", "state_checksum"]

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


def save(model: HeadSwapped, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (recipe + weights) to ``path`` atomically; ``extra`` is stored alongside."""
    if not isinstance(model, HeadSwapped):
        raise ValueError(f"surgery.save expects a HeadSwapped model (from swap_head), got "
                         f"{type(model).__name__}; for a plain model use torch.save(model.state_dict())")
    if not model.recipe.get("backbone"):
        raise ValueError("this model has no backbone name in its recipe (it was not created by "
                         "timm); it cannot be rebuilt from a file")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": "headswap",
        "version": FORMAT_VERSION,
        "recipe": model.recipe,
        "state_dict": state,
        "checksum": state_checksum(state),
        "extra": extra or {},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


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


def load(path: str | Path, map_location: str | torch.device = "cpu") -> HeadSwapped:
    """Rebuild a model saved by :func:`save` and load its weights."""
    payload = read_model_file(path)
    r = payload["recipe"]
    # the spec holds the head's options (hidden and dropout included); older files: kind + MLP
    head = {"head": r["head_spec"]} if "head_spec" in r else {
        "head": r["head"], "hidden": tuple(r["hidden"]), "dropout": r["dropout"]}
    model = swap_head(
        r["backbone"], num_classes=r["num_classes"], input_size=tuple(r["input_size"]),
        in_chans=r.get("in_chans", 3), **head, **r.get("timm_kwargs", {}),
    )
    if r.get("normalization"):  # what the weights were trained with travels with them
        model.recipe["normalization"] = dict(r["normalization"])
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {str(path)!r} do not fit the model its recipe builds "
                         f"({one_line(err, with_type=False)})") from None
    return model.to(map_location)
