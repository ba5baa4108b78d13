"""The submitit glue: executors, the environment jobs are submitted with, requeueing.

submitit is the optional extra ``cluster`` (``has_submitit``); without it
:func:`require_submitit` says how to install it. Every use of submitit goes through here:
:func:`make_executor` (Slurm or submitit's local executor), :func:`job_environment` (what a
submission passes on), :func:`requeue` (what a checkpointable job returns when Slurm preempts
it), :func:`export_torch_distributed` (a task's rank and world size where torchrun puts them)
and :func:`job_error_line` (why a job failed, in one line).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from surgery import one_line

from .commands import child_environment
from .launcher import CLUSTER_EXTRA, LAUNCHERS, SlurmOptions

try:  # optional: pip install submitit (headswap[cluster])
    import submitit

    has_submitit = True
except ImportError:  # pragma: no cover - depends on the environment
    submitit = None  # type: ignore[assignment]
    has_submitit = False

__all__ = ["export_torch_distributed", "has_submitit", "job_environment", "job_error_line",
           "make_executor", "requeue", "require_submitit"]


def require_submitit(launcher: str) -> None:
    """ValueError naming the extra to install when submitit is missing."""
    if not has_submitit:
        raise ValueError(f"--launcher {launcher} needs submitit, the optional extra 'cluster': "
                         f"{CLUSTER_EXTRA}; or use --launcher local")


def make_executor(launcher: str, folder: str | Path, opts: SlurmOptions, *,
                  name: str = "headswap") -> Any:
    """A submitit executor for ``launcher`` (``slurm`` or ``submitit-local``) writing its files
    (pickles, each task's stdout and stderr) into ``folder``."""
    require_submitit(launcher)
    if launcher == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=str(folder))
        except RuntimeError:
            raise ValueError("--launcher slurm needs Slurm's srun and sbatch on PATH (run it on "
                             "a login node of the cluster), or try it here with --launcher "
                             "submitit-local") from None
        params: dict[str, Any] = {
            "job_name": name, "time": opts.time_min, "nodes": opts.nodes,
            "ntasks_per_node": opts.tasks_per_node, "gpus_per_node": opts.gpus_per_node or None,
            "cpus_per_task": opts.cpus_per_task, "partition": opts.partition,
            "account": opts.account, "mem": opts.mem, "setup": list(opts.setup) or None,
            "additional_parameters": dict(opts.options) or None}
        if opts.array_parallelism:
            params["array_parallelism"] = opts.array_parallelism
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        return ex
    if launcher != "submitit-local":
        raise ValueError(f"unknown launcher {launcher!r}; choose one of {', '.join(LAUNCHERS)}")
    if opts.nodes > 1:
        raise ValueError(f"--launcher submitit-local runs on this one machine: --slurm-nodes 1, "
                         f"got {opts.nodes} (use --slurm-tasks-per-node for more processes)")
    local = submitit.LocalExecutor(folder=str(folder))
    local.update_parameters(timeout_min=opts.time_min, tasks_per_node=opts.tasks_per_node,
                         gpus_per_node=opts.gpus_per_node, setup=list(opts.setup))
    return local


@contextmanager
def job_environment(threads: int | None = None,
                    output: str | Path | None = None) -> Iterator[None]:
    """The environment jobs are submitted with (sbatch and the local executor pass it on): our
    packages importable from this checkout, and ``threads`` OpenMP threads when given.
    ``output``: submitit's local executor starts a controller process per job that inherits
    the submitting process's terminal; with a file here, the controllers get that file for
    their stdout and stderr (and no stdin) instead, so that they never write into the user's
    terminal or hold a pipe open after the command returned."""
    with _stdio_to(output):
        with _environment(threads):
            yield


@contextmanager
def _stdio_to(path: str | Path | None) -> Iterator[None]:
    """Point file descriptors 0, 1 and 2 at /dev/null, ``path``, ``path`` while the block
    runs (the processes it starts inherit them), then back."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in (0, 1, 2)]
    log = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((0, 1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log)
        os.close(null)


@contextmanager
def _environment(threads: int | None) -> Iterator[None]:
    """This process's environment set to :func:`child_environment` while the block runs."""
    keys = ("PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in keys}
    child = child_environment(threads)
    os.environ.update({k: child[k] for k in keys if k in child})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def requeue(job: Any) -> Any:
    """What a checkpointable job's ``checkpoint`` returns: ``job`` submitted again by submitit
    when Slurm preempts it or its time runs out."""
    return submitit.helpers.DelayedSubmission(job)


def export_torch_distributed() -> None:
    """In a job of several tasks, put each task's rank, the world size and the first node's
    address where torchrun would (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``), so that the code takes the same distributed path as under torchrun."""
    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True)


def job_error_line(error: BaseException | str) -> str:
    """The line that says why a submitit job failed: the last line of the traceback it
    reports (``ValueError: ...``), else the first line of its message."""
    text = str(error)
    blocks = re.split(r"\n-{10,}\n", text)
    if len(blocks) >= 3:
        lines = [ln.strip() for ln in blocks[1].splitlines() if ln.strip()]
        if lines:
            return one_line(lines[-1])
    return one_line(text)
