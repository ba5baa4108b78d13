"""Small generated image folders for tests: a class per folder, assorted shapes and file kinds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def photo(seed: int, width: int = 30, height: int = 20) -> Image.Image:
    """Random RGB pixels: a different image for every seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_folder(root: Path, per_class: int = 6, corrupt: bool = False) -> Path:
    """Two classes of JPEGs and PNGs of assorted shapes and kinds (EXIF-rotated, CMYK, palette,
    16-bit, RGBA), and with ``corrupt`` a truncated JPEG."""
    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            photo(10 * k + i, 24 + 3 * i, 18 + 2 * k).save(root / cls / f"{i:02d}.jpg")
    exif = Image.Exif()
    exif[0x0112] = 8
    photo(90).save(root / "cat" / "rotated.jpg", exif=exif.tobytes())
    photo(91).convert("CMYK").save(root / "cat" / "cmyk.jpg")
    photo(92).convert("P").save(root / "dog" / "palette.png")
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(
        root / "dog" / "deep.png")
    photo(93).convert("RGBA").save(root / "dog" / "alpha.png")
    if corrupt:
        data = (root / "cat" / "00.jpg").read_bytes()
        (root / "dog" / "zz-cut.jpg").write_bytes(data[: len(data) // 3])
    return root
