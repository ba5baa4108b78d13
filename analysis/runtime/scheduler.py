"""What the scheduler says about jobs: Slurm's queue (``squeue``, ``sacct``, ``scancel``) and, for
jobs that run as local processes (submitit's local executor), the process table.

The run-directory lock asks it whether the Slurm job that holds a run is still there (a lock
whose job has left the queue is taken over), and studies on a cluster ask which of their jobs
are still queued or running. Each query is one command with a timeout; when the command is
missing or fails the answer is None ("cannot tell"), and callers keep to what they see
themselves (files, their own processes).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["SLURM_LIVE", "cancel_slurm_jobs", "process_alive", "slurm_end_states", "slurm_queue",
           "stop_process", "where_this_runs"]

# squeue lists finished jobs for a few minutes too: these states are the ones still in play
SLURM_LIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                        "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED",
                        "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
_TIMEOUT_S = 60


def _run(cmd: list[str]) -> str | None:
    """The standard output of ``cmd``; None when it is missing, fails or hangs."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def slurm_queue(user: str | None = None) -> dict[str, str] | None:
    """``user``'s jobs in Slurm's queue (default: ours): job id -> state (``PENDING``,
    ``RUNNING``, ...; see :data:`SLURM_LIVE`). An array task is listed under its array id
    (``12345_3``) and under its own job id (``SLURM_JOB_ID`` inside the task). None when squeue
    is missing or fails."""
    out = _run(["squeue", "-h", "-r", "-u", user or getpass.getuser(), "-o", "%i|%A|%T"])
    if out is None:
        return None
    queue: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            queue[parts[0]] = queue[parts[1]] = parts[2].split()[0] if parts[2] else "UNKNOWN"
    return queue


def slurm_end_states(job_ids: Iterable[str]) -> dict[str, str]:
    """How finished Slurm jobs ended, from accounting (``FAILED``, ``TIMEOUT``,
    ``OUT_OF_MEMORY``, ``NODE_FAIL``, ``CANCELLED``, ...): job id -> state; empty where sacct is
    missing or accounting is off."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)])
    states: dict[str, str] = {}
    for line in (out or "").splitlines():
        job, _, state = line.strip().partition("|")
        if job and state:
            states[job] = state.split()[0]  # "CANCELLED by 123" -> CANCELLED
    return states


def cancel_slurm_jobs(job_ids: Iterable[str]) -> str | None:
    """``scancel`` the jobs; None when done, else why not (scancel missing or its error)."""
    ids = sorted(set(job_ids))
    if not ids:
        return None
    if shutil.which("scancel") is None:
        return "scancel is not on PATH (run this on a machine of the cluster)"
    done = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=_TIMEOUT_S)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")


def process_alive(pid: int, marker: str | None = None) -> bool:
    """Whether process ``pid`` of this machine exists and is not a zombie (and, where /proc
    shows it, has ``marker`` in its command line: a reused pid is not our process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return marker is None  # someone else's process: ours only if we cannot tell
    proc = Path(f"/proc/{pid}")
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X") and (marker is None or marker in cmdline)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc; none where there is no /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(stat.parent.name))
    return kids


def stop_process(pid: int, marker: str | None = None, grace_s: float = 5.0) -> bool:
    """Stop a local job as scancel stops a Slurm one: SIGINT to its process and every
    descendant (submitit's local controller, or the shell that runs the job's set-up commands
    first, and its tasks), then SIGKILL to those still there after ``grace_s`` seconds (a
    process started with SIGINT ignored, as under nohup-like launchers, ignores it too). True
    if it was alive."""
    if not process_alive(pid, marker):
        return False
    family, i = [pid], 0
    while i < len(family):
        family += _children(family[i])
        i += 1
    _signal(family, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(process_alive(p) for p in family):
        time.sleep(0.1)
    _signal([p for p in family if process_alive(p)], signal.SIGKILL)
    return True


def _signal(pids: list[int], sig: int) -> None:
    for member in pids:
        try:
            os.kill(member, sig)
        except ProcessLookupError:
            pass


def where_this_runs() -> dict[str, Any]:
    """Where this process runs: host, pid, the scheduler and the job id it gave (Slurm's, an
    array task as ``ARRAY_TASK``; submitit's local executor's), and the time now, for a
    run's record."""
    env = os.environ
    job = (f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
           if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID")
           else env.get("SLURM_JOB_ID") or env.get("SUBMITIT_LOCAL_JOB_ID"))
    scheduler = ("slurm" if env.get("SLURM_JOB_ID") else
                 "submitit-local" if env.get("SUBMITIT_LOCAL_JOB_ID") else None)
    return {"host": socket.gethostname(), "pid": os.getpid(), "scheduler": scheduler, "job": job,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
