"""Splits: validation held out from the official train split, a stratified training subset,
the official test split kept whole, all in memory as uint8.

Every split remembers which images of the official splits it holds (``DataSplits.ids``), so a
feature cache built once over those images (analysis.features) serves every seed's subset. The
official splits are read once per process (the last data set read is kept), since a study reads
the same data for each of its runs.

Resizing, augmentation and normalisation happen per batch on the training device
(analysis.data.batches), never per image in PIL.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .registry import DATASETS, RawData
from .subsets import ClassRef, classes_label, select_classes

__all__ = ["DataSplits", "check_reader_options", "load_dataset", "stratified_indices"]


@dataclass
class DataSplits:
    """Train subset, validation (held out from train) and official test split, in memory.

    ``mean`` and ``std`` are per-channel statistics of the training subset on the 0..1 scale,
    used to normalise a from-scratch run; ``pool_mean`` / ``pool_std`` those of the whole pool
    the subsets are drawn from (the same for every seed), used under a frozen backbone.
    ``ids`` holds, per split (``train``, ``val``, ``test``), the indices of its images in the
    official train (train, val) or test split; ``fingerprint`` is a digest of the official
    splits' pixels and labels (what a feature cache is keyed by).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
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


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = x[: 10_000].transpose(0, 1).reshape(x.shape[1], -1).double() / 255.0
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())


def _pool_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of every image of ``x``, summed in chunks."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for s in range(0, len(x), chunk):
        flat = x[s:s + chunk].transpose(0, 1).reshape(c, -1).double() / 255.0
        total += flat.sum(1)
        squares += (flat * flat).sum(1)
    n = max(1, x[:1].numel() // c * len(x))
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0).sqrt().clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _fingerprint(raw: RawData) -> str:
    """Digest of the official splits: pixels, labels and shapes (blake2b, 32 hex digits)."""
    h = hashlib.blake2b(digest_size=16)
    for t in (raw.train_x, raw.train_y, raw.test_x, raw.test_y):
        t = t.contiguous()
        h.update(repr((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.numpy().data)
    return h.hexdigest()


_LAST_READ: dict[Any, tuple[RawData, str]] = {}
_POOLS: dict[tuple[str, int], torch.Tensor] = {}
_POOL_STATS: dict[tuple[str, int | None], tuple[tuple[float, ...], tuple[float, ...]]] = {}


def _read(name: str, data_dir: str | Path | None, download: bool,
          options: dict[str, Any]) -> tuple[RawData, str]:
    """The reader's output and its fingerprint; the last data set read is kept, so the runs of a
    study read their data once (a data set on disk is not expected to change during a process)."""
    key = (name, str(data_dir), download, os.environ.get("HEADSWAP_DATA"),
           repr(sorted(options.items())))
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
    check_reader_options(name, options)
    raw, fingerprint = _read(name, data_dir, download, options)
    if classes:
        raw = select_classes(raw, classes)
        fingerprint = hashlib.blake2b(f"{fingerprint}:{classes_label(classes, 10**6)}".encode(),
                                      digest_size=16).hexdigest()
    _check_classes(name, raw)
    whole = _pool(raw, pool_size, name, fingerprint)
    n_all = len(whole)
    n_val = _count(val_size, n_all, "val-size")
    if n_val >= n_all:
        raise ValueError(f"val-size {val_size} leaves no training data: {name} has {n_all} "
                         "training images" + (f" in its pool of {pool_size}" if pool_size else ""))
    val_idx = (whole[stratified_indices(raw.train_y[whole], n_val, seed)] if n_val
               else torch.zeros(0, dtype=torch.long))
    rest = torch.zeros(len(raw.train_y), dtype=torch.bool)
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
        pool = pool[stratified_indices(raw.train_y[pool], train_size, seed + 1)]
    tx, ty = raw.train_x[pool].contiguous(), raw.train_y[pool].contiguous()
    mean, std = _channel_stats(tx)
    stats_key = (fingerprint, pool_size)
    if stats_key not in _POOL_STATS:
        _POOL_STATS.clear()
        _POOL_STATS[stats_key] = _pool_stats(raw.train_x if pool_size is None
                                             else raw.train_x[whole])
    pool_mean, pool_std = _POOL_STATS[stats_key]
    info = {"train": len(ty), "val": n_val, "test": len(raw.test_y),
            "image_size": list(tx.shape[-2:]), "channels": int(tx.shape[1])}
    if pool_size is not None:
        info["pool"] = pool_size
    return DataSplits(name, tx, ty, raw.train_x[val_idx].contiguous(), raw.train_y[val_idx],
                      raw.test_x.contiguous(), raw.test_y.contiguous(), list(raw.classes),
                      mean, std, raw.source, info=info, pool_mean=pool_mean, pool_std=pool_std,
                      ids={"train": pool, "val": val_idx,
                           "test": torch.arange(len(raw.test_y))},
                      fingerprint=fingerprint)


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
