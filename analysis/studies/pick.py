"""Which head should this backbone have? Every head that applies, trained on one feature cache.

:func:`run_pick` is a head comparison study (analysis.studies.runner) on one backbone and one
training-set size: every head kind registered in ``surgery.HEADS`` that builds on the backbone
(``original`` included where the model has a classifier of its own: the baseline), plus the
fixed list :data:`VARIANTS` of hidden / dropout variants, each for every seed. Under the
default linear probe the backbone's features are extracted once and every run trains its head
on them. The runs' validation accuracy gives a ranked table (:func:`pick_rows`) and a one-line
recommendation with its reason (:func:`recommend`); :func:`write_pick` writes it as
``pick.md``, ``pick.csv``, ``pick.json`` and ``pick.png``.

Seeds share a pool of ``train_size`` + validation images (a fixed stratified subset of the
training split); each seed draws its own validation split from it, so the spread over seeds
covers both the split and the head's initialisation.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import surgery
from surgery import HEADS, HeadSpec, atomic_write_bytes, parse_head

from ..reporting import format_table, plot_pick, to_csv
from ..training import TrainConfig, load_run_data, timm_kwargs
from .aggregate import mean_std
from .collect import load_records
from .runner import run_study
from .spec import StudySpec

__all__ = ["COARSER", "JSON_KEYS", "ROW_KEYS", "VARIANTS", "candidate_heads", "pick_rows", "pool_for",
           "recommend", "run_pick", "table_rows", "write_pick"]

# hidden / dropout variants tried on top of the plain heads (when their kind applies)
VARIANTS = ("gap:dropout=0.5", "gap:hidden=256:dropout=0.5", "gmp:hidden=256:dropout=0.5",
            "gapmp:hidden=256:dropout=0.5", "flatten:dropout=0.5",
            "flatten:hidden=256:dropout=0.5")
# Where a kind's default options do not fit the model at this input size, these specs are tried
# in order: spp's default levels 1x2x4 need a 4x4 grid, which small inputs do not give (resnet18
# at 64 px has 2x2); levels 1x2 still pool a pyramid there. (levels=1 would be gmp again.)
COARSER: dict[str, tuple[str, ...]] = {"spp": ("spp:levels=1x2",)}
JSON_KEYS = ("backbone", "dataset", "train_size", "seeds", "rows", "recommended", "reason")
ROW_KEYS = ("head", "val_acc_mean", "val_acc_std", "gap_acc_mean", "head_params", "head_gmacs",
            "any_size")


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
    as fractions; ``gap_acc_mean`` train minus validation accuracy at the best epoch), plus
    ``seeds`` and ``test_acc_mean`` for the table."""
    rows = []
    for head in heads:
        recs = [r for r in records if r["head_label"] == head.label]
        if not recs:
            continue
        val_mean, val_std = mean_std([r.get("best_val_acc") for r in recs])
        gap_mean, _ = mean_std([r.get("gap_acc") for r in recs])
        test_mean, _ = mean_std([r.get("test_acc") for r in recs])
        kind = HEADS.get(head.kind)
        rows.append({"head": head.label, "val_acc_mean": val_mean, "val_acc_std": val_std or 0.0,
                     "gap_acc_mean": gap_mean, "head_params": recs[0].get("head_params"),
                     "head_gmacs": recs[0].get("head_gmacs"),
                     "any_size": bool(kind.any_input_size) if kind is not None else None,
                     "seeds": len(recs), "test_acc_mean": test_mean})
    return sorted(rows, key=lambda r: -(r["val_acc_mean"] if r["val_acc_mean"] is not None
                                        else -1.0))


def recommend(rows: Sequence[dict[str, Any]]) -> tuple[str | None, str]:
    """The head with the fewest parameters among those whose mean validation accuracy is within
    the seed spread (one standard deviation) of the best; ``(head, reason)``."""
    rows = [r for r in rows if r["val_acc_mean"] is not None]
    if not rows:
        return None, "no run finished"
    best = max(rows, key=lambda r: r["val_acc_mean"])
    floor = best["val_acc_mean"] - (best["val_acc_std"] or 0.0)
    close = [r for r in rows if r["val_acc_mean"] >= floor]
    pick = min(close, key=lambda r: (r["head_params"] if r["head_params"] is not None
                                     else float("inf"), -r["val_acc_mean"]))

    def acc(r: dict[str, Any]) -> str:
        return f"{100 * r['val_acc_mean']:.2f} ± {100 * (r['val_acc_std'] or 0):.2f}%"

    if pick is best:
        others = len(close) - 1
        return pick["head"], (f"best mean validation accuracy ({acc(best)}); "
                              + (f"the {others} head(s) within its seed spread have more "
                                 "parameters" if others else
                                 "no other head is within its seed spread"))
    return pick["head"], (f"{acc(pick)} is within the seed spread of the best ({best['head']}, "
                          f"{acc(best)}) with the fewest head parameters "
                          f"({pick['head_params']:,} vs {best['head_params']:,})")


def run_pick(model: str, base: dict[str, Any], *, seeds: Sequence[int], train_size: int,
             out: str | Path, heads: Sequence[HeadSpec] | None = None, jobs: int = 0,
             progress: bool = True, command: str = "", threads: int | None = None,
             runs_per_worker: int = 0) -> dict[str, Any]:
    """Train every candidate head (or ``heads``) x ``seeds`` on ``model`` and rank them.

    ``base`` holds TrainConfig fields shared by every run (dataset, regime, epochs, ...);
    ``jobs``, ``threads`` and ``runs_per_worker`` are run_study's (``jobs=0``: in this process,
    the feature cache in memory; else worker processes reading it from disk).
    Returns the JSON result (:data:`JSON_KEYS`) plus ``table`` (rows with seeds and test
    accuracy), ``skipped`` heads and ``study`` (what run_study returned)."""
    base = dict(base)
    pool, n_val = pool_for(train_size, base.get("val_size", TrainConfig.val_size))
    if base.get("pool_size") is None:
        base.update(pool_size=pool, val_size=n_val)
    probe = TrainConfig.from_dict({**base, "model": model, "train_size": train_size,
                                   "seed": seeds[0]})
    probe.check()
    data = load_run_data(probe)
    img_size = probe.img_size or data.image_size[0]
    weights = probe.pretrained or probe.checkpoint is not None
    in_chans = probe.in_chans or (3 if weights else data.channels)
    skipped: list[tuple[str, str]] = []
    if heads is None:
        heads, skipped = candidate_heads(model, img_size=img_size, in_chans=in_chans,
                                         timm_options=probe.timm_options)
    spec = StudySpec((model,), tuple(heads), tuple(seeds), (train_size,), base,
                     test_size=base.pop("test_size", None), robust_images=None,
                     command=command, robustness=False)
    study = run_study(spec, out, jobs=jobs, progress=progress, threads=threads,
                      runs_per_worker=runs_per_worker)
    table = pick_rows(load_records([out], spec), spec.heads)
    head, reason = recommend(table)
    return {"backbone": model, "dataset": probe.dataset, "train_size": train_size,
            "seeds": list(seeds), "rows": [{k: r[k] for k in ROW_KEYS} for r in table],
            "recommended": head, "reason": reason, "table": table, "skipped": skipped,
            "study": study}


def table_rows(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ranked table as people read it: percentages and points, parameters, GMACs."""
    def pct(v: Any) -> Any:
        return None if v is None else round(100 * float(v), 2)
    return [{"rank": i + 1, "head": r["head"], "val acc %": pct(r["val_acc_mean"]),
             "± std": pct(r["val_acc_std"]), "train-val gap pts": pct(r["gap_acc_mean"]),
             "head params": r["head_params"], "head GMACs": r["head_gmacs"],
             "any size": "yes" if r["any_size"] else "no", "seeds": r["seeds"],
             "test acc %": pct(r["test_acc_mean"])} for i, r in enumerate(table)]


def write_pick(out: str | Path, result: dict[str, Any], meta: dict[str, Any]) -> dict[str, Path]:
    """``pick.md``, ``pick.csv``, ``pick.json`` and ``pick.png`` in ``out``; ``meta`` (command,
    machine, wall time, ...) goes into the markdown and a ``meta`` key of nothing else."""
    out = Path(out)
    rows = table_rows(result["table"])
    doc = {k: result[k] for k in JSON_KEYS}
    lines = [f"# Which head for {result['backbone']} on {result['dataset']}?", "",
             f"**Recommended: {result['recommended']}**: {result['reason']}.", "",
             format_table(rows, floatfmt=".4g"), ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    if result.get("skipped"):
        lines += ["", "Head kinds that do not apply:"]
        lines += [f"- {k}: {why}" for k, why in result["skipped"]]
    files = {
        "pick.md": atomic_write_bytes(out / "pick.md", ("\n".join(lines) + "\n").encode()),
        "pick.csv": atomic_write_bytes(out / "pick.csv", to_csv(rows).encode()),
        "pick.json": atomic_write_bytes(out / "pick.json",
                                        (json.dumps(doc, indent=2) + "\n").encode()),
    }
    title = f"{result['backbone']} on {result['dataset']}, n={result['train_size']}"
    png = plot_pick(result["table"], out / "pick.png", title, result["recommended"])
    if png is not None:
        files["pick.png"] = png
    return files
