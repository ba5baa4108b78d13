"""A study on a cluster: its pending runs as one job array through submitit, waited for, then
the report.

:func:`submit_study` submits every run that is neither finished nor queued or running
(analysis.studies.jobs) as one job array (``--launcher slurm``; ``submitit-local`` makes the
same submission with processes of this machine) and records the job ids in ``jobs.json``;
:func:`wait_study` waits with a progress bar over finished runs and writes the report when the
array has ended. A run that failed is reported with its log and the study summarises the
rest; running the command again submits the failed runs again and resumes them from their
``last.pt``. Each task runs one run (:class:`StudyTask`: the local launcher's
:func:`run_job`) with its output in ``logs/NAME.log``; submitit's own files (each task's stdout
and stderr) go to ``logs/submitit/``. A task that Slurm preempts or times out is requeued by
submitit and resumes its run. Under a frozen backbone the tasks share one feature cache per
backbone in ``STUDY/features``, built by the first task that takes its lock
(:func:`_warm_features`). ``submitit-local`` starts every run of the array at once (it has no
queue): a dry run of a small grid, not a way to run a large one here.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from surgery import one_line, read_json

from ..reporting import progress_bar
from ..runtime import (
    Job,
    RunInUseError,
    SlurmOptions,
    cancel_slurm_jobs,
    job_environment,
    make_executor,
    output_to,
    requeue,
    require_submitit,
    stop_process,
    where_this_runs,
)
from ..training import TrainConfig, warm_feature_caches
from .collect import is_done, load_records
from .jobs import BUSY_PREFIX, LOCAL_MARKER, RunState, record_cancelled, record_jobs, run_states
from .report import write_report
from .runner import open_study, pending_jobs, run_job
from .spec import STUDY_FILE, StudySpec, combinations

__all__ = ["StudyTask", "cancel_study", "study_status", "submit_study", "wait_study"]

_POLL_S = {"slurm": 30.0, "submitit-local": 1.0}
_MISSES = 10  # polls in a row squeue may fail (a busy controller) before the wait gives up


class StudyTask:
    """What one task of a study's array runs: one run of the grid, its output appended to its
    log. Checkpointable: when Slurm preempts the task (or its time runs out) submitit requeues
    it, and the run resumes from its ``last.pt``."""

    def __init__(self, name: str, payload: dict[str, Any], log: str | Path,
                 threads: int | None = None):
        self.name, self.payload, self.log, self.threads = name, payload, str(log), threads

    def __call__(self) -> dict[str, Any]:
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        where = where_this_runs()
        with output_to(self.log, "a"):
            print(f"== {self.name}: job {where['job']} on {where['host']} (pid {where['pid']}) "
                  f"at {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
            try:
                _warm_features(self.payload)
                summary = run_job(self.payload)
            except RunInUseError as err:
                print(BUSY_PREFIX + one_line(err, with_type=False), flush=True)
                return {"status": "busy", "message": str(err)}
            except Exception:
                traceback.print_exc()
                raise
        return {"status": "ok", "test_acc": summary.get("test_acc")}

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """The same task again: run_job resumes the run from its run directory."""
        return requeue(self)


def _warm_features(payload: dict[str, Any]) -> None:
    """Build the feature caches this run's frozen backbone shares with the study's unfinished
    runs of the same model, once for the whole array: the first task to take a cache's lock
    extracts it into ``STUDY/features``, the others wait and then read it (analysis.features),
    as a local study warms them before its runs. Nothing when the backbone trains."""
    cfg = TrainConfig.from_dict(payload["config"])
    runs = Path(cfg.out)
    spec = StudySpec.from_dict(read_json(runs.parent / STUDY_FILE))
    shifts = bool(spec.shifts)
    if is_done(runs / str(cfg.name), shifts):
        return
    same = [c.config(spec, runs) for c in combinations(spec) if c.model == cfg.model]
    todo = [c for c in same if not is_done(runs / str(c.name), shifts)]
    for info in warm_feature_caches(todo, directory=runs.parent / "features", shared=True,
                                    progress=False):
        how = f"extracted in {info['extract_s']:.1f} s" if info["built"] else "read"
        print(f"features: {info['images']} images {how} ({info['mib']} MiB, {info['path']})",
              flush=True)


def _submit(pending: list[Job], launcher: str, slurm: SlurmOptions, out: Path,
            threads: int | None) -> dict[str, Any]:
    """Submit the runs as one job array; record and return their jobs (run name -> job)."""
    ex = make_executor(launcher, out / "logs" / "submitit", slurm, name=f"study-{out.name}")
    if launcher == "slurm" and not slurm.array_parallelism:
        ex.update_parameters(array_parallelism=len(pending))  # submitit's own default caps at 256
    tasks = [StudyTask(j.name, j.payload, j.log, threads) for j in pending]
    output = out / "logs" / "submitit" / "controllers.log" if launcher == "submitit-local" else None
    with job_environment(threads, output):
        handles = ex.submit_array(tasks)
    jobs = dict(zip([j.name for j in pending], handles, strict=True))
    record_jobs(out, launcher, {n: str(h.job_id) for n, h in jobs.items()},
                {j.name: str(j.log) for j in pending})
    return jobs


def _wait(out: Path, names: list[str], handles: dict[str, Any], poll_s: float,
          progress: bool) -> dict[str, RunState]:
    """Poll the runs until none is queued or running; a bar counts the ended ones.
    ``handles``: this process's local jobs (polling them collects their exit status)."""
    bar = progress_bar(len(names), "study runs", "run", per_update=True) \
        if progress and names else None
    ended: set[str] = set()
    misses = 0
    while True:
        for handle in handles.values():
            handle.done()  # collects a local job's exit status
        states = run_states(out, names)
        unknown = [s.name for s in states.values() if s.state == "unknown"]
        misses = misses + 1 if unknown else 0
        if misses >= _MISSES:
            raise ValueError(f"cannot follow the study's jobs: squeue did not answer {misses} "
                             f"times in a row ({len(unknown)} runs); the jobs go on: run the "
                             "same command again later, or check with --status")
        for s in states.values():
            if not s.live and s.name not in ended:
                ended.add(s.name)
                if bar is not None:
                    bar.set_postfix(last=f"{s.name} {s.state}")
                    bar.update(1)
        if len(ended) == len(names):
            if bar is not None:
                bar.close()
            return states
        time.sleep(poll_s)


def submit_study(spec: StudySpec, out: str | Path, launcher: str, slurm: SlurmOptions, *,
                 threads: int | None = None) -> dict[str, Any]:
    """Submit the study's runs that are neither finished nor queued or running as one job
    array (recorded in ``jobs.json``).

    Returns ``{"launcher", "pending": [names of every unfinished run], "skipped": [finished],
    "submitted": {name: job id}, "live": {name: state}, "handles": {name: submitit job}}``;
    ``live``: runs still queued or running from an earlier submission, left alone.
    ``threads``: torch threads per run (default: the run's CPUs, ``slurm.cpus_per_task``)."""
    require_submitit(launcher)
    spec.check()
    out = Path(out).absolute()  # the jobs may start in another directory (sbatch --chdir)
    open_study(spec, out, None)
    pending, done = pending_jobs(spec, out)
    before = run_states(out, [j.name for j in pending])
    unknown = [s.name for s in before.values() if s.state == "unknown"]
    if unknown:
        raise ValueError(f"cannot tell whether {len(unknown)} runs of {str(out)!r} are still "
                         "queued: squeue does not answer here; run this on the cluster's login "
                         "node")
    todo = [j for j in pending if not before[j.name].live]
    handles = _submit(todo, launcher, slurm, out, threads or slurm.cpus_per_task) if todo else {}
    return {"launcher": launcher, "pending": [j.name for j in pending], "skipped": done,
            "submitted": {n: str(h.job_id) for n, h in handles.items()},
            "live": {n: s.state for n, s in before.items() if s.live}, "handles": handles}


def wait_study(spec: StudySpec, out: str | Path, submission: dict[str, Any], *,
               progress: bool = True, poll_s: float | None = None) -> dict[str, Any]:
    """Wait until no unfinished run of :func:`submit_study`'s ``submission`` is queued or
    running, then write the report of every finished run.

    Returns ``{"ran": [...], "failed": [(name, message)], "busy": [(name, message)], "report":
    {...}, "timing": {"runs", "wall_s"}}``; a failed run's message says how its job ended and
    the last line of its log (``logs/NAME.log``)."""
    t0 = time.perf_counter()
    out = Path(out)
    launcher = submission["launcher"]
    local = submission["handles"] if launcher == "submitit-local" else {}
    final = _wait(out, submission["pending"], local,
                  poll_s if poll_s is not None else _POLL_S.get(launcher, 30.0), progress)
    result: dict[str, Any] = {"ran": [], "failed": [], "busy": [], "cancelled": []}
    for s in final.values():
        if s.state == "finished":
            result["ran"].append(s.name)
        else:
            key = s.state if s.state in ("busy", "cancelled") else "failed"
            result[key].append((s.name, s.message))
    result["timing"] = {"runs": len(final), "wall_s": time.perf_counter() - t0}
    missing = [name for name, _ in result["failed"] + result["busy"]]
    result["report"] = write_report(out, load_records([out], spec), spec, missing=missing)
    return result


def _study_names(out: Path) -> list[str]:
    path = out / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(out)!r} is not a study directory (no {STUDY_FILE}); give "
                                "the --out of a study")
    spec = StudySpec.from_dict(read_json(path))
    return [str(c.config(spec, Path(".")).name) for c in combinations(spec)]


def study_status(out: str | Path) -> list[RunState]:
    """Every run of the study in ``out`` with its state, job, host and log (jobs.RunState)."""
    out = Path(out)
    return list(run_states(out, _study_names(out)).values())


def cancel_study(out: str | Path) -> list[RunState]:
    """Cancel the study's queued and running jobs (scancel; SIGINT to local jobs); returns the
    runs whose jobs were cancelled. ValueError when Slurm refuses."""
    out = Path(out)
    live = [s for s in study_status(out) if s.live and s.job]
    slurm = [s for s in live if s.launcher == "slurm"]
    error = cancel_slurm_jobs(s.job for s in slurm if s.job)
    if error:
        raise ValueError(f"could not cancel the study's Slurm jobs: {error}")
    local = [s for s in live if s.launcher != "slurm" and stop_process(int(s.job or 0),
                                                                       LOCAL_MARKER)]
    record_cancelled(out, [s.name for s in slurm + local])
    return slurm + local
