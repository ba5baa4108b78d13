"""Save and load swapped models as a recipe plus weights.

A file holds the recipe (backbone name, timm options, head kind and its spec with every option,
classes, hidden sizes, dropout, input size) and the state dict; :func:`load` rebuilds the
architecture from the recipe, without downloading anything, and loads the weights strictly, so
outputs are equal after reload (a learned GeM exponent included: it is in the state dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .errors import one_line
from .files import atomic_write
from .swap import HeadSwapped, swap_head

__all__ = ["FORMAT_VERSION", "load", "read_model_file", "save"]

FORMAT_VERSION = 1


def save(model: HeadSwapped, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (recipe + weights) to ``path`` atomically; ``extra`` is stored alongside."""
    if not isinstance(model, HeadSwapped):
        raise ValueError(f"surgery.save expects a HeadSwapped model (from swap_head), got "
                         f"{type(model).__name__}; for a plain model use torch.save(model.state_dict())")
    if not model.recipe.get("backbone"):
        raise ValueError("this model has no backbone name in its recipe (it was not created by "
                         "timm); it cannot be rebuilt from a file")
    payload = {
        "format": "headswap",
        "version": FORMAT_VERSION,
        "recipe": model.recipe,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw contents of a headswap file (recipe, state_dict, extra), validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no headswap model file at {str(path)!r}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not read {str(path)!r} ({type(err).__name__}); is it a file "
                         "written by surgery.save?") from None
    if not isinstance(payload, dict) or payload.get("format") != "headswap":
        raise ValueError(f"{str(path)!r} is not a headswap model file (written by surgery.save); "
                         "for plain weights use surgery.load_backbone(name, checkpoint=path)")
    if payload.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written by a newer headswap (format "
                         f"{payload['version']} > {FORMAT_VERSION}); upgrade headswap")
    return payload


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
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"weights in {str(path)!r} do not fit the model its recipe builds "
                         f"({one_line(err, with_type=False)})") from None
    return model.to(map_location)
