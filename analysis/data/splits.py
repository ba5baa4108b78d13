"""Splits: validation held out from the official train split, a stratified training subset,
the official test split kept whole, all as uint8: tensors in memory, or ImageArrays whose rows
stay in a memory-mapped file (a decoded image folder) until a batch is gathered. Selecting a
split copies nothing from such a file (analysis.data.arrays.take).

Resizing, augmentation and normalisation happen per batch on the training device
(analysis.data.batches), never per image in PIL.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .arrays import Images, take
from .registry import DATASETS, RawData

__all__ = ["DataSplits", "check_reader_options", "load_dataset", "stratified_indices"]


@dataclass
class DataSplits:
    """Train subset, validation (held out from train) and official test split.

    Images are uint8 ``(N, C, H, W)``: a tensor, or an ImageArray over a memory-mapped file
    (index both with ``x[idx]`` or ``x[a:b]``; select subsets with analysis.data.take).
    ``mean`` and ``std`` are per-channel statistics of the training subset on the 0..1 scale,
    used to normalise when the backbone is not pretrained. ``info["load_s"]`` is the time the
    load took (s): reading, decoding or opening the cache, splitting and the statistics.
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


def _channel_stats(x: Images, max_images: int = 10_000, max_values: int = 2**24,
                   chunk_values: int = 2**18) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (unbiased) std on the 0..1 scale of an evenly spaced sample of ``x``:
    at most ``max_images`` images and ``max_values`` pixel values (all of a 28 px data set's
    first 10,000 images' worth; a hundred or so 224 px images, plenty for six numbers), summed
    in float64 a chunk of about ``chunk_values`` values at a time: the temporaries (a float32 copy,
    its squares, float64 sums; about 20 bytes a value) stay a few MiB, which the allocator reuses
    rather than keeping tens of MiB of freed blocks in the heap."""
    n, c = len(x), int(x.shape[1])
    per_image = max(1, int(torch.Size(x.shape[1:]).numel()))
    k = max(1, min(n, max_images, max_values // per_image))
    idx = torch.arange(n) if k == n else torch.linspace(0, n - 1, k).round().long()
    step = max(1, chunk_values // per_image)
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for s in range(0, k, step):
        block = x[idx[s:s + step]].transpose(0, 1).reshape(c, -1).to(torch.float32)
        total += block.sum(1, dtype=torch.float64)
        squares += (block * block).sum(1, dtype=torch.float64)  # integers < 2**16: exact
    count = k * per_image // c
    mean = total / count
    var = (squares - count * mean * mean) / max(1, count - 1)
    std = var.clamp_min(0).sqrt() / 255.0
    return tuple((mean / 255.0).tolist()), tuple(std.clamp_min(1e-3).tolist())


def load_dataset(name: str, *, data_dir: str | Path | None = None, download: bool = False,
                 train_size: int | None = None, val_size: int | float = 0.1, seed: int = 0,
                 **options: Any) -> DataSplits:
    """Read data set ``name`` and split it: validation held out from the official train split
    (stratified, by ``seed``; an int count or a fraction), then a stratified ``train_size`` subset
    of the rest (all of it when None). The official test split is kept whole. ``options`` go to
    the reader (e.g. ``num_classes`` for ``synthetic``, ``image_size`` for ``imagefolder``)."""
    t0 = time.perf_counter()
    check_reader_options(name, options)
    raw = DATASETS[name](data_dir, download, **options)
    _check_classes(name, raw)
    n_all = len(raw.train_y)
    n_val = _count(val_size, n_all, "val-size")
    if n_val >= n_all:
        raise ValueError(f"val-size {val_size} leaves no training data: {name} has {n_all} "
                         "training images")
    val_idx = stratified_indices(raw.train_y, n_val, seed) if n_val else torch.zeros(0, dtype=torch.long)
    rest = torch.ones(n_all, dtype=torch.bool)
    rest[val_idx] = False
    pool = torch.nonzero(rest).flatten()
    if train_size is not None:
        if train_size < 1:
            raise ValueError(f"train-size must be at least 1, got {train_size}")
        if train_size > len(pool):
            raise ValueError(f"train-size {train_size} is larger than the data: {name} has "
                             f"{n_all} training images, {len(pool)} after holding out "
                             f"{n_val} for validation; use --train-size {len(pool)} or less")
        pool = pool[stratified_indices(raw.train_y[pool], train_size, seed + 1)]
    tx, ty = _whole(take(raw.train_x, pool)), raw.train_y[pool].contiguous()
    mean, std = _channel_stats(tx)
    return DataSplits(name, tx, ty, _whole(take(raw.train_x, val_idx)), raw.train_y[val_idx],
                      _whole(raw.test_x), raw.test_y.contiguous(), list(raw.classes),
                      mean, std, raw.source,
                      info={"train": len(ty), "val": n_val, "test": len(raw.test_y),
                            "image_size": list(tx.shape[-2:]), "channels": int(tx.shape[1]),
                            "load_s": round(time.perf_counter() - t0, 3)})


def _whole(x: Images) -> Images:
    """A tensor made contiguous (a small copy at most); an ImageArray as it is (its rows stay
    on disk)."""
    return x.contiguous() if isinstance(x, torch.Tensor) else x
