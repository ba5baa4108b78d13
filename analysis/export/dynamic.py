"""Which input axes an export leaves dynamic, and why the others are fixed.

``auto`` makes the batch dynamic, and height and width too when the head takes any size (not
Flatten) and the backbone runs at another input size; token models do so only when timm builds
them with ``dynamic_img_size=True``. ``batch`` and ``none`` fix what the user asked.
"""

from __future__ import annotations

from dataclasses import dataclass

import surgery
from surgery.report import neighbour_sizes, try_input_size

from .source import ExportSource

__all__ = ["AXES", "DYNAMIC_MODES", "DynamicPlan", "plan_dynamic"]

AXES = ("batch", "height", "width")  # the input axes that can be dynamic: NCHW positions 0, 2, 3
DYNAMIC_MODES = ("auto", "batch", "none")


@dataclass(frozen=True)
class DynamicPlan:
    """Which input axes to export as dynamic, and why the others are fixed (None: none are)."""

    mode: str
    axes: tuple[str, ...]
    reason: str | None = None


def plan_dynamic(source: ExportSource, mode: str = "auto") -> DynamicPlan:
    """The axes to make dynamic for ``mode`` (``auto``, ``batch`` or ``none``).

    ``auto``: batch always; height and width too when the head takes any size and the model
    runs at a smaller or a larger input (checked on a storage-free meta twin where possible).
    """
    if mode not in DYNAMIC_MODES:
        raise ValueError(f"unknown dynamic mode {mode!r}; choose from {', '.join(DYNAMIC_MODES)}")
    if mode == "none":
        return DynamicPlan(mode, (), "fixed sizes asked for (dynamic none)")
    if mode == "batch":
        return DynamicPlan(mode, ("batch",), "height and width fixed as asked (dynamic batch)")
    h, w = source.input_size
    kind = surgery.HEADS[surgery.parse_head(source.head).kind]  # a kind or a head spec
    if not kind.any_input_size:
        grid = "x".join(map(str, source.model.features.grid))
        return DynamicPlan(mode, ("batch",), f"the {source.head} head is built for {h}x{w} "
                           f"inputs (a {grid} feature grid) and takes no other size")
    others = [s for s in neighbour_sizes(h) if s != h] or [h + 32]
    checks = [try_input_size(source.model, (s, round(s * w / h))) for s in others]
    if any(c["ok"] for c in checks):
        return DynamicPlan(mode, AXES)
    refused = checks[-1]
    hint = ""
    if hasattr(source.model.backbone, "dynamic_img_size"):  # timm ViT-style models
        hint = ("; token models take other sizes when built with --timm-option "
                "dynamic_img_size=True")
    size = "x".join(map(str, refused["input_size"]))
    why = str(refused["error"]).removeprefix("the backbone refuses it: ")
    return DynamicPlan(mode, ("batch",), f"{source.name} refuses other input sizes ({size}: "
                       f"{surgery.one_line(why, 160)}){hint}")
