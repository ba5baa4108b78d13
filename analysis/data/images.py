"""Decoding one image file: a uint8 array, or an error that names the file.

Readers of image files (``imagefolder``) decode each file through :func:`decode_pixels` (or its
tensor twin :func:`decode_image`), once: the EXIF orientation is applied, CMYK, palette, 16-bit
and alpha images are converted to the colour mode (transparent areas become black, as letterbox
padding), JPEGs are decoded in draft mode (at 1/2, 1/4 or 1/8 scale) when the target is at most
half the source, and the image is fitted to a square by a resize policy (analysis.data.resize).
A corrupt, truncated or foreign file raises :class:`BadImageError` with its path and the
decoder's reason, so a caller can stop with that message or skip the file with a warning.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surgery import one_line

from .resize import DEFAULT_RESIZE, check_resize, draft_request, fit_image

__all__ = ["IMAGE_EXTENSIONS", "BadImageError", "decode_image", "decode_pixels"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
# what PIL raises on corrupt, truncated or foreign data (its plugins are not consistent)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, ZeroDivisionError,
                  struct.error)


class BadImageError(ValueError):
    """An image file that cannot be decoded: ``path`` and the decoder's ``reason``."""

    def __init__(self, path: str | Path, reason: str, hint: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot decode image {str(path)!r}: {reason}"
                         + (f"; {hint}" if hint else ""))


def _draft(im: Any, size: int, policy: str) -> None:
    """Let a JPEG decode at a reduced scale that still covers the target (no-op otherwise)."""
    if im.format != "JPEG":
        return
    width, height = im.size
    if im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
        w, h = draft_request(height, width, size, policy)
        im.draft(None, (h, w))
    else:
        im.draft(None, draft_request(width, height, size, policy))


def _colour(im: Any, gray: bool) -> Any:
    """``im`` in mode ``L`` (``gray``) or ``RGB``: 16-bit scaled (not clipped) to 8 bits, palette
    expanded, alpha composited over black, CMYK and other modes converted by PIL."""
    from PIL import Image

    if im.mode in _SIXTEEN_BIT:
        wide = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in _ALPHA:
        rgba = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    if im.mode == "CMYK" and gray:
        im = im.convert("RGB")
    target = "L" if gray else "RGB"
    return im if im.mode == target else im.convert(target)


def decode_pixels(path: str | Path, size: int, gray: bool = False,
                  resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """The image at ``path`` as a uint8 ``(C, size, size)`` array (C = 1 if ``gray``, else 3),
    upright (EXIF orientation) and fitted by resize policy ``resize``. Raises
    :class:`BadImageError` naming the file when it cannot be decoded (corrupt or truncated data,
    not an image, a decompression bomb)."""
    from PIL import Image, ImageOps

    check_resize(resize)
    try:
        with Image.open(path) as im:  # lazy: decoding happens in transpose / convert / resize
            _draft(im, size, resize)
            upright = ImageOps.exif_transpose(im)
            fitted = fit_image(_colour(upright, gray), size, resize)
            pixels = np.asarray(fitted, dtype=np.uint8)
    except (*_DECODE_ERRORS, Image.DecompressionBombError) as err:
        raise BadImageError(path, one_line(err)) from None
    if pixels.ndim == 2:
        return pixels[None].copy()
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def decode_image(path: str | Path, size: int, gray: bool = False,
                 resize: str = DEFAULT_RESIZE) -> torch.Tensor:
    """:func:`decode_pixels` as a uint8 ``(C, size, size)`` tensor."""
    return torch.from_numpy(decode_pixels(path, size, gray, resize))
