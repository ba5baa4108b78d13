"""Small generated image folders for tests: photo-like JPEGs of assorted sizes (the generator the
benchmarks use, analysis.data.write_photo_folder) plus the file kinds decoding must convert."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from analysis.data import write_photo_folder

CLASSES = ("cat", "dog")


def photo(seed: int, width: int = 30, height: int = 20) -> Image.Image:
    """Random RGB pixels: a different image for every seed."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def make_folder(root: Path, per_class: int = 6, corrupt: bool = False) -> Path:
    """Two classes (``cat/00000.jpg``, ...) of ``per_class`` photo-like JPEGs of 24x18 to 33x27
    px, then JPEGs and PNGs of the kinds decoding converts (EXIF-rotated, CMYK, palette, 16-bit,
    RGBA), and with ``corrupt`` a truncated JPEG (``dog/zz-cut.jpg``)."""
    write_photo_folder(root, 2 * per_class, classes=CLASSES, size=(24, 18), jitter=9,
                       source="shapes", workers=1)
    exif = Image.Exif()
    exif[0x0112] = 8
    photo(90).save(root / "cat" / "rotated.jpg", exif=exif.tobytes())
    photo(91).convert("CMYK").save(root / "cat" / "cmyk.jpg")
    photo(92).convert("P").save(root / "dog" / "palette.png")
    Image.fromarray((np.arange(400).reshape(20, 20) * 150).astype(np.uint16)).save(
        root / "dog" / "deep.png")
    photo(93).convert("RGBA").save(root / "dog" / "alpha.png")
    if corrupt:
        data = (root / "cat" / "00000.jpg").read_bytes()
        (root / "dog" / "zz-cut.jpg").write_bytes(data[: len(data) // 3])
    return root
