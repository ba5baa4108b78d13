"""Which head should this backbone have? Every head that applies, trained on one feature cache.

:func:`run_pick` is a head comparison study (analysis.studies.runner) on one backbone and one
training-set size: every kind of ``surgery.HEADS`` that builds on the backbone plus the
:data:`VARIANTS`, each for every seed, by default in one pass over cached features
(analysis.studies.onepass). :func:`pick_rows` ranks them by validation accuracy,
analysis.studies.recommend gives the recommendation and analysis.studies.pick_report writes
the files. Seeds share one pool of ``train_size`` + validation images and each draws its own
validation split from it. See docs/pick-head.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import surgery
from surgery import HEADS, HeadSpec, parse_head, read_json

from ..training import TrainConfig, load_run_data, timm_kwargs
from .aggregate import mean_std
from .collect import load_records
from .onepass import sweep_dir
from .recommend import compare_to_best, recommend
from .runner import run_study
from .spec import StudySpec

__all__ = ["COARSER", "FIT_THRESHOLD", "JSON_KEYS", "ROW_KEYS", "SWEEP_KEYS", "VARIANTS",
           "candidate_heads", "pick_rows", "pool_for", "read_sweep", "resolve_train_size",
           "run_pick"]

# hidden / dropout variants tried on top of the plain heads (when their kind applies)
VARIANTS = ("gap:dropout=0.5", "gap:hidden=256:dropout=0.5", "gmp:hidden=256:dropout=0.5",
            "gapmp:hidden=256:dropout=0.5", "flatten:dropout=0.5",
            "flatten:hidden=256:dropout=0.5")
# Where a kind's default options do not fit the model at this input size, these specs are tried
# in order: spp's default levels 1x2x4 need a 4x4 grid, which small inputs do not give (resnet18
# at 64 px has 2x2); levels 1x2 still pool a pyramid there. (levels=1 would be gmp again.)
COARSER: dict[str, tuple[str, ...]] = {"spp": ("spp:levels=1x2",)}
JSON_KEYS = ("backbone", "dataset", "train_size", "seeds", "rows", "recommended", "reason", "lrs",
             "sweep")
ROW_KEYS = ("head", "val_acc_mean", "val_acc_std", "gap_acc_mean", "head_params", "head_gmacs",
            "any_size", "lr")
FIT_THRESHOLD = 0.99  # a head whose final training accuracy is below this does not fit its set
SWEEP_KEYS = ("head", "lr", "weight_decay", "seed", "val_acc", "status")


def candidate_heads(model: str, *, img_size: int, in_chans: int,
                    timm_options: dict[str, Any] | None = None
                    ) -> tuple[list[HeadSpec], list[tuple[str, str]]]:
    """The heads to compare on ``model`` at ``img_size``: every kind of ``surgery.HEADS`` (read
    now, so kinds registered later are included) that builds on it, with its default options,
    on the meta device (no weights, no compute), then the :data:`VARIANTS` of the kinds that
    did. What applies is surgery's own check: ``token`` only on a model with a class token,
    ``spp`` only where the feature grid holds its finest level (else with the coarser levels of
    :data:`COARSER` where those fit), ``original`` only where the model has a classifier of its
    own. Returns the heads and the kinds left out with the
    reason."""
    kwargs = timm_kwargs(model, timm_options, img_size)  # as the runs build it
    heads: list[HeadSpec] = []
    skipped: list[tuple[str, str]] = []
    for kind in list(HEADS):
        refusal = ""
        for spec in (kind, *COARSER.get(kind, ())):
            try:
                with torch.device("meta"), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    backbone = surgery.load_backbone(model, in_chans=in_chans, **kwargs)
                    surgery.swap_head(backbone, head=spec, num_classes=2, input_size=img_size)
            except (ValueError, RuntimeError, TypeError) as err:
                refusal = refusal or surgery.one_line(err, with_type=False)
                continue
            heads.append(parse_head(spec))
            break
        else:
            skipped.append((kind, refusal))
    kinds = {h.kind for h in heads}
    heads += [parse_head(v) for v in VARIANTS if parse_head(v).kind in kinds]
    return heads, skipped


def pool_for(train_size: int, val_size: int | float) -> tuple[int, int]:
    """``(pool size, validation count)``: each seed trains on ``train_size`` images and
    validates on the rest of the pool (``val_size``: a count, or a fraction of the pool)."""
    if isinstance(val_size, float) and val_size < 1:
        n_val = max(1, round(val_size * train_size / (1.0 - val_size)))
    else:
        n_val = int(val_size)
    return train_size + n_val, n_val


def pick_rows(records: Sequence[dict[str, Any]], heads: Sequence[HeadSpec]) -> list[dict[str, Any]]:
    """One row per head, best mean validation accuracy first: the :data:`ROW_KEYS` (accuracies
    as fractions; ``gap_acc_mean`` train minus validation accuracy at the best epoch; ``lr`` the
    learning rate its runs trained at), plus ``seeds``, ``test_acc_mean``, ``train_acc_mean``
    (the final epoch's, on the fixed training sample) and ``per_seed`` (seed -> validation
    accuracy, for the paired comparison)."""
    rows = []
    for head in heads:
        recs = [r for r in records if r["head_label"] == head.label]
        if not recs:
            continue
        val_mean, val_std = mean_std([r.get("best_val_acc") for r in recs])
        gap_mean, _ = mean_std([r.get("gap_acc") for r in recs])
        test_mean, _ = mean_std([r.get("test_acc") for r in recs])
        fit_mean, _ = mean_std([r.get("final_train_acc") for r in recs])
        kind = HEADS.get(head.kind)
        lrs = sorted({r["lr"] for r in recs if r.get("lr") is not None})
        rows.append({"head": head.label, "val_acc_mean": val_mean, "val_acc_std": val_std or 0.0,
                     "gap_acc_mean": gap_mean, "head_params": recs[0].get("head_params"),
                     "head_gmacs": recs[0].get("head_gmacs"),
                     "any_size": bool(kind.any_input_size) if kind is not None else None,
                     "lr": lrs[0] if len(lrs) == 1 else None,
                     "seeds": len(recs), "test_acc_mean": test_mean, "train_acc_mean": fit_mean,
                     "per_seed": {int(r["seed"]): float(r["best_val_acc"]) for r in recs
                                  if r.get("best_val_acc") is not None}})
    return sorted(rows, key=lambda r: -(r["val_acc_mean"] if r["val_acc_mean"] is not None
                                        else -1.0))


def resolve_train_size(data: Any, train_size: int | None, val_size: int | float,
                       dataset: str) -> tuple[int | None, int | None, int]:
    """``(train_size, pool_size, validation count)``: ``train_size`` None takes what the data
    holds (the training pool minus validation, the pool being the whole training split); a
    size the data cannot hold is a ValueError naming ``--train-size``."""
    available = len(data.train_y) + len(data.val_y)
    if train_size is None:
        return None, None, len(data.val_y)
    pool, n_val = pool_for(train_size, val_size)
    if pool > available:
        most = available - n_val if isinstance(val_size, int) or val_size >= 1 else \
            int(available * (1 - float(val_size)))
        raise ValueError(f"--train-size {train_size} with its {n_val} validation images "
                         f"(--val-size {val_size}) needs {pool} training images, and {dataset} "
                         f"has {available}: give --train-size at most {max(1, most)}, or leave "
                         "it out to train on all of them")
    return train_size, pool, n_val


def run_pick(model: str, base: dict[str, Any], *, seeds: Sequence[int],
             train_size: int | None, out: str | Path, heads: Sequence[HeadSpec] | None = None,
             sweep: dict[str, Any] | None = None, jobs: int = 0, progress: bool = True,
             command: str = "", threads: int | None = None, runs_per_worker: int = 0,
             sweep_mem_gb: float | None = None) -> dict[str, Any]:
    """Train every candidate head (or ``heads``) x ``seeds`` on ``model`` and rank them.

    ``base`` holds TrainConfig fields shared by every run (dataset, regime, epochs, ...);
    ``sweep`` the StudySpec fields of the one pass (``lrs``, ``weight_decays``, ``one_pass``,
    ``prune_at``, ``prune_keep``: analysis.studies.onepass), by which each head trains at its
    own best learning rate; ``train_size`` None takes what the data holds. ``jobs``,
    ``threads`` and ``runs_per_worker`` are run_study's. Returns the JSON result
    (:data:`JSON_KEYS`) plus ``table`` (rows with the paired comparison to the best), ``choices``
    and ``curves`` (the sweep's, per head), ``skipped`` heads and ``study``."""
    base = dict(base)
    probe = TrainConfig.from_dict({**base, "model": model, "train_size": None,
                                   "seed": seeds[0], "pool_size": None})
    probe.check()
    data = load_run_data(probe)
    train_size, pool, n_val = resolve_train_size(data, train_size, probe.val_size, probe.dataset)
    if base.get("pool_size") is None and pool is not None:
        base.update(pool_size=pool, val_size=n_val)
    img_size = probe.img_size or data.image_size[0]
    weights = probe.pretrained or probe.checkpoint is not None
    in_chans = probe.in_chans or (3 if weights else data.channels)
    skipped: list[tuple[str, str]] = []
    if heads is None:
        heads, skipped = candidate_heads(model, img_size=img_size, in_chans=in_chans,
                                         timm_options=probe.timm_options)
    spec = StudySpec((model,), tuple(heads), tuple(seeds), (train_size,), base,
                     test_size=base.pop("test_size", None), robust_images=None,
                     command=command, robustness=False, **(sweep or {}))
    study = run_study(spec, out, jobs=jobs, progress=progress, threads=threads,
                      runs_per_worker=runs_per_worker, sweep_mem_gb=sweep_mem_gb)
    swept = read_sweep(out, model, train_size)
    table = compare_to_best(pick_rows(load_records([out], spec), spec.heads),
                            _per_seed(out, spec))
    head, reason = recommend(table)
    lrs = swept.get("lrs") or sorted({r["lr"] for r in table if r.get("lr") is not None})
    n_train = train_size if train_size is not None else len(data.train_y)
    return {"backbone": model, "dataset": probe.dataset, "train_size": n_train,
            "seeds": list(seeds), "rows": [{k: r.get(k) for k in ROW_KEYS} for r in table],
            "recommended": head, "reason": reason, "lrs": lrs,
            "sweep": [{k: m.get(k) for k in SWEEP_KEYS} for m in swept.get("members", [])],
            "table": table, "choices": swept.get("choices", {}),
            "curves": swept.get("curves", []), "skipped": skipped, "study": study,
            "study_train_size": train_size}


def _per_seed(out: str | Path, spec: StudySpec) -> dict[str, dict[int, float]]:
    """head -> seed -> best validation accuracy of the study's finished runs."""
    per: dict[str, dict[int, float]] = {}
    for r in load_records([out], spec):
        if r.get("best_val_acc") is not None:
            per.setdefault(r["head_label"], {})[int(r["seed"])] = float(r["best_val_acc"])
    return per


def read_sweep(out: str | Path, model: str, train_size: int | None) -> dict[str, Any]:
    """The one pass's record of this pick (``sweep.json``), or {} without one."""
    path = sweep_dir(out, model, train_size) / "sweep.json"
    return dict(read_json(path)) if path.is_file() else {}
