"""Images that stay on disk: rows of a uint8 array (a memory-mapped file), gathered per batch.

An :class:`ImageArray` is a lazy selection of rows of a ``(N, C, H, W)`` uint8 array, typically
a decode cache opened memory-mapped; :class:`ImageRows` draws rows from several such sources.
Both index like a tensor (``x[idx]``, ``x[a:b]``, ``len(x)``, ``x.shape``) and gather only the
rows a batch needs, so a data set larger than memory trains within the page cache.
:func:`take` is the one place that tells them apart from a tensor when a subset is selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["ImageArray", "ImageRows", "Images", "as_rows", "take", "to_device"]


class _LazyUint8:
    """What lazy image selections share: uint8 pixels, batches gathered on the CPU."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    @property
    def device(self) -> torch.device:
        """Where a gathered batch lives: the CPU."""
        return torch.device("cpu")


class ImageArray(_LazyUint8):
    """Rows ``index`` (all when None) of the uint8 array ``base`` (``(N, C, H, W)``).

    ``x[i]`` with a tensor, list or numpy array of indices, or a slice, returns a uint8 tensor of
    those images (a copy, sized by the batch); ``x.subset(idx)`` returns another ImageArray.
    ``key`` names what ``base`` holds (a decode cache's digest of its files and settings), so
    that a digest of the data need not read the pixels; empty when unknown.
    """

    def __init__(self, base: np.ndarray, index: np.ndarray | None = None, key: str = ""):
        if base.dtype != np.uint8 or base.ndim != 4:
            raise ValueError(f"an ImageArray holds uint8 (N, C, H, W) images, got {base.dtype} "
                             f"{tuple(base.shape)}")
        self.base = base
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.key = key

    @property
    def shape(self) -> torch.Size:
        n = len(self.base) if self.index is None else len(self.index)
        return torch.Size((n, *self.base.shape[1:]))

    @property
    def nbytes(self) -> int:
        """Size of the selected images (bytes)."""
        return int(np.prod(self.shape)) * self.base.itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"ImageArray({tuple(self.shape)}, uint8, on {type(self.base).__name__})"

    def rows(self, key: Any) -> np.ndarray:
        """The rows of ``base`` that ``key`` (indices into this selection, or a slice) names."""
        picked = _positions(key, len(self))
        return picked if self.index is None else self.index[picked]

    def subset(self, key: Any) -> ImageArray:
        """Another ImageArray over the same base: the images ``key`` selects, nothing copied."""
        return ImageArray(self.base, self.rows(key), self.key)

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = self.rows(key)
        if rows.size == 0:
            return torch.empty((0, *self.base.shape[1:]), dtype=torch.uint8)
        if rows.size > 1 and np.all(rows[1:] == rows[:-1] + 1):  # a contiguous run: one read
            return torch.from_numpy(np.array(self.base[rows[0]:rows[-1] + 1]))
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted: pages read in order
        block = np.asarray(self.base[unique])
        if len(unique) != len(rows) or np.any(unique != rows):
            block = block[inverse.reshape(-1)]
        return torch.from_numpy(block)


class ImageRows(_LazyUint8):
    """Rows drawn from several image sources (uint8 tensors or ImageArrays) without reading
    them: row ``i`` is ``sources[which[i]][pos[i]]``.

    Like ImageArray, ``x[key]`` gathers a uint8 tensor of the rows ``key`` selects (a batch) and
    ``x.subset(key)`` stays lazy, so that what a feature cache covers (train, validation and
    test images of a decoded folder) is read a batch at a time, never held whole.
    """

    def __init__(self, sources: Sequence[torch.Tensor | ImageArray], which: Any, pos: Any):
        self.sources = tuple(sources)
        self.which = _as_indices(which)
        self.pos = _as_indices(pos)
        if len(self.which) != len(self.pos):
            raise ValueError(f"ImageRows needs one source per row: {len(self.which)} sources "
                             f"for {len(self.pos)} rows")
        if not self.sources:
            raise ValueError("ImageRows needs at least one image source")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.pos), *self.sources[0].shape[1:]))

    def __len__(self) -> int:
        return len(self.pos)

    def __repr__(self) -> str:
        return f"ImageRows({tuple(self.shape)}, uint8, from {len(self.sources)} sources)"

    def subset(self, key: Any) -> ImageRows:
        """The rows ``key`` selects, still unread."""
        picked = _positions(key, len(self))
        return ImageRows(self.sources, self.which[picked], self.pos[picked])

    def __getitem__(self, key: Any) -> torch.Tensor:
        picked = _positions(key, len(self))
        which, pos = self.which[picked], self.pos[picked]
        out = torch.empty((len(picked), *self.sources[0].shape[1:]), dtype=torch.uint8)
        for k in np.unique(which):
            mask = which == k
            out[torch.from_numpy(mask)] = self.sources[k][torch.from_numpy(pos[mask])].cpu()
        return out

    @classmethod
    def concat(cls, parts: Sequence[Images]) -> ImageRows:
        """The rows of ``parts`` one after another (each a tensor, ImageArray or ImageRows)."""
        rows = [as_rows(p) for p in parts]
        sources: list[torch.Tensor | ImageArray] = []
        which, pos = [], []
        for r in rows:
            which.append(r.which + len(sources))
            pos.append(r.pos)
            sources.extend(r.sources)
        return cls(sources, np.concatenate(which), np.concatenate(pos))


Images = torch.Tensor | ImageArray | ImageRows


def as_rows(images: Images) -> ImageRows:
    """``images`` as ImageRows (a tensor or ImageArray: one source, every row in order)."""
    if isinstance(images, ImageRows):
        return images
    return ImageRows([images], np.zeros(len(images), dtype=np.int64),
                     np.arange(len(images), dtype=np.int64))


def _positions(key: Any, n: int) -> np.ndarray:
    """Positions ``0..n-1`` that ``key`` (a slice, integer indices, negative ones counting from
    the end, or a boolean mask) selects in a selection of ``n`` images."""
    if isinstance(key, slice):
        span = range(n)[key]
        return np.arange(span.start, span.stop, span.step, dtype=np.int64)
    picked = _as_indices(key)
    if picked.size and (picked.min() < -n or picked.max() >= n):
        raise IndexError(f"index out of range for {n} images")
    return picked % max(1, n)


def _as_indices(key: Any) -> np.ndarray:
    """Integer indices from a tensor, list, numpy array or int; a boolean mask as its positions."""
    if isinstance(key, torch.Tensor):
        key = key.cpu().numpy()
    arr = np.asarray(key)
    if arr.dtype == np.bool_:
        return np.flatnonzero(arr)
    if not np.issubdtype(arr.dtype, np.integer):
        raise IndexError(f"images are indexed by integers, a boolean mask or a slice, got {arr.dtype}")
    return arr.reshape(-1).astype(np.int64)


def take(images: Images, idx: Any) -> Images:
    """The images ``idx`` selects: a tensor indexed in memory, or an ImageArray's lazy subset
    (nothing read from disk until a batch is gathered)."""
    if isinstance(images, ImageArray | ImageRows):
        return images.subset(idx)
    return images[idx]


def to_device(images: Images, device: torch.device, chunk: int = 256) -> torch.Tensor:
    """All of ``images`` as one uint8 tensor on ``device``, copied ``chunk`` images at a time (an
    ImageArray never lands in host memory whole)."""
    if isinstance(images, torch.Tensor):
        return images.to(device)
    out = torch.empty(tuple(images.shape), dtype=torch.uint8, device=device)
    for s in range(0, len(images), chunk):
        out[s:s + chunk] = images[s:s + chunk].to(device)
    return out
