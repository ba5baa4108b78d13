"""One feature cache for many runs: a study's heads and seeds on one frozen backbone.

Before a study trains, :func:`warm_feature_caches` builds, for each backbone its runs share,
one cache over every image any of those runs reads (each seed's training subset and validation
split, and the test split), so each image is extracted once; each run then finds its rows in
it (in this process's memory, or in the file under the study directory that child processes
map). The backbone, the normalisation and the batch transform are built exactly as the runs
build them (analysis.training.parts), so the runs' cache keys match.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..features import CacheRequest, open_cache
from .cached import cache_decision, feature_requests, merge_requests, storage_for
from .config import NOT_FEATURES, TrainConfig, load_run_data
from .distributed import DistInfo
from .model import build_model, resolve_system
from .parts import batch_transforms, place_model

__all__ = ["warm_feature_caches"]


def _backbone_signature(cfg: TrainConfig) -> str:
    """Options that decide the features; the seed too when the weights are random."""
    values = {k: v for k, v in vars(cfg).items() if k not in NOT_FEATURES}
    if not (cfg.pretrained or cfg.checkpoint):
        values["seed"] = cfg.seed  # each seed initialises its own random backbone
    return json.dumps(values, sort_keys=True, default=str)


def warm_feature_caches(configs: Sequence[TrainConfig], *, directory: str | Path,
                        shared: bool = False, progress: bool = True) -> list[dict[str, Any]]:
    """Build the caches the frozen-backbone runs of ``configs`` will read, one per backbone.

    ``directory``: where on-disk caches go (the study directory's ``features``); ``shared``:
    the runs are other processes, so the caches go to disk. Runs that would not use the cache
    (``cache_decision``) are left out. Returns what each build did (open_cache's info).
    """
    groups: dict[str, list[TrainConfig]] = {}
    for cfg in configs:
        if cfg.feature_cache == "auto" and cfg.frozen(0):
            groups.setdefault(_backbone_signature(cfg), []).append(cfg)
    infos = []
    for group in groups.values():
        infos += _warm_group(group, Path(directory), shared, progress)
    return infos


def _warm_group(group: list[TrainConfig], directory: Path, shared: bool,
                progress: bool) -> list[dict[str, Any]]:
    first = group[0]
    system = resolve_system(first)
    data = load_run_data(first)
    img_size = first.img_size or data.image_size[0]
    torch.manual_seed(first.seed)
    model, in_chans, mean, std = build_model(first, data, img_size)
    model = place_model(model, first, DistInfo(), system["device"], system["channels_last"],
                        None)
    if not cache_decision(first, model)[0]:
        return []
    transform = batch_transforms(first, img_size, in_chans, mean, std, system["device"],
                                 system["channels_last"])[0]
    plains: list[CacheRequest] = []
    views: list[CacheRequest] = []
    for cfg in group:
        run_data = data if cfg is first else load_run_data(cfg)
        plain, view = feature_requests(cfg, model, run_data, transform, system)
        plains.append(plain)
        if view is not None:
            views.append(view)
    storage = storage_for(first, directory, shared=shared)
    storage.progress = progress
    infos = [open_cache(merge_requests(plains), storage)[1]]
    if views:
        infos.append(open_cache(merge_requests(views), storage)[1])
    return infos
