"""Frozen-backbone epochs on cached features: the head trains on what the backbone gave once.

Under a linear probe (and two-stage's head-only epochs) :func:`open_features` extracts the
backbone's features once (analysis.features) and the epochs feed ``model.head`` from the cache
with the same optimiser, schedule, batch order, step and evaluation as the uncached run (with
float32 storage, the same results up to float rounding). The cache key covers everything that
changes the features (docs/feature-cache.md). :func:`cache_decision` says when
``--feature-cache auto`` applies, :func:`feature_requests` what a run needs, and
:func:`head_costs` counts a head's parameters and MACs without tracing the backbone again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from surgery import HeadSwapped, OriginalHead

from ..costs import FLOP_COUNTERS, count_params
from ..data import BatchTransform, DataSplits, ImageRows
from ..features import (
    DTYPES,
    CacheKey,
    CacheRequest,
    Extractor,
    FeatureRows,
    Storage,
    image_ids,
    open_cache,
    remove_caches,
    weights_digest,
)
from . import distributed
from .config import TrainConfig
from .distributed import DistInfo

__all__ = ["RUN_CACHE_DIR", "FeatureTransform", "OwnCache", "cache_decision", "feature_requests",
           "feature_source", "head_costs", "merge_requests", "open_features", "storage_for"]

VIEW_SEED = 0  # augmented views are drawn once from this seed and the image id, for every run
RUN_CACHE_DIR = "features"  # a run's own on-disk cache, in its run directory


@dataclass
class OwnCache:
    """A new run's own on-disk cache directory (``RUN/features``), part of the run like its
    files: an overwritten run's caches go when the new run takes over, and the new run's go if
    it fails before its first checkpoint. A directory shared with others
    (``feature_cache_dir``: a study's, or the user's) is never the run's own."""

    directory: Path | None   # None: nothing of the run's own to look after
    made: bool = False       # this run created it (nothing of an old run is in it)

    @classmethod
    def of(cls, cfg: TrainConfig, run_dir: Path, fresh: bool) -> OwnCache:
        """The run's own cache directory when ``fresh`` (a new run, on rank 0)."""
        if not fresh or cfg.feature_cache_dir:
            return cls(None)
        directory = Path(run_dir) / RUN_CACHE_DIR
        return cls(directory, made=not directory.exists())

    def keep_only(self, info: dict[str, Any]) -> None:
        """On taking the run directory over: remove every cache but those ``info`` (the run's
        feature_cache record) reads."""
        if self.directory is not None:
            used = [c["path"] for c in (info, info.get("views_cache") or {}) if c.get("path")]
            remove_caches(self.directory, keep=used)

    def drop(self, started: bool) -> None:
        """On failing before the first checkpoint: remove the run's caches, unless the run had
        not ``started`` and the directory is an old run's (which stays whole)."""
        if self.directory is not None and (started or self.made):
            remove_caches(self.directory)


def cache_decision(cfg: TrainConfig, model: HeadSwapped) -> tuple[bool, str]:
    """Whether this run's frozen-backbone epochs train on cached features, and if not, why."""
    if cfg.feature_cache == "off":
        return False, "--feature-cache off"
    if not cfg.frozen(0):
        return False, "the backbone trains from the first epoch"
    if cfg.augment and not cfg.feature_cache_views:
        return False, ("--augment draws new crops every epoch, which no cache holds; "
                       "--feature-cache-views K caches K fixed views instead")
    if isinstance(model.head, OriginalHead) and model.features.from_sequence:
        return False, "this model's own head takes a list of feature maps"
    return True, ""


def feature_source(model: HeadSwapped) -> str:
    """What the head receives, as a cache key names it: ``forward_features`` (timm's output, as
    the original head takes it), ``forward_features[-1]`` (its last map), ``intermediates``."""
    if isinstance(model.head, OriginalHead):
        return "forward_features"
    info = model.features
    return info.source + ("[-1]" if info.from_sequence and info.source == "forward_features"
                          else "")


def _amp_name(amp: torch.dtype | None) -> str:
    return "off" if amp is None else str(amp).replace("torch.", "")


def _images(data: DataSplits, ids: torch.Tensor) -> ImageRows:
    """The uint8 images of ``ids`` (image_ids numbering) in the run's splits, unread: batches
    are gathered as the extraction reaches them (a decoded folder never lands in memory)."""
    pool_ids = torch.cat([data.ids["train"], data.ids["val"], -data.ids["test"] - 1])
    order = torch.argsort(pool_ids)
    pos = order[torch.searchsorted(pool_ids[order], ids)]
    bounds = torch.tensor([len(data.ids["train"]), len(data.ids["train"]) + len(data.ids["val"])])
    which = torch.bucketize(pos, bounds, right=True)  # 0 train, 1 val, 2 test
    starts = torch.cat([torch.zeros(1, dtype=torch.long), bounds])
    splits = [x for x in (data.train_x, data.val_x, data.test_x)]
    if any(isinstance(x, ImageRows) for x in splits):  # rows of rows: gather the sources first
        return ImageRows.concat(splits).subset(pos)
    return ImageRows(splits, which, pos - starts[which])  # type: ignore[arg-type]


def feature_requests(cfg: TrainConfig, model: HeadSwapped, data: DataSplits,
                     transform: BatchTransform, system: dict[str, Any]
                     ) -> tuple[CacheRequest, CacheRequest | None]:
    """What this run reads: plain features of its train, validation (and, for a linear probe,
    test) images, and with ``feature_cache_views`` K augmented views of its training images."""
    if not data.ids:
        raise ValueError("a feature cache needs data from analysis.data.load_dataset (which "
                         "records the images of each split)")
    dtype = DTYPES[cfg.feature_cache_dtype]
    key = CacheKey(
        model=cfg.model, weights=_backbone_digest(cfg, model),
        source=feature_source(model), dataset=data.name, data=data.fingerprint,
        img_size=transform.size[0], mean=tuple(float(v) for v in _stats(transform)[0]),
        std=tuple(float(v) for v in _stats(transform)[1]), in_chans=transform.in_chans,
        timm_options=dict(cfg.timm_options), data_options=dict(cfg.data_options),
        channels_last=transform.channels_last, amp=_amp_name(system["amp_dtype"]),
        dtype=cfg.feature_cache_dtype)
    test = data.ids["test"] if cfg.regime == "linear-probe" else None
    ids = image_ids(train=torch.cat([data.ids["train"], data.ids["val"]]), test=test)
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    make = partial(Extractor, model.head_input, model.backbone, transform, batch,
                   system["amp_dtype"], dtype)
    plain = CacheRequest(key, ids, _images(data, ids), make(), name=cfg.model)
    if not cfg.feature_cache_views:
        return plain, None
    k = cfg.feature_cache_views
    view = f"views={k}:pad={transform.pad}:flip={int(transform.flip)}:seed={VIEW_SEED}"
    train_ids = image_ids(train=data.ids["train"])
    views = CacheRequest(replace(key, view=view), train_ids, _images(data, train_ids),
                         make(views=k, view_seed=VIEW_SEED), name=cfg.model)
    return plain, views


_DIGESTS: dict[str, str] = {}


def _backbone_digest(cfg: TrainConfig, model: HeadSwapped) -> str:
    """weights_digest of the backbone, computed once per process for each way of building it
    (name, options, weights file with its size and time, seed of random weights)."""
    recipe: dict[str, Any] = {"model": cfg.model, "timm": cfg.timm_options,
                              "in_chans": model.recipe.get("in_chans"),
                              "pretrained": cfg.pretrained, "checkpoint": cfg.checkpoint}
    if cfg.checkpoint:
        st = Path(cfg.checkpoint).stat()
        recipe["file"] = (str(Path(cfg.checkpoint).resolve()), st.st_size, st.st_mtime_ns)
    if not (cfg.pretrained or cfg.checkpoint):
        recipe["seed"] = cfg.seed
    sig = json.dumps(recipe, sort_keys=True, default=str)
    if sig not in _DIGESTS:
        _DIGESTS[sig] = weights_digest(model.backbone, skip=(model.head,),
                                       skip_names=tuple(r.name for r in model.removed))
    return _DIGESTS[sig]


def _stats(transform: BatchTransform) -> tuple[list[float], list[float]]:
    """The mean / std a BatchTransform normalises with (it stores scale and shift)."""
    scale, shift = transform.scale.flatten().cpu(), transform.shift.flatten().cpu()
    std = 1.0 / (255.0 * scale)
    return (-shift * std).tolist(), std.tolist()


def merge_requests(requests: Sequence[CacheRequest]) -> CacheRequest:
    """One request covering the images of several with the same key (a study's runs)."""
    first = requests[0]
    if any(r.key != first.key for r in requests):
        raise ValueError("only requests for the same cache key can be merged")
    ids = torch.cat([r.ids for r in requests])
    images = ImageRows.concat([r.images for r in requests])
    uniq, first_at = _first_positions(ids)
    return replace(first, ids=uniq, images=images.subset(first_at))


def _first_positions(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    uniq, inverse = torch.unique(ids, return_inverse=True)
    first = torch.full((len(uniq),), len(ids), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(ids)), reduce="amin")
    return uniq, first


def storage_for(cfg: TrainConfig, default_dir: Path, dist: DistInfo | None = None,
                shared: bool = False) -> Storage:
    """The storage policy of the run's options: memory budget, directory (``default_dir``
    unless ``feature_cache_dir`` is set), batch, progress."""
    gather: Callable[[Any], list[Any]] | None = None
    if dist is not None and dist.world_size > 1:
        gather = partial(distributed.gather_objects, dist=dist)
    directory = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else default_dir
    return Storage(mem_bytes=int(cfg.feature_cache_mem_gb * 2**30), directory=directory,
                   shared=shared, batch_size=cfg.batch_size, progress=cfg.progress,
                   gather=gather)


@dataclass
class OpenedFeatures:
    """A run's cached features: plain rows per split, the training views, what happened."""

    train: FeatureRows           # plain, or (K views, ...) per row with views
    train_plain: FeatureRows
    val: FeatureRows
    test: FeatureRows | None
    info: dict[str, Any]
    key: CacheKey


def open_features(cfg: TrainConfig, model: HeadSwapped, data: DataSplits,
                  transform: BatchTransform, system: dict[str, Any], run_dir: Path,
                  dist: DistInfo) -> OpenedFeatures:
    """Open (or build) this run's caches and give its splits as rows of them."""
    plain_req, views_req = feature_requests(cfg, model, data, transform, system)
    storage = storage_for(cfg, run_dir / RUN_CACHE_DIR, dist)
    plain, info = open_cache(plain_req, storage, dist)
    info = dict(info, used=True, dtype=cfg.feature_cache_dtype, views=cfg.feature_cache_views,
                weights=plain_req.key.weights)
    train = plain.rows(data.ids["train"])
    if views_req is not None:
        table, vinfo = open_cache(views_req, storage, dist)
        train = table.rows(data.ids["train"])
        info["views_cache"] = vinfo
        info["extract_s"] = info["extract_s"] + vinfo["extract_s"]
    test = None
    if cfg.regime == "linear-probe":
        test = plain.rows(-data.ids["test"] - 1)
    return OpenedFeatures(train, plain.rows(data.ids["train"]), plain.rows(data.ids["val"]),
                          test, info, plain_req.key)


class FeatureTransform:
    """Cached rows -> the head's input on the device: float32, the run's memory format.

    Training rows with K views (``(B, K, ...)``) take one view per image, drawn from the epoch's
    augmentation generator; evaluation rows are the plain features.
    """

    def __init__(self, device: torch.device, channels_last: bool, views: int = 0):
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.views = views

    def __call__(self, x: torch.Tensor, train: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if train and self.views:
            pick = torch.randint(0, self.views, (len(x),), generator=generator)
            x = x[torch.arange(len(x)), pick]
        x = x.to(self.device, non_blocking=True).float()
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def grad_sync(params: Sequence[nn.Parameter], dist: DistInfo) -> Callable[[], None] | None:
    """Average the gradients of ``params`` over the ranks (what DDP does), or None alone."""
    if dist.world_size == 1 or dist.all_reduce is None:
        return None
    reduce = dist.all_reduce

    def sync() -> None:
        for p in params:
            if p.grad is not None:
                reduce(p.grad)
                p.grad.div_(dist.world_size)

    return sync


_BACKBONE_MACS: dict[tuple[Any, ...], int] = {}


class _Features(nn.Module):
    """``forward_features`` of a swapped model as a module (to count the backbone alone)."""

    def __init__(self, model: HeadSwapped):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model.head_input(x)


def head_costs(model: HeadSwapped, input_size: tuple[int, int, int], key: CacheKey,
               feature_shape: tuple[int, ...]) -> dict[str, Any]:
    """``params``, ``head_params``, ``gmacs``, ``head_gmacs`` as analysis.training.model_costs
    gives them, with the backbone traced once per backbone and process and the head alone on
    features: a study of many heads on one frozen backbone does not trace it for each."""
    params = count_params(model)
    fvcore = FLOP_COUNTERS["fvcore"]
    sig = (key.model, key.source, key.img_size, key.in_chans, repr(sorted(key.timm_options.items())))
    if sig not in _BACKBONE_MACS:
        _BACKBONE_MACS[sig] = int(fvcore(_Features(model), (1, *input_size))["total"])
    head = int(fvcore(model.head, (1, *feature_shape))["total"])
    return {"params": params["total"], "head_params": params["head"],
            "gmacs": (_BACKBONE_MACS[sig] + head) / 1e9, "head_gmacs": head / 1e9}
