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

__all__ = ["METHODS", "ZERO_GRADCAM", "HeadMaps", "choose_method", "flat_maps", "head_maps"]

METHODS = ("auto", "cam", "gradcam", "gradcam-abs")

# why a Grad-CAM map can be zero everywhere, and the way out
ZERO_GRADCAM = ("Grad-CAM is the ReLU of a channel-weighted sum of the features, zero wherever "
                "that sum is negative: a head whose evidence is not a positive sum of channels "
                "(e.g. flatten, which weighs every position on its own) can get a map of zeros; "
                "--method gradcam-abs draws the sum's magnitude (evidence for or against)")


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
    maps, logits, where = grad_cam(model, x, target, relu=chosen == "gradcam")
    return HeadMaps(upsample(maps, size), logits, chosen, where)


def flat_maps(maps: torch.Tensor) -> torch.Tensor:
    """Which maps (B, H, W) are constant (zero included): they say nothing about where."""
    flat = maps.flatten(1)
    spread = flat.amax(1) - flat.amin(1)
    return spread <= 1e-12 * flat.abs().amax(1).clamp_min(1.0)
