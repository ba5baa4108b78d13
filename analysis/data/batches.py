"""Batches from in-memory uint8 tensors: a resumable, shardable sampler and device transforms.

The sampler's order is a pure function of (seed, epoch), so a run resumed at step ``k`` of an
epoch sees exactly the batches an uninterrupted run would, and ``rank`` / ``world_size`` give each
DistributedDataParallel process its own shard. :class:`BatchTransform` turns a uint8 batch into
the model's input on the training device (resize, random crop, flip, normalise, grayscale to
RGB) with batched tensor ops: no per-image PIL in the hot loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["EpochSampler", "BatchTransform", "crop_params", "iterate"]


@dataclass
class EpochSampler:
    """Shuffled batches of indices into ``n`` samples, fixed by ``seed`` and the epoch.

    Every rank draws the same permutation and takes its own stride of it (``rank::world_size``),
    padded by wrapping so that all ranks run the same number of steps (as DistributedSampler).
    ``drop_last`` drops a final partial batch (keeps BatchNorm away from batches of one).
    ``min_steps``: an epoch has at least this many steps; when one pass over the data gives
    fewer (a small training set), the epoch goes on with further passes, each its own
    permutation (the first pass is the permutation an epoch without the floor draws).
    """

    n: int
    batch_size: int
    seed: int = 0
    shuffle: bool = True
    drop_last: bool = True
    rank: int = 0
    world_size: int = 1
    min_steps: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.batch_size < 1:
            raise ValueError(f"need at least one sample and batch size >= 1 (n={self.n}, "
                             f"batch_size={self.batch_size})")

    def _per_rank(self) -> int:
        return math.ceil(self.n / self.world_size)

    @property
    def steps_per_pass(self) -> int:
        """Steps of one pass over the data (per rank)."""
        per = self._per_rank()
        if self.drop_last and per >= self.batch_size:
            return per // self.batch_size
        return math.ceil(per / self.batch_size)

    def __len__(self) -> int:
        """Steps per epoch (per rank): one pass, or ``min_steps`` when that is more."""
        return max(self.steps_per_pass, self.min_steps)

    def indices(self, epoch: int, pass_index: int = 0) -> torch.Tensor:
        """This rank's sample indices for pass ``pass_index`` of ``epoch`` (0-based), in order."""
        if self.shuffle:
            seed = self.seed * 1_000_003 + epoch
            if pass_index:
                seed = (seed * 1_000_033 + pass_index) % 2**63
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(self.n)
        total = self._per_rank() * self.world_size
        if total > self.n:
            order = torch.cat([order, order[: total - self.n]])
        return order[self.rank::self.world_size]

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Index batches of ``epoch`` from step ``start`` on (to resume mid-epoch)."""
        per_pass, b = self.steps_per_pass, self.batch_size
        pass_index, idx = -1, torch.empty(0, dtype=torch.long)
        for step in range(start, len(self)):
            if step // per_pass != pass_index:
                pass_index = step // per_pass
                idx = self.indices(epoch, pass_index)
            within = step % per_pass
            yield idx[within * b:(within + 1) * b]


def iterate(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[slice]:
    """Contiguous evaluation slices: this rank's share of ``range(n)``, each sample exactly once."""
    per = math.ceil(n / world_size)
    lo, hi = rank * per, min(n, (rank + 1) * per)
    for s in range(lo, hi, batch_size):
        yield slice(s, min(hi, s + batch_size))


def crop_params(ids: torch.Tensor, view: int, pad: int, flip: bool = True, seed: int = 0
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed crop offsets and flips of view ``view`` of the images ``ids``: a function of
    (seed, image id, view) only, so a cache holding more images draws the same view of each.

    A counter-based hash (splitmix64) of the three numbers, not a generator's stream."""
    z = (ids.to(torch.int64) * 0x9E3779B1 + view * 0x85EBCA77 + seed * 0xC2B2AE3D + 0x165667B1)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9 - 2**64), (27, 0x94D049BB133111EB - 2**64)):
        z = (z ^ _shift_right(z, shift)) * mult
    z = z ^ _shift_right(z, 31)
    span = 2 * pad + 1
    oy = _shift_right(z, 1) % span
    ox = _shift_right(z, 21) % span
    flips = (_shift_right(z, 41) & 1).bool() if flip else torch.zeros(len(ids), dtype=torch.bool)
    return oy, ox, flips


def _shift_right(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical (unsigned) right shift of int64 values."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def _nchw_strides(shape: torch.Size) -> tuple[int, ...]:
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


class BatchTransform:
    """uint8 ``(B, C, h, w)`` -> normalised float ``(B, in_chans, H, W)`` on ``device``.

    Training batches also get a random crop (zero padding of ``pad`` pixels at the output size,
    as torchvision's ``RandomCrop(padding=pad)``) and a horizontal flip, drawn from the
    generator passed in so that a resumed run draws the same ones; ``crops`` gives them instead
    (fixed views of a feature cache: see :func:`crop_params`). Grayscale data feeds a
    3-channel model by repeating the channel; RGB data feeds a 1-channel model by averaging.
    """

    def __init__(self, size: int | Sequence[int], in_chans: int, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str = "cpu", pad: int | None = None,
                 flip: bool = True, augment: bool = True, channels_last: bool = False):
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.in_chans = in_chans
        self.device = torch.device(device)
        self.pad = max(1, self.size[0] // 8) if pad is None else pad
        self.flip = flip
        self.augment = augment
        self.channels_last = channels_last
        # x_norm = x * scale + shift, with x in 0..255: one fused multiply-add
        m = torch.tensor(mean, dtype=torch.float32)
        s = torch.tensor(std, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * s)).view(1, -1, 1, 1).to(self.device)
        self.shift = (-m / s).view(1, -1, 1, 1).to(self.device)

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: torch.Generator | None = None,
                 crops: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        c = x.shape[1]
        if c == 3 and self.in_chans == 1:
            x = x.float().mean(1, keepdim=True)
            c = 1
        x = x.float()
        if tuple(x.shape[-2:]) != self.size:
            # antialias: needed when shrinking; when enlarging it gives plain bilinear, faster
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False,
                              antialias=True)
        if crops is not None:
            x = self._crop_flip(x, *crops)
        elif train and self.augment and (self.pad or self.flip):
            x = self._crop_flip(x, *self.draw_crops(len(x), generator))
        scale, shift = self.scale, self.shift
        if scale.shape[1] != c:  # stats given for the model's channels, data has fewer/more
            scale, shift = scale.mean(1, keepdim=True), shift.mean(1, keepdim=True)
        x = torch.addcmul(shift, x, scale)
        if c == 1 and self.in_chans == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        # with one channel, NHWC strides also pass as contiguous, and convolutions would then
        # pick channels-last on their own: give NCHW strides when NCHW is asked for
        if x.stride() != _nchw_strides(x.shape):
            x = x.clone(memory_format=torch.contiguous_format)
        return x

    def draw_crops(self, b: int, g: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Crop offsets (rows, columns) in ``0..2 * pad`` and flips for ``b`` images."""
        p = self.pad
        oy = torch.randint(0, 2 * p + 1, (b,), generator=g)
        ox = torch.randint(0, 2 * p + 1, (b,), generator=g)
        flip = (torch.randint(0, 2, (b,), generator=g).bool() if self.flip
                else torch.zeros(b, dtype=torch.bool))
        return oy, ox, flip

    def _crop_flip(self, x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                   flip: torch.Tensor) -> torch.Tensor:
        """One gather on the flattened padded batch does every sample's crop offset and flip."""
        b, c, h, w = x.shape
        p = self.pad
        if p:
            x = F.pad(x, (p, p, p, p))
        hp, wp = h + 2 * p, w + 2 * p
        ar_w = torch.arange(w)
        rows = oy[:, None] + torch.arange(h)[None, :]                       # (B, H)
        cols = torch.where(flip[:, None], ox[:, None] + (w - 1 - ar_w)[None, :],
                           ox[:, None] + ar_w[None, :])                      # (B, W)
        lin = (torch.arange(c)[None, :, None, None] * (hp * wp)
               + rows[:, None, :, None] * wp + cols[:, None, None, :])       # (B, C, H, W)
        out = x.reshape(b, -1).gather(1, lin.reshape(b, -1).to(x.device))
        return out.view(b, c, h, w)
