"""Photo-like image folders, generated: for benchmarks, demos and tests of image-folder loading.

:func:`write_photo_folder` writes ``n`` JPEGs into ``ROOT/CLASS/``, class after class in turn.
Each shows an object (a Fashion-MNIST item of its class when the data set is installed, else a
blocky random shape) tinted by its class, at a random place on a smooth random background with
sensor-like noise, saved at JPEG quality 90: at 500x375 a file is about as large, and as costly
to decode, as a camera photo of that size. Image ``i`` depends only on ``i``, the size and the
seed, so a folder is the same on every machine, and files already there are not written again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import can_fork, cpu_cores, map_unordered
from .readers import DEBIAN_FASHION_MNIST, read_idx

__all__ = ["PHOTO_SOURCES", "PhotoFolder", "photo", "write_photo_folder"]

PHOTO_SOURCES = ("auto", "fashion-mnist", "shapes")
_ITEMS: dict[str, Any] = {}  # a writer's settings and objects, set before the workers fork
_NOISE: dict[str, Any] = {}  # the noise field of the last size and seed (per process)


@dataclass
class PhotoFolder:
    """What :func:`write_photo_folder` made: the folder, its class names, the number of images,
    their total size (bytes), what they show, and how many files this call wrote."""

    root: Path
    classes: list[str]
    images: int
    bytes: int
    what: str
    written: int


def _objects(source: str, n_classes: int) -> tuple[list[np.ndarray], str]:
    """Per class, a stack of 28x28 uint8 object masks, and what they are."""
    fashion = DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz"
    if source not in PHOTO_SOURCES:
        raise ValueError(f"unknown photo source {source!r}; choose from: {', '.join(PHOTO_SOURCES)}")
    if source == "fashion-mnist" and not fashion.is_file():
        raise FileNotFoundError(f"Fashion-MNIST is not installed at {str(DEBIAN_FASHION_MNIST)!r}; "
                                "use source 'shapes' (or 'auto')")
    if source != "shapes" and fashion.is_file():
        x = read_idx(fashion).numpy()
        y = read_idx(DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz").numpy()
        return [x[y == k % 10][:500] for k in range(n_classes)], "Fashion-MNIST items"
    rng = np.random.default_rng(1234)
    blocks = rng.random((n_classes, 50, 7, 7)) > 0.5  # 7x7 blocks of 4x4 px: blocky shapes
    shapes = blocks.repeat(4, axis=2).repeat(4, axis=3).astype(np.uint8) * 255
    return list(shapes), "random blocky shapes"


def _noise(width: int, height: int, seed: int) -> np.ndarray:
    """A field of sensor-like noise (int16, sd about 10) twice the image size, made once per size
    and seed; each image adds a window of it at its own offset."""
    key = (width, height, seed)
    if _NOISE.get("key") != key:
        rng = np.random.default_rng([seed, 7])
        _NOISE.update(key=key, field=rng.normal(0, 10, (2 * height, 2 * width, 3))
                      .round().astype(np.int16))
    return _NOISE["field"]


def photo(index: int, label: int, objects: Sequence[np.ndarray], width: int = 500,
          height: int = 375, seed: int = 0) -> Any:
    """Image ``index`` of class ``label`` as an RGB PIL image of ``width`` x ``height``: an
    object of the class (from ``objects[label]``), tinted by the class, on a textured field."""
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    group = objects[label]
    side = max(2, int(0.7 * min(width, height)))
    item = Image.fromarray(group[(index // len(objects)) % len(group)])
    alpha = np.asarray(item.resize((side, side), Image.Resampling.BICUBIC),
                       dtype=np.float32)[..., None] / 255.0
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    field = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8))
    img = np.asarray(field.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    tint = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53 + 80) % 256],
                    dtype=np.float32)
    box = img[top:top + side, left:left + side]
    box[:] = (box * (1 - alpha) + tint * alpha).round().astype(np.int16)
    dy, dx = rng.integers(0, height + 1), rng.integers(0, width + 1)
    img += _noise(width, height, seed)[dy:dy + height, dx:dx + width]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _size_of(index: int, size: tuple[int, int], jitter: int, seed: int) -> tuple[int, int]:
    """Width and height of image ``index``: ``size`` plus up to ``jitter`` px each."""
    if not jitter:
        return size
    extra = np.random.default_rng([seed, index, 1]).integers(0, jitter + 1, 2)
    return size[0] + int(extra[0]), size[1] + int(extra[1])


def _path(root: Path, classes: Sequence[str], index: int) -> Path:
    """``ROOT/CLASS/NNNNN.jpg``: image ``index`` is number ``index // classes`` of its class."""
    return root / classes[index % len(classes)] / f"{index // len(classes):05d}.jpg"


def _write_span(span: tuple[int, int]) -> int:
    """Write images ``start..stop`` not yet on disk (in a worker, or in this process)."""
    s = _ITEMS
    written = 0
    for i in range(*span):
        path = _path(s["root"], s["classes"], i)
        if path.is_file():
            continue
        width, height = _size_of(i, s["size"], s["jitter"], s["seed"])
        im = photo(i, i % len(s["classes"]), s["objects"], width, height, s["seed"])
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        im.save(tmp, format="JPEG", quality=s["quality"])
        os.replace(tmp, path)  # a stopped writer leaves no half-written photo
        written += 1
    return written


def write_photo_folder(root: str | Path, n: int, *, classes: int | Sequence[str] = 10,
                       size: tuple[int, int] = (500, 375), jitter: int = 0, source: str = "auto",
                       seed: int = 0, quality: int = 90,
                       workers: int | None = None) -> PhotoFolder:
    """Write ``n`` photo-like JPEGs of ``size`` (width, height; plus up to ``jitter`` px each,
    per image) into ``root/CLASS/`` (``classes``: names, or a count: ``class0``, ``class1``,
    ...), by ``workers`` processes (None: every core). ``source``: ``fashion-mnist`` objects,
    ``shapes``, or ``auto`` (Fashion-MNIST when installed). Files already there are kept."""
    names = [f"class{k}" for k in range(classes)] if isinstance(classes, int) else list(classes)
    if n < 1 or len(names) < 1 or min(size) < 1 or jitter < 0:
        raise ValueError(f"a photo folder needs n >= 1, a class, a size >= 1 px and jitter >= 0; "
                         f"got n={n}, classes={names}, size={size}, jitter={jitter}")
    root = Path(root)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    objects, what = _objects(source, len(names))
    _ITEMS.update(root=root, classes=names, objects=objects, size=tuple(size), jitter=jitter,
                  seed=seed, quality=quality)
    workers = cpu_cores() if workers is None else workers
    per = max(1, min(250, -(-n // (4 * max(1, workers)))))  # a few spans per worker
    spans = [(s, min(n, s + per)) for s in range(0, n, per)]
    if not can_fork():  # workers are forked: they inherit the objects
        workers = 1
    written = sum(map_unordered(_write_span, spans, min(workers, len(spans)), start="fork"))
    files = [_path(root, names, i) for i in range(n)]
    return PhotoFolder(root, names, n, sum(p.stat().st_size for p in files),
                       f"{what}, tinted by class, on textured backgrounds", written)
