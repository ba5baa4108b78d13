"""Zoo coverage as a sweep: every head kind on every timm architecture, resumable.

Each architecture is checked by analysis.sweeps.zoo_checks.check_architecture.

Records accumulate in ``OUT_DIR/zoo_coverage.jsonl`` (one per architecture; a later check of
more head kinds is merged into the earlier record); :func:`zoo_coverage_sweep` checks what is
missing and writes ``zoo_coverage.json`` and ``zoo_coverage.md``. :func:`timm_max_sweep` checks
timm's own ``reset_classifier(global_pool='max')`` for comparison (``zoo_timm_max.json``).
"""

from __future__ import annotations

import fnmatch
import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

from surgery import check_writable, expand_model_names

from ..machine import describe_machine
from ..runtime import JsonlStore, map_unordered, one_torch_thread, run_sweep, write_files
from .zoo_checks import check_architecture, check_timm_max, merge_records, summarize
from .zoo_coverage_report import render_markdown

__all__ = ["ZooCoverageSettings", "timm_max_sweep", "zoo_coverage_sweep"]

_MAX_TASKS_PER_CHILD = 20  # a fresh worker every so many architectures: memory does not pile up


@dataclass
class ZooCoverageSettings:
    """What tools/zoo_coverage.py asks for: its flags by name, with the tool's
    defaults (declared once, in its parser)."""

    models: list[str]
    heads: list[str]
    num_classes: int
    jobs: int
    out_dir: Path
    fresh: bool
    redo: list[str]
    timm_max: bool
    report_only: bool
    retry_failed: bool


def _check(task: tuple[str, list[str], int]) -> dict[str, Any]:
    """Worker: one architecture with the head kinds it still lacks."""
    name, heads, k = task
    return check_architecture(name, heads, k)


def _check_timm_max(task: tuple[str, int]) -> dict[str, Any]:
    return check_timm_max(*task)


def _names(settings: ZooCoverageSettings) -> list[str]:
    """The architectures asked for; the output directory made (ValueError if it cannot be)."""
    names = sorted(expand_model_names(settings.models))
    check_writable(settings.out_dir, "--out-dir", directory=True)
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    return names


def timm_max_sweep(settings: ZooCoverageSettings) -> dict[str, Any]:
    """timm's own max pooling over the architectures: how many give the right shape. Writes
    ``zoo_timm_max.json`` and returns what it holds."""
    names = _names(settings)
    tasks = [(n, settings.num_classes) for n in names]
    from tqdm import tqdm

    results = map_unordered(_check_timm_max, tasks, settings.jobs, start="spawn",
                            max_tasks_per_child=50, initializer=one_torch_thread)
    try:
        records = sorted(tqdm(results, total=len(names), desc="timm global_pool='max'",
                              unit="arch"), key=lambda r: r["model"])
    finally:
        results.close()
    reasons: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            reasons[r["error"]] = reasons.get(r["error"], 0) + 1
    result = {"timm": timm.__version__, "architectures": len(records),
              "ok": sum(r["ok"] for r in records),
              "command": "python tools/zoo_coverage.py --timm-max", "failure_reasons": reasons,
              "records": records}
    write_files(settings.out_dir, {"zoo_timm_max.json": result}, indent=1)
    return result


def _earlier(store: JsonlStore, settings: ZooCoverageSettings) -> dict[str, dict[str, Any]]:
    """Records of earlier runs (the last line per model wins), minus those to run again."""
    if settings.fresh:
        return {}
    done = {}
    for model, rec in store.load().items():
        failed = not all(r["ok"] for r in rec["heads"].values())
        redo = any(fnmatch.fnmatch(rec["model"], pat) for pat in settings.redo)
        if not (redo or (failed and settings.retry_failed)):
            done[str(model)] = rec
    store.rows = {model: rec for model, rec in done.items()}
    return done


def _missing(record: dict[str, Any] | None, heads: Sequence[str]) -> list[str]:
    """The heads an earlier record lacks (all of them without one): a new head kind is checked
    on its own, not with every head again."""
    return list(heads) if record is None else [h for h in heads if h not in record["heads"]]


def zoo_coverage_sweep(settings: ZooCoverageSettings, command: str) -> dict[str, Any]:
    """Check every missing (architecture, head) pair, resuming from the JSONL, and write
    ``zoo_coverage.json`` / ``.md``; returns the summary (zoo_checks.summarize).
    ``command``: the command line the report records. Ctrl-C keeps the records written."""
    names = _names(settings)
    store = JsonlStore(settings.out_dir / "zoo_coverage.jsonl", key=lambda r: r["model"])
    done = _earlier(store, settings) if store.path.exists() else {}
    tasks = [(n, _missing(done.get(n), settings.heads), settings.num_classes) for n in names]
    tasks = [t for t in tasks if t[1] and not settings.report_only]

    def merged(rec: dict[str, Any]) -> list[dict[str, Any]]:
        return [merge_records(store.rows.get(rec["model"]), rec)]

    machine = describe_machine()  # this process's threads, before a one-job sweep sets them
    run = run_sweep(_check, tasks, store, jobs=settings.jobs, rows=merged, fresh=settings.fresh,
                    start="spawn", max_tasks_per_child=_MAX_TASKS_PER_CHILD,
                    initializer=one_torch_thread, desc="architectures", unit="arch")
    if run.interrupted:
        raise KeyboardInterrupt
    records = [store.rows[n] for n in names if n in store.rows]
    summary = summarize(records, settings.heads)
    meta = {"timm": timm.__version__, "torch": torch.__version__,
            "python": platform.python_version(), "machine": machine,
            "command": command, "seconds_this_run": round(run.seconds, 1),
            "num_classes": settings.num_classes,
            "worker_minutes": round(sum(r.get("seconds", 0) for r in records) / 60, 1)}
    data = {"meta": dict(meta), "summary": summary, "records": records}
    timm_max = settings.out_dir / "zoo_timm_max.json"
    if timm_max.exists():
        meta["timm_max"] = {k: v for k, v in json.loads(timm_max.read_text()).items()
                            if k != "records"}
    write_files(settings.out_dir, {"zoo_coverage.json": data,
                                   "zoo_coverage.md": render_markdown(summary, meta)}, indent=1)
    return summary
