"""A study's cluster jobs: which job runs which run (``jobs.json``), and what state each run is in.

The study directory records every job it submitted (``jobs.json``: run name -> job id, the
launcher, when and from which host). A run's state comes from its files and its job:
``finished`` (its summary and robustness written), ``queued`` or ``running`` (its job is still in
Slurm's queue, or its local process is alive), ``failed`` (its job ended without finishing it;
the message is the last line of its log) or ``not submitted``. Re-running a study submits again
only what is neither finished nor queued or running. ``unknown``: Slurm cannot be asked here (no
squeue), so the run is left alone. A run of a study run locally (no job recorded for it) is
``running`` while a live process of this host holds its lock, ``interrupted`` when it left a
checkpoint or metrics to resume from, else ``not started``.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgery import last_line, read_json, write_json

from ..runtime import SLURM_LIVE, process_alive, run_owner, slurm_end_states, slurm_queue
from .collect import is_done
from .spec import STUDY_FILE, StudySpec

__all__ = ["JOBS_FILE", "RunState", "local_job_alive", "read_jobs", "record_cancelled",
           "record_jobs", "run_states"]

JOBS_FILE = "jobs.json"
LOCAL_MARKER = "submitit"  # in the command line of a local job's process
BUSY_PREFIX = "busy: "  # a job's last log line when another process held its run


@dataclass
class RunState:
    """One run of a study: ``state`` (finished, queued, running, failed, cancelled, not
    submitted, unknown; for local studies interrupted, not started), its last job (``job``, ``launcher``), where it ran or runs, its log, and for a
    failed run why (``message``)."""

    name: str
    state: str
    job: str | None = None
    launcher: str | None = None
    where: str | None = None
    log: str | None = None
    message: str = ""

    @property
    def live(self) -> bool:
        return self.state in ("queued", "running", "unknown")


def read_jobs(out: Path) -> dict[str, Any]:
    """The study's ``jobs.json`` (``{"runs": {name: record}, "arrays": [...]}``)."""
    path = Path(out) / JOBS_FILE
    data = read_json(path) if path.is_file() else {}
    return {"runs": dict(data.get("runs", {})), "arrays": list(data.get("arrays", []))}


def record_jobs(out: Path, launcher: str, jobs: dict[str, str], logs: dict[str, str]) -> None:
    """Add one submission (run name -> job id) to ``jobs.json``."""
    book = read_jobs(out)
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    host = socket.gethostname()
    for name, job in jobs.items():
        book["runs"][name] = {"job": job, "launcher": launcher, "submitted": when, "host": host,
                              "log": logs[name]}
    if jobs:
        first = next(iter(jobs.values()))
        book["arrays"].append({"job": first.split("_")[0], "launcher": launcher,
                               "runs": len(jobs), "submitted": when, "host": host})
    write_json(Path(out) / JOBS_FILE, book)


def record_cancelled(out: Path, names: list[str]) -> None:
    """Mark the jobs of these runs as cancelled in ``jobs.json`` (a new submission of a run
    replaces its record, and with it the mark)."""
    book = read_jobs(out)
    when = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for name in names:
        if name in book["runs"]:
            book["runs"][name]["cancelled"] = when
    write_json(Path(out) / JOBS_FILE, book)


def local_job_alive(record: dict[str, Any]) -> bool:
    """Whether a local job (its id is its controller's pid) still runs on this host."""
    if record.get("host") != socket.gethostname():
        return False  # submitted from another machine: its processes are not ours to see
    try:
        return process_alive(int(record["job"]), LOCAL_MARKER)
    except (KeyError, ValueError):
        return False


def run_states(out: Path, names: list[str]) -> dict[str, RunState]:
    """The state of each named run of the study in ``out`` (see the module docstring)."""
    study = Path(out) / STUDY_FILE  # a study with pixel shifts is finished only with them
    shifts = study.is_file() and bool(StudySpec.from_dict(read_json(study)).shifts)
    out = Path(out)
    book = read_jobs(out)["runs"]
    slurm_ids = [str(r["job"]) for n, r in book.items() if n in names and r["launcher"] == "slurm"]
    queue = slurm_queue() if slurm_ids else {}
    states = {}
    for name in names:
        record = book.get(name)
        log = str(out / "logs" / f"{name}.log")
        run_dir = out / "runs" / name
        if is_done(run_dir, shifts):
            where = read_json(run_dir / "placement.json") if (run_dir / "placement.json").is_file() \
                else {}
            states[name] = RunState(name, "finished", (record or {}).get("job") or where.get("job"),
                                    (record or {}).get("launcher"), where.get("host"), log)
        elif record is None:
            states[name] = _unrecorded_state(name, run_dir, log, submitted=bool(book))
        else:
            states[name] = _job_state(name, record, queue, log)
            if states[name].state == "running":
                states[name].where = run_owner(run_dir).get("host") or states[name].where
    _explain_failures(out, [s for s in states.values() if s.state == "failed"], book)
    for s in states.values():  # a cancelled Slurm job that Slurm says ended so (or cannot say)
        record = book.get(s.name) or {}
        if s.state == "failed" and record.get("cancelled") and s.message.startswith(
                ("the job ended (CANCELLED", "the job ended without")):
            _cancelled(s, record)
    return states


def _unrecorded_state(name: str, run_dir: Path, log: str, submitted: bool) -> RunState:
    """A run no job was recorded for: ``not submitted`` in a study sent to a cluster, else (a
    local study) running, interrupted or not started, from its directory."""
    owner = run_owner(run_dir)
    pid = owner.get("pid")  # pid 0 would ask about our own process group: never "alive" here
    if owner.get("host") == socket.gethostname() and pid and process_alive(int(pid)):
        return RunState(name, "running", where=owner["host"], log=log)
    if (run_dir / "last.pt").is_file() or (run_dir / "metrics.jsonl").is_file():
        return RunState(name, "interrupted", log=log,
                        message="run the study's command again to resume it")
    return RunState(name, "not submitted" if submitted else "not started", log=log)


def _job_state(name: str, record: dict[str, Any], queue: dict[str, str] | None,
               log: str) -> RunState:
    """A submitted, unfinished run: queued or running while its job is, else failed."""
    job, launcher = str(record["job"]), str(record["launcher"])
    state = RunState(name, "failed", job, launcher, None, log)
    if launcher == "slurm":
        if queue is None:
            state.state = "unknown"
            state.message = "squeue cannot be asked here"
        elif queue.get(job) in SLURM_LIVE:
            state.state = "queued" if queue[job] == "PENDING" else "running"
    elif local_job_alive(record):
        state.state, state.where = "running", record.get("host")
    if state.state == "failed" and record.get("cancelled") and launcher != "slurm":
        _cancelled(state, record)  # (a Slurm job: its accounting decides, _explain_failures)
    return state


def _cancelled(state: RunState, record: dict[str, Any]) -> None:
    state.state = "cancelled"
    state.message = (f"cancelled at {record['cancelled']}; run the study's command again to "
                     "resume it")


def _explain_failures(out: Path, failed: list[RunState], book: dict[str, Any]) -> None:
    """Each failed run's message: how Slurm says its job ended (where accounting tells) and
    the last line of its log (or of the job's own error stream)."""
    ends = slurm_end_states(s.job for s in failed if s.launcher == "slurm" and s.job)
    for s in failed:
        last = last_line(Path(s.log or ""))
        if last is None and s.job:
            last = last_line(out / "logs" / "submitit" / f"{s.job}_0_log.err")
        end = ends.get(s.job or "")
        if last and last.startswith(BUSY_PREFIX):
            s.state, s.message = "busy", last[len(BUSY_PREFIX):]
            continue
        what = f"the job ended ({end}) without finishing the run" if end \
            else "the job ended without finishing the run"
        s.message = what + (f"; last line of its log: {last}" if last else "")


