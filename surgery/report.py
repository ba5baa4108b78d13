"""What a swap did, as plain data: removed modules, the new head, parameters, sizes it accepts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .errors import one_line
from .heads import HEADS
from .layout import meta_twin
from .swap import HeadSwapped

__all__ = ["swap_report", "neighbour_sizes", "try_input_size"]


def neighbour_sizes(size: int, step: int = 32) -> tuple[int, int]:
    """A smaller and a larger input size around ``size``: about 0.75x and 1.25x, multiples of 32."""
    smaller = max(step, round(size * 0.75 / step) * step)
    larger = max(smaller + step, round(size * 1.25 / step) * step)
    return smaller, larger


def try_input_size(model: HeadSwapped, size: tuple[int, int], batch: int = 1) -> dict[str, Any]:
    """Run ``model`` at ``size`` (on a storage-free meta twin where possible); ok or the reason."""
    record: dict[str, Any] = {"input_size": list(size)}
    chans = int(model.recipe.get("in_chans", 3))
    try:
        twin = meta_twin(model)[0]
        twin.eval()
        with torch.no_grad():
            out = twin(torch.empty(batch, chans, *size, device="meta"))
    except ValueError as err:  # our own, already readable (Flatten grid)
        return {**record, "ok": False, "error": str(err)}
    except Exception:  # no meta kernel somewhere: real compute, batch of one
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros(batch, chans, *size, device=device))
        except Exception as err:
            reason = one_line(err, with_type=False)
            return {**record, "ok": False, "error": f"the backbone refuses it: {reason}"}
        finally:
            model.train(was_training)
    return {**record, "ok": True, "output_shape": list(out.shape)}


def _count(params) -> int:  # noqa: ANN001
    return sum(p.numel() for p in params)


def _size_note(model: HeadSwapped, kind: str, h: int, w: int) -> str:
    """Which input sizes the head takes: any, one, or any with a large enough grid (spp)."""
    if not HEADS[kind].any_input_size:
        return f"the head is built for {h}x{w} inputs only"
    finest = max(getattr(model.head.pool, "levels", (0,)))  # pyramid pooling: its finest level
    if finest > 1:
        return (f"the head takes any input size whose feature grid has at least {finest}x"
                f"{finest} cells")
    return "the head takes any input size"


def swap_report(model: HeadSwapped, sizes: Sequence[int] | None = None) -> dict[str, Any]:
    """Everything ``tools/swap_head.py`` prints, as a dict (also its ``--format json``)."""
    h, w = model.features.input_size
    if sizes is None:
        small, large = neighbour_sizes(h)
        sizes = (h, small, large)
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad:
        raise ValueError(f"input size {bad[0]!r} is not valid: sizes are whole numbers of pixels "
                         ">= 1")
    backbone, head = _count(model.backbone_parameters()), _count(model.head_parameters())
    removed = "; ".join(str(r) for r in model.removed) or "nothing (the backbone had no classifier)"
    removed_params = sum(r.params for r in model.removed)
    kind = model.recipe["head"]
    checks = [try_input_size(model, (s, round(s * w / h))) for s in sizes]
    note = (f"removed {removed_params:,} parameters of the old classifier and added {head:,} "
            f"({100.0 * head / max(1, backbone + head):.2f}% of the model); ")
    note += _size_note(model, kind, h, w)
    if any(not c["ok"] and c["error"].startswith("the backbone refuses") for c in checks):
        note += "; the backbone itself refuses some sizes (timm options such as "
        note += "dynamic_img_size=True lift that for ViT-style models)"
    f = model.features
    return {
        "model": model.recipe["backbone"],
        "head": kind,
        "head_spec": model.recipe.get("head_spec", kind),
        "num_classes": model.num_classes,
        "hidden": list(model.recipe["hidden"]),
        "dropout": model.recipe["dropout"],
        "input_size": [h, w],
        "features": f.to_dict(),
        "removed": removed,
        "removed_params": removed_params,
        "head_module": repr(model.head),
        "params": {"backbone": backbone, "head": head, "total": backbone + head},
        "sizes": checks,
        "note": note,
    }
