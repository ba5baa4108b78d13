"""Splits: validation held out from the official train split, a stratified training subset and
the official test split, as uint8 tensors or ImageArrays (analysis.data.arrays) over a
memory-mapped file; selecting a split copies nothing from such a file.

Every split remembers which official images it holds (``DataSplits.ids``), so one feature
cache serves every seed's subset. The official splits are read once per process (the last data
set read is kept), since a study reads the same data for each of its runs.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arrays import ImageArray, ImageRows, Images, take
from .registry import DATASETS, RawData
from .subsets import ClassRef, classes_label, select_classes

__all__ = ["DataSplits", "check_reader_options", "load_dataset", "stratified_indices"]


@dataclass
class DataSplits:
    """Train subset, validation (held out from train) and official test split.

    Images are uint8 ``(N, C, H, W)``: a tensor, or an ImageArray over a memory-mapped file
    (index both with ``x[idx]`` or ``x[a:b]``; select subsets with analysis.data.take).
    ``mean`` and ``std`` are per-channel statistics of the training subset on the 0..1 scale,
    used to normalise a from-scratch run; ``pool_mean`` / ``pool_std`` those of the whole pool
    the subsets are drawn from (the same for every seed), used under a frozen backbone.
    ``ids`` holds, per split (``train``, ``val``, ``test``), the indices of its images in the
    official train (train, val) or test split; ``fingerprint`` is a digest of the official
    splits' pixels and labels (what a feature cache is keyed by). ``info["load_s"]`` is the
    time the load took (s): reading, decoding or opening the cache, splitting and the statistics.
    """

    name: str
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    test_x: Images
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    pool_mean: tuple[float, ...] = ()
    pool_std: tuple[float, ...] = ()
    ids: dict[str, torch.Tensor] = field(default_factory=dict)
    fingerprint: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_x.shape[-2]), int(self.train_x.shape[-1])


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` indices with the class proportions of ``labels`` (largest remainders), by seed.

    Deterministic for a given seed; sorted so that the subset keeps the data's order.
    """
    if n > len(labels):
        raise ValueError(f"asked for {n} samples but only {len(labels)} are available")
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * n / len(labels)
    take = exact.floor().long()
    short = n - int(take.sum())
    if short:
        order = torch.argsort(exact - take.double(), descending=True, stable=True)
        take[order[:short]] += 1
    picked = []
    for c, k in zip(classes.tolist(), take.tolist(), strict=True):
        idx = torch.nonzero(labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.sort(torch.cat(picked)).values


def _count(size: int | float, total: int, what: str) -> int:
    """A count from an int, or from a fraction of ``total`` when ``size`` is a float below 1."""
    if isinstance(size, float) and size < 1:
        if size <= 0:
            raise ValueError(f"{what} as a fraction must be in (0, 1), got {size}")
        return max(1, int(round(size * total)))
    if int(size) != size or size < 0:
        raise ValueError(f"{what} must be a whole number >= 0 or a fraction in (0, 1), got {size}")
    return int(size)


def check_reader_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError for an unknown data set, or an option its reader does not take (before
    any data is read), listing the choices."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose from: {', '.join(DATASETS)}")
    accepted = [k for k, prm in inspect.signature(DATASETS[name]).parameters.items()
                if prm.kind == prm.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options: "
                         f"{', '.join(accepted) or 'none'}")


def _check_classes(name: str, raw: RawData) -> None:
    """Classification needs two classes or more, in the data itself, not only in its names."""
    present = int(torch.unique(raw.train_y).numel()) if len(raw.train_y) else 0
    if min(present, len(raw.classes)) < 2:
        raise ValueError(
            f"{name} has {present} class(es) in its training images ({len(raw.classes)} named: "
            f"{', '.join(map(str, raw.classes[:5])) or 'none'}); classification needs at least 2 "
            "(synthetic: --data-option num_classes=2 or more; imagefolder: a folder per class)")


def _sample(n: int, per_image: int, max_images: int, max_values: int) -> torch.Tensor:
    """Evenly spaced indices of at most ``max_images`` of ``n`` images and ``max_values`` pixel
    values (all of them when they fit): the same for the same ``n``, whatever the seed."""
    k = max(1, min(n, max_images, max_values // per_image))
    return torch.arange(n) if k == n else torch.linspace(0, n - 1, k).round().long()


def _sums(x: Images, idx: torch.Tensor,
          chunk_values: int = 2**20) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel sums and sums of squares (float64, 0..255 scale) of images ``idx`` of ``x``,
    and the number of values per channel: exact, from a histogram of the 256 values per channel
    (numpy's bincount, no float copy of the pixels), a chunk of about ``chunk_values`` values
    at a time (a few MiB of temporaries)."""
    c = int(x.shape[1])
    per_image = max(1, int(torch.Size(x.shape[1:]).numel()))
    step = max(1, chunk_values // per_image)
    hist = np.zeros((c, 256), dtype=np.int64)
    for s in range(0, len(idx), step):
        block = x[idx[s:s + step]].numpy()
        for k in range(c):
            hist[k] += np.bincount(block[:, k].reshape(-1), minlength=256)
    values = np.arange(256, dtype=np.int64)
    total, squares = hist @ values, hist @ (values * values)  # int64: exact
    return (torch.from_numpy(total.astype(np.float64)),
            torch.from_numpy(squares.astype(np.float64)), len(idx) * per_image // c)


def _channel_stats(x: Images, max_images: int = 10_000,
                   max_values: int = 2**24) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std on the 0..1 scale of an evenly spaced sample of ``x``:
    at most ``max_images`` images and ``max_values`` pixel values (all of a 28 px data set's
    first 10,000 images' worth; a hundred or so 224 px images, plenty for six numbers)."""
    per_image = max(1, int(torch.Size(x.shape[1:]).numel()))
    total, squares, count = _sums(x, _sample(len(x), per_image, max_images, max_values))
    mean = total / count
    var = (squares - count * mean * mean) / max(1, count - 1)
    std = var.clamp_min(0).sqrt() / 255.0
    return tuple((mean / 255.0).tolist()), tuple(std.clamp_min(1e-3).tolist())


def _pool_stats(x: Images, max_values: int = 2**27) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of every image of ``x``, or of an evenly spaced
    sample of them when they hold more than ``max_values`` pixel values (Fashion-MNIST's 60,000
    fit; about 900 images of 224 px do): reading a decoded folder of any size takes a second."""
    per_image = max(1, int(torch.Size(x.shape[1:]).numel()))
    total, squares, count = _sums(x, _sample(len(x), per_image, len(x), max_values))
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return tuple((mean / 255.0).tolist()), tuple((std / 255.0).clamp_min(1e-3).tolist())


def _fingerprint(raw: RawData) -> str:
    """Digest of the official splits: pixels (or, for images in a decode cache, the cache's own
    digest of the files and decode settings, and the rows taken), labels and shapes (blake2b,
    32 hex digits)."""
    h = hashlib.blake2b(digest_size=16)
    for t in (raw.train_x, raw.train_y, raw.test_x, raw.test_y):
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        if isinstance(t, torch.Tensor):
            h.update(t.contiguous().numpy().data)
        else:
            _digest_rows(h, t)
    return h.hexdigest()


def _digest_rows(h: Any, x: ImageArray | ImageRows, chunk: int = 256) -> None:
    """Feed ``x`` into digest ``h``: its key and row numbers when it has a key, else its pixels
    a chunk of images at a time."""
    if isinstance(x, ImageArray) and x.key:
        h.update(x.key.encode())
        h.update(x.rows(slice(None)).tobytes())
        return
    for s in range(0, len(x), chunk):
        h.update(x[s:s + chunk].numpy().data)


_LAST_READ: dict[Any, tuple[RawData, str]] = {}
_POOLS: dict[tuple[str, int], torch.Tensor] = {}
_POOL_STATS: dict[tuple[str, int | None], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _read(name: str, data_dir: str | Path | None, download: bool,
          options: dict[str, Any]) -> tuple[RawData, str]:
    """The reader's output and its fingerprint; the last data set read is kept, so the runs of a
    study read their data once (a data set on disk is not expected to change during a process)."""
    key = (name, id(DATASETS[name]), str(data_dir), download, os.environ.get("HEADSWAP_DATA"),
           repr(sorted(options.items())))  # a reader registered again under the name reads anew
    if key not in _LAST_READ:
        raw = DATASETS[name](data_dir, download, **options)
        _LAST_READ.clear()
        _LAST_READ[key] = (raw, _fingerprint(raw))
    return _LAST_READ[key]


def load_dataset(name: str, *, data_dir: str | Path | None = None, download: bool = False,
                 train_size: int | None = None, val_size: int | float = 0.1, seed: int = 0,
                 pool_size: int | None = None, classes: Sequence[ClassRef] = (),
                 **options: Any) -> DataSplits:
    """Read data set ``name`` and split it: validation held out from the official train split
    (stratified, by ``seed``; an int count or a fraction), then a stratified ``train_size`` subset
    of the rest (all of it when None). The official test split is kept whole. ``options`` go to
    the reader (e.g. ``num_classes`` for ``synthetic``, ``image_size`` for ``imagefolder``).

    ``pool_size`` first cuts the official train split to a stratified subset of that many images,
    the same for every seed (seed 0), from which validation and the training subset are then
    drawn: a few seeds then touch few distinct images (and a feature cache holds only those).
    ``classes`` (indices or names) keeps those classes only, relabelled 0..k-1 in that order
    (analysis.data.subsets), before anything is split: ``ids`` then index the subset's splits,
    and the fingerprint names the subset too."""
    t0 = time.perf_counter()
    check_reader_options(name, options)
    raw, fingerprint = _read(name, data_dir, download, options)
    if classes:
        raw = select_classes(raw, classes)
        fingerprint = hashlib.blake2b(f"{fingerprint}:{classes_label(classes, 10**6)}".encode(),
                                      digest_size=16).hexdigest()
    _check_classes(name, raw)
    whole = _pool(raw, pool_size, name, fingerprint)
    val_idx, pool = _split_indices(raw.train_y, whole, name, val_size=val_size,
                                   train_size=train_size, seed=seed, pool_size=pool_size)
    n_val = len(val_idx)
    tx, ty = _whole(take(raw.train_x, pool)), raw.train_y[pool].contiguous()
    mean, std = _channel_stats(tx)
    stats_key = (fingerprint, pool_size)
    if stats_key not in _POOL_STATS:
        _POOL_STATS.clear()
        _POOL_STATS[stats_key] = _pool_stats(raw.train_x if pool_size is None
                                             else take(raw.train_x, whole))
    pool_mean, pool_std = _POOL_STATS[stats_key]
    info = {"train": len(ty), "val": n_val, "test": len(raw.test_y),
            "image_size": list(tx.shape[-2:]), "channels": int(tx.shape[1])}
    if pool_size is not None:
        info["pool"] = pool_size
    info["load_s"] = round(time.perf_counter() - t0, 3)
    return DataSplits(name, tx, ty, _whole(take(raw.train_x, val_idx)), raw.train_y[val_idx],
                      _whole(raw.test_x), raw.test_y.contiguous(), list(raw.classes),
                      mean, std, raw.source, info=info, pool_mean=pool_mean, pool_std=pool_std,
                      ids={"train": pool, "val": val_idx,
                           "test": torch.arange(len(raw.test_y))},
                      fingerprint=fingerprint)


def _split_indices(train_y: torch.Tensor, whole: torch.Tensor, name: str, *,
                   val_size: int | float, train_size: int | None, seed: int,
                   pool_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation (stratified, by ``seed``) from the pool ``whole``, then the training subset
    (stratified, by ``seed + 1``) from the rest: their indices into the official train split."""
    n_all = len(whole)
    n_val = _count(val_size, n_all, "val-size")
    if n_val >= n_all:
        raise ValueError(f"val-size {val_size} leaves no training data: {name} has {n_all} "
                         "training images" + (f" in its pool of {pool_size}" if pool_size else ""))
    val_idx = (whole[stratified_indices(train_y[whole], n_val, seed)] if n_val
               else torch.zeros(0, dtype=torch.long))
    rest = torch.zeros(len(train_y), dtype=torch.bool)
    rest[whole] = True
    rest[val_idx] = False
    pool = torch.nonzero(rest).flatten()
    if train_size is not None:
        if train_size < 1:
            raise ValueError(f"train-size must be at least 1, got {train_size}")
        if train_size > len(pool):
            raise ValueError(f"train-size {train_size} is larger than the data: {name} has "
                             f"{n_all} training images, {len(pool)} after holding out "
                             f"{n_val} for validation; use --train-size {len(pool)} or less")
        pool = pool[stratified_indices(train_y[pool], train_size, seed + 1)]
    return val_idx, pool


def _whole(x: Images) -> Images:
    """A tensor made contiguous (a small copy at most); an ImageArray as it is (its rows stay
    on disk)."""
    return x.contiguous() if isinstance(x, torch.Tensor) else x


def _pool(raw: RawData, pool_size: int | None, name: str, fingerprint: str) -> torch.Tensor:
    """Indices of the official train split that validation and training are drawn from."""
    n = len(raw.train_y)
    if pool_size is None:
        return torch.arange(n)
    if pool_size < 2 or pool_size > n:
        raise ValueError(f"pool-size must be between 2 and the {n} training images of {name}, "
                         f"got {pool_size}")
    key = (fingerprint, pool_size)
    if key not in _POOLS:
        _POOLS.clear()
        _POOLS[key] = stratified_indices(raw.train_y, pool_size, seed=0)
    return _POOLS[key]
