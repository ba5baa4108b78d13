"""Decoding one image file: a uint8 tensor, or an error that names the file.

Readers of image files (``imagefolder``) decode each file through :func:`decode_image`, once at
load time; a corrupt, truncated or foreign file raises :class:`BadImageError` with its path and
the decoder's reason, so a caller can stop with that message or skip the file with a warning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from surgery import one_line

__all__ = ["IMAGE_EXTENSIONS", "BadImageError", "decode_image"]

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


class BadImageError(ValueError):
    """An image file that cannot be decoded: ``path`` and the decoder's ``reason``."""

    def __init__(self, path: str | Path, reason: str, hint: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot decode image {str(path)!r}: {reason}"
                         + (f"; {hint}" if hint else ""))


def decode_image(path: str | Path, size: int, gray: bool = False) -> torch.Tensor:
    """The image at ``path`` as a uint8 ``(C, size, size)`` tensor (C = 1 if ``gray``, else 3),
    resized bilinearly. Raises :class:`BadImageError` naming the file when it cannot be decoded
    (corrupt or truncated data, not an image, a decompression bomb)."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # lazy: convert() decodes, and fails on truncated data
            im = im.convert("L" if gray else "RGB").resize((size, size), Image.Resampling.BILINEAR)
            data = im.tobytes()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(path, one_line(err)) from None
    pixels = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return pixels.reshape(size, size, -1).permute(2, 0, 1)
