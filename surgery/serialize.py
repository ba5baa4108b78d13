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

from pathlib import Path
from typing import Any

import torch

from .errors import one_line
from .files import atomic_write
from .model_file import FORMAT_VERSION, read_model_file, state_checksum
from .swap import HeadSwapped, swap_head

__all__ = ["FORMAT_VERSION", "load", "read_model_file", "save", "state_checksum"]


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
