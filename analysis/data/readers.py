"""The readers of the data-set registry: IDX (Fashion-MNIST), CIFAR-10, image folders, synthetic.

Each reader returns the official train and test splits as uint8 ``(N, C, H, W)`` tensors with
int64 labels (analysis.data.registry.RawData); image files are decoded once, into the decode
cache (analysis.data.decode_cache), never in the training loop.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..runtime import exclusive_lock
from .arrays import ImageArray, take
from .decode_cache import DecodeSpec, decode_folder, scan_folder
from .images import IMAGE_EXTENSIONS, BadImageError
from .registry import RawData, register_dataset
from .resize import DEFAULT_RESIZE, check_resize
from .splits import stratified_indices

__all__ = ["DEBIAN_FASHION_MNIST", "read_idx"]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
_ENV = "HEADSWAP_DATA"
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot")


# ---------------------------------------------------------------- IDX (MNIST-style) files
_IDX_DTYPES = {0x08: torch.uint8, 0x09: torch.int8, 0x0B: torch.int16, 0x0C: torch.int32,
               0x0D: torch.float32, 0x0E: torch.float64}


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (gzipped when the name ends in ``.gz``) into a tensor of its shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = _IDX_DTYPES[data[2]]
    body = data[4 + 4 * ndim:]
    expected = torch.Size(dims).numel() * torch.empty((), dtype=dtype).element_size()
    if len(body) != expected:
        raise ValueError(f"{str(path)!r} is truncated or corrupt: header says {dims}, "
                         f"{expected} bytes, file holds {len(body)}")
    t = torch.frombuffer(bytearray(body), dtype=dtype)
    if dtype != torch.uint8:  # IDX is big-endian
        t = torch.from_numpy(t.numpy().byteswap().copy())
    return t.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path | None:
    for sub in ("", "fashion-mnist", "FashionMNIST/raw"):
        for suffix in ("", ".gz"):
            p = directory / sub / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def _search_dirs(data_dir: str | Path | None, extra: tuple[Path, ...] = ()) -> list[Path]:
    """Where to look: an explicit ``data_dir`` only (a typo must not fall back to another copy),
    else ``$HEADSWAP_DATA`` and the ``extra`` system places."""
    if data_dir:
        return [Path(data_dir)]
    dirs = [Path(os.environ[_ENV])] if os.environ.get(_ENV) else []
    return dirs + list(extra)


def _not_in_data_dir(name: str, data_dir: str | Path, expected: str,
                     elsewhere: str = "") -> FileNotFoundError:
    """The error for an explicit ``--data-dir`` that does not hold data set ``name``: no search
    elsewhere, since a typo must not silently read another copy."""
    where = Path(data_dir)
    state = "does not exist" if not where.exists() else (
        "is not a directory" if not where.is_dir() else f"does not hold {expected}")
    return FileNotFoundError(
        f"{name} not found: --data-dir {str(where)!r} {state}; fix the path, leave out --data-dir "
        f"to search ${_ENV}{elsewhere}, or add --download to fetch it into that directory")


def _download_root(data_dir: str | Path | None) -> Path:
    if data_dir:
        return Path(data_dir)
    if os.environ.get(_ENV):
        return Path(os.environ[_ENV])
    return Path.home() / ".cache" / "headswap" / "data"


def _download_lock(root: Path) -> Any:
    """Hold ``ROOT/.download.lock`` while a data set is fetched into ``root``: the tasks of a
    study's job array share one download directory, and the first one downloads while the others
    wait and then find the files (torchvision checks them)."""
    return exclusive_lock(root, "downloading", progress=False, name=".download.lock")


@register_dataset("fashion-mnist")
def _fashion_mnist(data_dir: str | Path | None = None, download: bool = False) -> RawData:
    """Zalando's Fashion-MNIST: 60k train + 10k test, 28x28 grayscale, 10 classes."""
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    dirs = _search_dirs(data_dir, (DEBIAN_FASHION_MNIST,))
    if download:
        import torchvision

        root = _download_root(data_dir)
        with _download_lock(root):
            torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
        dirs.insert(0, root)
    for d in dirs:
        files = [_find_idx(d, s) for s in stems]
        if all(files):
            paths: list[Path] = [f for f in files if f is not None]
            xs = [read_idx(p) for p in paths]
            return RawData(xs[0].unsqueeze(1), xs[1].long(), xs[2].unsqueeze(1), xs[3].long(),
                           list(_FASHION_CLASSES), source=str(paths[0].parent))
    if data_dir and not download:
        raise _not_in_data_dir("fashion-mnist", data_dir, f"{stems[0]}[.gz] and the three other "
                               "IDX files (directly, or in fashion-mnist/ or FashionMNIST/raw/)",
                               f" and {DEBIAN_FASHION_MNIST} (apt-get install "
                               "dataset-fashion-mnist)")
    looked = ", ".join(str(d) for d in dirs) or "nowhere"
    raise FileNotFoundError(
        f"fashion-mnist not found (looked in: {looked}); get it one of these ways: "
        f"--data-dir DIR holding {stems[0]}[.gz] and the three other IDX files; "
        f"or set ${_ENV}=DIR; or apt-get install dataset-fashion-mnist "
        f"(puts it in {DEBIAN_FASHION_MNIST}); or add --download (torchvision)")


@register_dataset("cifar10")
def _cifar10(data_dir: str | Path | None = None, download: bool = False) -> RawData:
    """CIFAR-10 in torchvision's format (``cifar-10-batches-py``): 50k + 10k, 32x32 RGB."""
    import torchvision

    dirs = _search_dirs(data_dir)
    if download:
        dirs.insert(0, _download_root(data_dir))
    for d in dirs:
        if (d / "cifar-10-batches-py").is_dir() or download:
            with _download_lock(d) if download else nullcontext():
                tr = torchvision.datasets.CIFAR10(str(d), train=True, download=download)
                te = torchvision.datasets.CIFAR10(str(d), train=False, download=download)

            def to_t(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
                return (torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(),
                        torch.tensor(ds.targets, dtype=torch.long))
            (a, b), (c, e) = to_t(tr), to_t(te)
            return RawData(a, b, c, e, list(tr.classes), source=str(d))
    if data_dir:
        raise _not_in_data_dir("cifar10", data_dir, "cifar-10-batches-py/ (torchvision's format)")
    looked = ", ".join(str(d) for d in dirs) or "nowhere"
    raise FileNotFoundError(
        f"cifar10 not found (looked for cifar-10-batches-py in: {looked}); get it with "
        f"--data-dir DIR, or set ${_ENV}=DIR, or add --download (torchvision)")


# ---------------------------------------------------------------- class-per-folder trees
_SKIP_HINT = ("fix or remove it, or add --skip-bad-images (data option skip_bad_images=true) to "
              "leave out unreadable images with a warning")


def _read_tree(root: Path, classes: list[str], spec: DecodeSpec, skip_bad: bool,
               cache_dir: str | Path | None, workers: int | None) -> tuple[ImageArray, torch.Tensor]:
    """Every image under ``root/CLASS`` through the decode cache; an unreadable file stops the
    read (naming it), or with ``skip_bad`` is left out, with one warning naming the files left
    out."""
    try:
        found = decode_folder(root, classes, spec, cache_dir=cache_dir, workers=workers,
                              stop_on_bad=not skip_bad)
    except BadImageError as err:
        raise BadImageError(err.path, err.reason, _SKIP_HINT) from None
    bad = found.bad
    if bad:
        names = ", ".join(rel for rel, _ in bad[:5])
        warnings.warn(f"skipped {len(bad)} unreadable image(s) under {str(root)!r}: {names}"
                      f"{', ...' if len(bad) > 5 else ''} (first: {bad[0][1]})", stacklevel=3)
    if not len(found.labels):
        raise ValueError(f"no readable images ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}")
    return found.images, found.labels


@register_dataset("imagefolder")
def _imagefolder(data_dir: str | Path | None = None, download: bool = False, *,
                 image_size: int | None = None, gray: bool = False, test_fraction: float = 0.2,
                 skip_bad_images: bool = False, seed: int = 0, resize: str = DEFAULT_RESIZE,
                 decode_workers: int | None = None, cache_dir: str | Path | None = None,
                 skip_empty_classes: bool = False) -> RawData:
    """Any class-per-folder tree. With ``train/`` and ``test/`` (or ``val/``) subfolders those are
    the splits; otherwise a stratified ``test_fraction`` of the tree becomes the test split.

    Images are decoded once into the decode cache (analysis.data.decode_cache, in ``cache_dir``)
    at ``image_size`` px (default 64) under resize policy ``resize``, by ``decode_workers``
    processes (default: every core), and read back memory-mapped. An unreadable image is an
    error naming it, or (``skip_bad_images``) is left out with a warning. A class folder without
    images is an error naming it, or (``skip_empty_classes``) is left out with a warning."""
    if data_dir is None:
        raise ValueError("imagefolder needs --data-dir ROOT (ROOT/CLASS/IMAGE, or "
                         "ROOT/train/CLASS/IMAGE and ROOT/test/CLASS/IMAGE)")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder root {str(root)!r} is not a directory")
    size = 64 if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"imagefolder: image size must be a whole number of pixels >= 1, got "
                         f"{size!r}")
    spec = DecodeSpec(size, check_resize(resize), bool(gray))
    test_dir = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    train_dir = root / "train" if (root / "train").is_dir() and test_dir else root
    classes = _nonempty_classes(train_dir, sorted(p.name for p in train_dir.iterdir()
                                                  if p.is_dir()), skip_empty_classes)
    if len(classes) < 2:
        raise ValueError(f"imagefolder {str(train_dir)!r} needs one folder per class (found "
                         f"{len(classes)})")
    x, y = _read_tree(train_dir, classes, spec, skip_bad_images, cache_dir, decode_workers)
    counts = torch.bincount(y, minlength=len(classes)).tolist()
    unread = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if unread:  # every image of the class was unreadable and skipped
        raise ValueError(f"imagefolder class folder(s) {_names(train_dir, unread)} hold no "
                         "readable image; a class without images cannot be learned: fix the "
                         "images or remove the folder")
    if test_dir is not None:
        tx, ty = _read_tree(test_dir, classes, spec, skip_bad_images, cache_dir, decode_workers)
        return RawData(x, y, tx, ty, classes, source=str(root))
    n_test = max(len(classes), int(round(test_fraction * len(y))))
    test_idx = stratified_indices(y, n_test, seed)
    keep = torch.ones(len(y), dtype=torch.bool)
    keep[test_idx] = False
    return RawData(take(x, keep), y[keep], take(x, test_idx), y[test_idx], classes,
                   source=str(root))


def _names(root: Path, classes: Sequence[str]) -> str:
    return ", ".join(repr(str(root / c)) for c in classes)


def _nonempty_classes(root: Path, classes: list[str], skip_empty: bool) -> list[str]:
    """The class folders that hold an image; an empty one is an error naming it (a class with
    no image would still get an output, never trained), or with ``skip_empty`` is left out with
    a warning naming it."""
    empty = [c for c in classes if not scan_folder(root, [c])]
    if not empty:
        return classes
    if not skip_empty:
        raise ValueError(f"imagefolder class folder(s) {_names(root, empty)} hold no images "
                         f"({', '.join(IMAGE_EXTENSIONS)}); a class without images cannot be "
                         "learned: add images, remove the folder, or give --data-option "
                         "skip_empty_classes=true to leave it out")
    warnings.warn(f"left out {len(empty)} class folder(s) without images: {_names(root, empty)}",
                  stacklevel=3)
    return [c for c in classes if c not in empty]


# ---------------------------------------------------------------- synthetic
@register_dataset("synthetic")
def _synthetic(data_dir: str | Path | None = None, download: bool = False, *,
               num_classes: int = 10, n_train: int = 2000, n_test: int = 500,
               image_size: int = 32, channels: int = 3, seed: int = 0) -> RawData:
    """Generated, linearly separable images for tests and demos: class k has its own brightness
    and stripe period, plus noise; a small CNN learns it in a few dozen steps."""
    for key, value in (("num_classes", num_classes), ("n_train", n_train), ("n_test", n_test),
                       ("image_size", image_size), ("channels", channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"synthetic: --data-option {key} must be a whole number >= 1, got "
                             f"{value!r}")
    g = torch.Generator().manual_seed(10_000 + seed)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        level = 40.0 + 160.0 * y.float() / max(1, num_classes - 1)
        pos = torch.arange(image_size).float()
        period = 2.0 + y.float()  # stripes of period 2, 3, ... pixels
        stripes = torch.cos(2 * torch.pi * pos[None, :] / period[:, None])  # (n, W)
        img = level[:, None, None, None] + 30.0 * stripes[:, None, None, :]
        img = img + 12.0 * torch.randn(n, channels, image_size, image_size, generator=g)
        return img.clamp(0, 255).round().to(torch.uint8), y.long()
    x, y = make(n_train)
    tx, ty = make(n_test)
    return RawData(x, y, tx, ty, [f"class{k}" for k in range(num_classes)], source="generated")
