"""Extraction: a frozen backbone's features of many images, once, in batches.

The backbone runs in eval mode (BatchNorm on its running statistics, no dropout) under
``torch.inference_mode``, on the batch transform the run itself uses (resize, normalise, memory
format; optional fixed crops and flips for augmented views), with the run's autocast. Rows go
to a sink as they come (a tensor in memory, or a cache file being written), so extraction
never holds more than a batch. Under torchrun each rank extracts its own block
(:func:`shard_block`) and the blocks are put together by analysis.features.cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data import BatchTransform, Images, crop_params

__all__ = ["FLOAT16_MAX", "Extractor", "shard_block"]

FLOAT16_MAX = 65504.0
Crops = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class Extractor:
    """How to turn uint8 images into the features a head receives.

    ``forward`` maps a transformed batch to features (``HeadSwapped.head_input``); ``module`` is
    put in eval mode while it runs (and restored); ``transform`` is the run's batch transform.
    ``views`` > 0 extracts that many fixed augmented views per image (crop and flip from
    :func:`analysis.data.crop_params`, drawn once from ``view_seed`` and the image id).
    """

    forward: Callable[[torch.Tensor], torch.Tensor]
    module: nn.Module
    transform: BatchTransform
    batch_size: int = 256
    amp_dtype: torch.dtype | None = None
    dtype: torch.dtype = torch.float16
    views: int = 0
    view_seed: int = 0

    def row_shape(self, image: Images) -> tuple[int, ...]:
        """Shape of one image's row (``(K, *features)`` with views), from one forward."""
        with self._running():
            shape = tuple(self.forward(self.transform(image[:1])).shape[1:])
        return (self.views, *shape) if self.views else shape

    def batches(self, images: Images, ids: torch.Tensor,
                progress: Any = None) -> Iterator[torch.Tensor]:
        """Feature rows of ``images`` (uint8, ``ids`` name them for the views), in batches of
        the stored dtype on the CPU; ``progress`` (a tqdm bar or None) advances per image."""
        with self._running():
            for s in range(0, len(images), self.batch_size):
                x = images[s:s + self.batch_size]
                if self.views:
                    rows = torch.stack([self._one(x, crop_params(ids[s:s + len(x)], v,
                                                                 self.transform.pad,
                                                                 self.transform.flip,
                                                                 self.view_seed))
                                        for v in range(self.views)], dim=1)
                else:
                    rows = self._one(x, None)
                if progress is not None:
                    progress.update(len(x))
                yield rows

    def _one(self, x: torch.Tensor, crops: Crops | None) -> torch.Tensor:
        out = self.forward(self.transform(x, crops=crops)).float()
        if self.dtype == torch.float16:
            peak = float(out.abs().max()) if out.numel() else 0.0
            if not peak <= FLOAT16_MAX:
                raise ValueError(f"features reach {peak:.4g}, beyond float16's range "
                                 f"({FLOAT16_MAX:g}); use --feature-cache-dtype float32")
        return out.to(self.dtype).contiguous(memory_format=torch.contiguous_format).cpu()

    @contextlib.contextmanager
    def _running(self) -> Iterator[None]:
        """Eval mode, inference mode and the run's autocast; training flags restored after."""
        flags = {m: m.training for m in self.module.modules()}
        self.module.eval()
        device = self.transform.device
        try:
            with torch.inference_mode(), torch.autocast(
                    device.type, dtype=self.amp_dtype or torch.float32,
                    enabled=self.amp_dtype is not None):
                yield
        finally:
            for m, t in flags.items():
                m.training = t


def shard_block(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous block of ``n`` rows (blocks in rank order cover them once)."""
    per = -(-n // world_size)
    return slice(min(n, rank * per), min(n, (rank + 1) * per))
