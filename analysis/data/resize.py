"""Resize policies: how an image of any shape becomes a square of the training size.

``shorter-crop`` (the default) scales the shorter side to the target and keeps the centre square,
as timm's eval transform does (``Resize(size)`` then ``CenterCrop(size)``, here with crop
fraction 1); ``squash`` scales each side to the target, changing the aspect ratio (what image
folders did before the policy existed); ``pad`` scales the longer side to the target and
letterboxes the rest with black. All three resample bilinearly with PIL's antialiasing filter.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_RESIZE", "RESIZE_POLICIES", "check_resize", "draft_request", "fit_image"]

RESIZE_POLICIES = ("shorter-crop", "squash", "pad")
DEFAULT_RESIZE = "shorter-crop"


def check_resize(policy: str) -> str:
    """``policy`` itself, or a ValueError naming it and the choices."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; choose --resize from: "
                         f"{', '.join(RESIZE_POLICIES)}")
    return policy


def _scaled(width: int, height: int, size: int, policy: str) -> tuple[int, int]:
    """The size (px) the whole source would be scaled to before cropping or padding."""
    if policy == "squash":
        return size, size
    grow = max if policy == "shorter-crop" else min
    scale = grow(size / width, size / height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draft_request(width: int, height: int, size: int, policy: str) -> tuple[int, int]:
    """The smallest source size (px) that still resizes down to ``size`` under ``policy``: JPEG
    draft mode may decode at 1/2, 1/4 or 1/8 scale as long as the result stays at least this
    large, which it can only when the target is at most half the source."""
    if policy == "squash":
        return min(width, size), min(height, size)
    w, h = _scaled(width, height, size, policy)
    return min(width, w), min(height, h)


def _centre_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The centred square of side ``min(width, height)``, in source pixels."""
    side = min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def fit_image(im: Any, size: int, policy: str) -> Any:
    """``im`` (a PIL image) as a ``size`` x ``size`` image under resize ``policy``.

    ``shorter-crop`` resamples only the centre square of the source (PIL's ``box``), which is the
    same as scaling the shorter side to ``size`` and cropping, without resampling the margins.
    """
    from PIL import Image

    bilinear = Image.Resampling.BILINEAR
    width, height = im.size
    if policy == "squash":
        return im.resize((size, size), bilinear)
    if policy == "shorter-crop":
        return im.resize((size, size), bilinear, box=_centre_box(width, height))
    check_resize(policy)
    w, h = _scaled(width, height, size, policy)
    canvas = Image.new(im.mode, (size, size))  # black, as the padding of a letterbox
    canvas.paste(im.resize((w, h), bilinear), ((size - w) // 2, (size - h) // 2))
    return canvas
