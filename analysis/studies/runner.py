"""Running a head comparison study: every pending run of the grid, resumable, then the report.

A run directory with ``summary.json`` (and ``robustness.json``) is skipped, an interrupted one
continues from its ``last.pt``. ``shard=(i, n)`` runs combinations ``i, i + n, ...`` of the
fixed order, so n machines split one study (analysis.studies.collect merges them). With
``jobs >= 1`` the runs go to reusable worker processes (analysis.runtime.worker_pool), ``jobs=0`` runs
them in this process. Each run directory is locked while a job runs it: a run another process
holds is left alone and reported busy. See docs/studies.md.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from surgery import (
    check_weights_reachable,
    free_bytes,
    one_line,
    one_line_warnings,
    read_json,
    write_json,
)

from ..data import decodes_files
from ..reporting import progress_bar, pyplot
from ..runtime import (
    Job,
    RunInUseError,
    WorkerPool,
    child_environment,
    lock_run_dir,
    where_this_runs,
)
from ..training import TrainConfig, load_run_data, train, warm_feature_caches
from .collect import is_done, load_records, settings_mismatch
from .onepass import one_pass_applies, sweep_pending
from .report import write_report
from .robustness import evaluate_run
from .shifts import SHIFT_FILE, evaluate_run_shifts
from .spec import KEEP, STUDY_FILE, Combo, StudySpec, combinations, select_shard

__all__ = ["PLACEMENT_FILE", "WORKER_TARGET", "open_study", "pending_jobs", "prune_checkpoints",
           "run_job", "run_study"]

WORKER_TARGET = "analysis.studies.runner:run_job"  # what study workers call on each job
PLACEMENT_FILE = "placement.json"  # where a run ran, beside its summary


def open_study(spec: StudySpec, out: Path, shard: tuple[int, int] | None) -> None:
    """Write ``study.json``, refusing a directory that holds a study with other settings."""
    new = json.loads(json.dumps(dict(spec.to_dict(), shard=list(shard) if shard else None)))
    if (out / STUDY_FILE).is_file():
        diff = settings_mismatch(read_json(out / STUDY_FILE), new)
        if diff:
            raise ValueError(f"{str(out)!r} holds a study with other settings ({'; '.join(diff)}); "
                             "its runs would not be comparable: use another --out")
    write_json(out / STUDY_FILE, new)


def _job(combo: Combo, spec: StudySpec, out: Path) -> dict[str, Any]:
    cfg = combo.config(spec, out / "runs")
    return {"config": asdict(cfg), "robust_sizes": list(spec.robust_sizes),
            "robust_images": spec.robust_images, "robustness": spec.robustness,
            "shifts": list(spec.shifts), "shift_images": spec.shift_images, "keep": spec.keep}


def pending_jobs(spec: StudySpec, out: Path, shard: tuple[int, int] | None = None
                 ) -> tuple[list[Job], list[str]]:
    """This shard's runs not finished yet, as jobs (each with its log ``logs/NAME.log``), and
    the names of those finished."""
    pending, done = [], []
    for combo in select_shard(combinations(spec), shard):
        job = _job(combo, spec, out)
        name = job["config"]["name"]
        if is_done(out / "runs" / name, bool(spec.shifts)):
            done.append(name)
        else:
            pending.append(Job(name, job, out / "logs" / f"{name}.log"))
    return pending, done


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one run and evaluate it at the robustness sizes, holding the
    run directory's lock throughout (:class:`RunInUseError` if another process holds it)."""
    cfg = TrainConfig.from_dict(job["config"])
    run_dir = Path(cfg.out) / str(cfg.name)
    with one_line_warnings(), lock_run_dir(run_dir):
        _preload()
        data = load_run_data(cfg)  # once, for training and the robustness evaluation
        if (run_dir / "config.json").is_file():
            summary = train(resume=run_dir, data=data)
        else:
            cfg.overwrite = True
            summary = train(cfg, data=data)
        _evaluate(run_dir, job, data, cfg.device)
        write_json(run_dir / PLACEMENT_FILE, dict(where_this_runs(), device=summary.get("device")))
        prune_checkpoints(run_dir, job.get("keep", "all"))
    return summary


def _evaluate(run_dir: Path, job: dict[str, Any], data: Any, device: str) -> None:
    """Input-size robustness and (when the study asks) pixel shifts, each written once."""
    if not (run_dir / "robustness.json").is_file():
        rows = (evaluate_run(run_dir, job["robust_sizes"] or None, job["robust_images"],
                             data=data, device=device)
                if job.get("robustness", True) else [])  # []: not measured in this study
        write_json(run_dir / "robustness.json", rows)
    if job.get("shifts") and not (run_dir / SHIFT_FILE).is_file():
        rows = evaluate_run_shifts(run_dir, job["shifts"], job.get("shift_images"), data=data,
                                   device=device)
        write_json(run_dir / SHIFT_FILE, rows)


def prune_checkpoints(run_dir: str | Path, keep: str) -> list[str]:
    """Remove the checkpoints a finished, evaluated run no longer needs: ``last.pt`` (only a
    resume reads it) unless ``keep`` is ``all``, and ``best.pt`` too for ``none``. Returns the
    names removed. A run without ``summary.json`` is left alone."""
    run_dir = Path(run_dir)
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {', '.join(KEEP)}, got {keep!r}")
    if not (run_dir / "summary.json").is_file() or keep == "all":
        return []
    names = ["last.pt"] + (["best.pt"] if keep == "none" else [])
    removed = [n for n in names if (run_dir / n).is_file()]
    for n in removed:
        (run_dir / n).unlink()
    return removed


def _preload() -> None:
    """Import what a run imports on its way (matplotlib for its curves, fvcore for its MACs)
    before the run resets its peak memory, so that every run of a process starts from the same
    resident set: the first one is not lighter by those modules."""
    import importlib

    pyplot()
    try:
        importlib.import_module("fvcore.nn")
    except ImportError:  # the torch counter is used then
        pass


def _warm_decode_cache(job: dict[str, Any]) -> float:
    """Decode an image folder here, once, with its progress bar, before the workers start: they
    then open the cache instead of waiting for the first of them to decode it. Returns the
    seconds it took (0 for data sets that decode no files)."""
    cfg = TrainConfig.from_dict(job["config"])
    if not decodes_files(cfg.dataset):
        return 0.0
    return float(load_run_data(cfg).info["load_s"])


def run_study(spec: StudySpec, out: str | Path, *, jobs: int = 1,
              shard: tuple[int, int] | None = None, progress: bool = True,
              threads: int | None = None, runs_per_worker: int = 0,
              sweep_mem_gb: float | None = None) -> dict[str, Any]:
    """Run this shard's combinations not yet done, then write the report of the directory.

    Before the runs, image folders are decoded once, frozen backbones' features extracted once
    per backbone (``OUT/features``) and, on cached features, every head x setting x seed trained
    in one pass. ``jobs`` worker processes then run the jobs (0: this process); a failed run is
    recorded with the last line of its error and the others go on.

    Args:
        spec, out: the study and its directory; ``shard``: (index, count) of a split study.
        threads: torch threads per worker (default: cores / jobs).
        runs_per_worker: replace a worker after that many runs (0: never).
        sweep_mem_gb: memory the one pass may fill before it trains in several passes.

    Returns ``{"ran", "skipped", "failed": [(name, message)], "busy", "feature_caches",
    "timing", "report"}``; ``timing`` splits the wall time into data loading, features, the
    one pass, the jobs' own time and the rest (process starts, imports, waiting).
    """
    t0 = time.perf_counter()
    spec.check()
    _check_weights(spec)  # before anything is written: a study that cannot start leaves nothing
    out = Path(out)
    open_study(spec, out, shard)
    pending, done = pending_jobs(spec, out, shard)
    result: dict[str, Any] = {"ran": [], "skipped": done, "failed": [], "busy": []}
    pending, before = _before_runs(spec, out, pending, result, jobs=jobs, progress=progress,
                                   sweep_mem_gb=sweep_mem_gb)
    seconds, started = _run_with_progress(spec, out, pending, result, progress=progress,
                                          jobs=jobs, threads=threads,
                                          runs_per_worker=runs_per_worker)
    result["timing"] = _timing(time.perf_counter() - t0, seconds, jobs, started,
                               before["features"], before["decode"], before["sweep"])
    result["report"] = write_report(out, load_records([out], spec), spec,
                                    session=result["timing"])
    return result


def _before_runs(spec: StudySpec, out: Path, pending: list[Job], result: dict[str, Any], *,
                 jobs: int, progress: bool, sweep_mem_gb: float | None
                 ) -> tuple[list[Job], dict[str, float]]:
    """Decode, extract and sweep before the jobs start; the jobs still to run and the seconds
    each step took (``decode``, ``features``, ``sweep``)."""
    seconds = {"decode": _warm_decode_cache(pending[0].payload) if pending and jobs > 0 else 0.0}
    t = time.perf_counter()  # frozen backbones: every image each run reads extracted once
    result["feature_caches"] = warm_feature_caches(
        [TrainConfig.from_dict(job.payload["config"]) for job in pending],
        directory=out / "features", shared=jobs > 0, progress=progress)
    seconds["features"] = time.perf_counter() - t
    # frozen backbones on cached features: every head x setting x seed in one pass, which
    # writes the chosen runs; the jobs then only evaluate them
    t = time.perf_counter()
    if one_pass_applies(spec) and pending:
        swept = sweep_pending(spec, out, [job.name for job in pending], progress=progress,
                              mem_bytes=_sweep_bytes(sweep_mem_gb))
        result["failed"] += swept["failed"]
        result["sweeps"] = swept["groups"]
        failed = {name for name, _ in swept["failed"]}
        pending = [job for job in pending if job.name not in failed]
    seconds["sweep"] = time.perf_counter() - t
    return pending, seconds


def _run_with_progress(spec: StudySpec, out: Path, pending: list[Job], result: dict[str, Any],
                       *, progress: bool, jobs: int, threads: int | None,
                       runs_per_worker: int) -> tuple[list[float], int]:
    """Run the jobs, recording each in ``result``; their own seconds and the workers started."""
    bar = progress_bar(len(pending), "study runs", "run", per_update=True) \
        if progress and pending else None
    seconds: list[float] = []

    def record(name: str, status: str, message: str, secs: float) -> None:
        seconds.append(secs)
        if status == "ok" and not is_done(out / "runs" / name, bool(spec.shifts)):
            status, message = "failed", "the job ended without finishing the run"
        if status == "ok":
            result["ran"].append(name)
        else:
            result["busy" if status == "busy" else "failed"].append((name, one_line(message)))
        if bar is not None:
            bar.set_postfix(last=f"{name} {status}")
            bar.update(1)

    started = _run_pending(pending, jobs, threads, runs_per_worker, out, record)
    if bar is not None:
        bar.close()
    return seconds, started


def _check_weights(spec: StudySpec) -> None:
    """Pretrained weights that cannot be had (offline, not cached) stop the study at once."""
    if spec.base.get("pretrained"):
        for model in spec.models:
            check_weights_reachable(model, dict(spec.base.get("timm_options") or {}))


def _run_pending(pending: list[Job], jobs: int, threads: int | None, runs_per_worker: int,
                 out: Path, record: Callable[[str, str, str, float], None]) -> int:
    """Run the jobs (in this process for ``jobs`` <= 0); returns the worker processes started."""
    if jobs <= 0:
        for job in pending:
            t = time.perf_counter()
            try:
                run_job(job.payload)
                status, message = "ok", ""
            except RunInUseError as err:
                status, message = "busy", str(err)
            except Exception as err:  # a failed run (one that diverged, say) is reported
                status, message = "failed", one_line(err)
            record(job.name, status, message, time.perf_counter() - t)
        return 0
    if not pending:
        return 0
    (out / "logs").mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    with WorkerPool(jobs, WORKER_TARGET, child_environment(threads), log=out / "logs" / "workers.log",
                    max_jobs=runs_per_worker) as pool:
        pool.run(pending, lambda r: record(r.name, r.status, r.message, r.seconds))
    return pool.started


def _timing(wall: float, seconds: list[float], jobs: int, workers: int,
            features: float, data_load: float = 0.0, sweep: float = 0.0) -> dict[str, Any]:
    """Wall time of this invocation's runs against the sum of the jobs' own times, the image
    decoding, the shared feature extraction and the one-pass sweep before them."""
    busy = sum(seconds)
    return {"runs": len(seconds), "jobs": max(1, jobs), "workers_started": workers,
            "wall_s": wall, "jobs_s": busy, "features_s": features, "data_load_s": data_load,
            "sweep_s": sweep,
            "overhead_s": wall - data_load - features - sweep - busy / max(1, jobs)}


def _sweep_bytes(gb: float | None) -> int | None:
    """The one pass's memory budget: ``gb`` GiB, or half of what is available now."""
    if gb is not None:
        return int(gb * 2**30)
    free = free_bytes(torch.device("cpu"))
    return None if free is None else free // 2
