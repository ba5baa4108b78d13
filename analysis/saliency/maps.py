"""One entry for "where does this head look": exact CAM where it exists, Grad-CAM elsewhere.

:func:`head_maps` returns one map per image at the input size, for the predicted or a given
class, from ``method`` ``cam`` (gap and nin heads: Zhou et al.'s exact maps), ``gradcam`` (any
head, analysis.saliency.gradcam) or ``auto`` (cam where the head supports it, else gradcam).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cam import cam_support, class_activation_maps
from .gradcam import grad_cam, upsample

__all__ = ["METHODS", "HeadMaps", "head_maps", "choose_method"]

METHODS = ("auto", "cam", "gradcam")


@dataclass
class HeadMaps:
    """``maps`` (B, H, W) at the input size, ``logits`` (B, K), the ``method`` used and where
    its maps were read (``features``, or the input of the last block for the token head)."""

    maps: torch.Tensor
    logits: torch.Tensor
    method: str
    where: str


def choose_method(model: nn.Module, method: str = "auto") -> str:
    """``cam`` or ``gradcam`` for ``model``: ``auto`` picks exact CAM where the head has one.

    ``cam`` on a head without one is refused with the reason (and the way out: gradcam).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    reason = cam_support(model)
    if method == "auto":
        return "cam" if reason is None else "gradcam"
    if method == "cam" and reason is not None:
        raise ValueError(f"{reason} (--method gradcam draws every head)")
    return method


def head_maps(model: nn.Module, x: torch.Tensor, method: str = "auto",
              target: torch.Tensor | None = None) -> HeadMaps:
    """Maps of class ``target`` (default: each image's predicted class) for the batch ``x``."""
    chosen = choose_method(model, method)
    size = (int(x.shape[-2]), int(x.shape[-1]))
    if chosen == "cam":
        result = class_activation_maps(model, x)
        pick = result.logits.argmax(1) if target is None else target.to(result.logits.device)
        rows = torch.arange(len(x), device=result.maps.device)
        return HeadMaps(result.maps[rows, pick.to(result.maps.device)], result.logits, "cam",
                        "features")
    maps, logits, where = grad_cam(model, x, target)
    return HeadMaps(upsample(maps, size), logits, "gradcam", where)
