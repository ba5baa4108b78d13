"""Running a head comparison study: every pending run of the grid, resumable, in this process or
in child processes, then the report.

Resuming is the default: a combination whose run directory has ``summary.json`` (and
``robustness.json``) is skipped, an interrupted one continues from its ``last.pt``.
``shard=(i, n)`` runs only combinations ``i, i + n, i + 2n, ...`` (0-based) of the fixed order, so
n machines split one study; analysis.studies.collect merges their directories into one report.
With ``jobs >= 1`` each run is its own child process (its peak memory is then its own, and a
crash loses one run); ``jobs=0`` runs in this process (tests; memory figures are then the
process's peak so far).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

from surgery import read_json, write_json

from ..data import decodes_files
from ..training import TrainConfig, load_run_data, train
from .collect import is_done, load_records, settings_mismatch
from .report import write_report
from .robustness import evaluate_run
from .spec import STUDY_FILE, Combo, StudySpec, combinations, select_shard

__all__ = ["run_job", "run_study"]


def _open_study(spec: StudySpec, out: Path, shard: tuple[int, int] | None) -> None:
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
            "robust_images": spec.robust_images}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one run and evaluate it at the robustness sizes."""
    cfg = TrainConfig.from_dict(job["config"])
    run_dir = Path(cfg.out) / str(cfg.name)
    data = load_run_data(cfg)  # once, for training and the robustness evaluation
    if (run_dir / "config.json").is_file():
        summary = train(resume=run_dir, data=data)
    else:
        cfg.overwrite = True
        summary = train(cfg, data=data)
    if not (run_dir / "robustness.json").is_file():
        rows = evaluate_run(run_dir, job["robust_sizes"] or None, job["robust_images"],
                            data=data, device=cfg.device)
        write_json(run_dir / "robustness.json", rows)
    return summary


def _warm_decode_cache(job: dict[str, Any]) -> float:
    """Decode an image folder here, once, with its progress bar, before child processes start:
    they then open the cache instead of waiting for the first of them to decode it. Returns the
    seconds it took (0 for data sets that decode no files)."""
    cfg = TrainConfig.from_dict(job["config"])
    if not decodes_files(cfg.dataset):
        return 0.0
    return float(load_run_data(cfg).info["load_s"])


def _spawn(job: dict[str, Any], log: Path, threads: int) -> tuple[int, str]:
    """Run one job in a child process (``python -m analysis.studies.runner JOB``); (exit code, last line)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.call([sys.executable, "-m", "analysis.studies.runner", json.dumps(job)],
                               stdout=f, stderr=subprocess.STDOUT, env=env)
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln]
    return code, (lines[-1] if lines else "")


def run_study(spec: StudySpec, out: str | Path, *, jobs: int = 1,
              shard: tuple[int, int] | None = None, progress: bool = True,
              threads: int | None = None) -> dict[str, Any]:
    """Run this shard's combinations not yet done, then write the report of the directory.

    Returns ``{"ran": [...], "skipped": [...], "failed": [(name, message), ...], "report": {...}}``
    (run names), and ``data_load_s``: the seconds this process spent decoding (or opening) an
    image folder's cache before starting child processes. ``threads``: torch threads per child (default: cores / jobs; on a shared,
    busy CPU 1 is faster). In-process (``jobs=0``) errors propagate; in child processes a failed run is
    recorded with the last line of its log (``logs/NAME.log``) and the others continue.
    """
    spec.check()
    out = Path(out)
    _open_study(spec, out, shard)
    result: dict[str, Any] = {"ran": [], "skipped": [], "failed": [], "data_load_s": 0.0}
    pending = []
    for combo in select_shard(combinations(spec), shard):
        job = _job(combo, spec, out)
        name = job["config"]["name"]
        if is_done(out / "runs" / name):
            result["skipped"].append(name)
        else:
            pending.append((name, job))
    if pending and jobs > 0:
        result["data_load_s"] = _warm_decode_cache(pending[0][1])
    bar = _bar(len(pending), progress)
    if jobs <= 0:
        for name, job in pending:
            run_job(job)
            result["ran"].append(name)
            bar.update(1)
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_spawn, job, out / "logs" / f"{name}.log", threads): name
                       for name, job in pending}
            for fut in as_completed(futures):
                code, last = fut.result()
                name = futures[fut]
                if code == 0 and not is_done(out / "runs" / name):
                    code, last = -1, "the child process exited without finishing the run"
                if code == 0:
                    result["ran"].append(name)
                else:
                    result["failed"].append((name, f"exit {code}: {last}"))
                bar.update(1)
    bar.close()
    result["report"] = write_report(out, load_records([out], spec), spec)
    return result


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="study runs", unit="run", disable=not enabled or total == 0,
                dynamic_ncols=True)


def _child_main(argv: list[str]) -> int:
    """Entry point of a child process: one job, given as JSON on the command line."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    run_job(json.loads(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
