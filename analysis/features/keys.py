"""What a feature cache is keyed by: everything that changes the features a frozen backbone gives.

A cache built for other weights, other data, another image size, normalisation or view is never
reused: :class:`CacheKey` holds the backbone (name, timm options, input channels, a digest of its
weights), what the head receives (``source``), the data (name, reader options, a digest of the
official splits' pixels), the input pipeline (image size, mean / std, memory format, autocast)
and the view (plain, or K fixed augmented views), plus the stored precision. Its
:meth:`~CacheKey.digest` names the cache. Images are named by :func:`image_ids`: the index in the
official train split, or ``-(index + 1)`` in the official test split.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["FORMAT_VERSION", "CacheKey", "image_ids", "weights_digest"]

FORMAT_VERSION = 1  # of the key and of the file layout (analysis.features.store)


@dataclass(frozen=True)
class CacheKey:
    """Everything the cached features depend on; two runs with equal keys read the same cache."""

    model: str
    weights: str                      # weights_digest of the backbone
    source: str                       # what the head receives: forward_features, intermediates...
    dataset: str
    data: str                         # digest of the official splits (DataSplits.fingerprint)
    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    timm_options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = True
    amp: str = "off"                  # autocast dtype of the extraction (as the run's forward)
    view: str = "plain"               # plain, or views=K:pad=P:flip=F:seed=S
    dtype: str = "float16"            # stored precision

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the cache file's header and the run's config record."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return json.loads(json.dumps(d, default=str))

    def digest(self) -> str:
        """32 hex digits naming the cache (format version included)."""
        text = json.dumps({"format": FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def weights_digest(backbone: nn.Module, skip: tuple[nn.Module, ...] = (),
                   skip_names: tuple[str, ...] = ()) -> str:
    """Digest (blake2b, 32 hex digits) of a backbone's state dict: names, shapes and values.

    Tensors owned by the ``skip`` modules (a head that reuses backbone modules, as ``original``
    does) and entries under ``skip_names`` (modules a head swap removed, whose weights the
    features do not depend on) are left out, so every head on one backbone gets one digest.
    """
    owned = {id(t) for m in skip for t in (*m.parameters(), *m.buffers())}
    prefixes = tuple(f"{n}." for n in skip_names)
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(backbone.state_dict(keep_vars=True).items()):
        if id(t) in owned or name.startswith(prefixes):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.dtype == torch.bfloat16:  # no numpy dtype: hash its bits
            t = t.view(torch.int16)
        if t.numel():
            h.update(t.numpy().data)
    return h.hexdigest()


def image_ids(train: torch.Tensor | None = None, test: torch.Tensor | None = None) -> torch.Tensor:
    """One int64 id per image: the index in the official train split, ``-(index + 1)`` in the
    official test split; sorted and without repeats."""
    parts = [torch.as_tensor(t, dtype=torch.int64).flatten() for t in (train,) if t is not None]
    if test is not None:
        parts.append(-torch.as_tensor(test, dtype=torch.int64).flatten() - 1)
    if not parts:
        return torch.zeros(0, dtype=torch.int64)
    return torch.unique(torch.cat(parts))
