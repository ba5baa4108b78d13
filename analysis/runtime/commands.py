"""Child processes of ours: the environment they start with, and a command run to its end, timed.

:func:`child_environment` is what a worker or a submitted job inherits: our packages importable
from this checkout and, when given, its number of OpenMP/MKL threads. :func:`run_command` starts
a command as a child process, waits for it and reports its exit code, wall-clock seconds and
CPU seconds (the child's and its waited-for descendants', from ``RUSAGE_CHILDREN``: what the
command cost, whatever else the machine was doing); benchmarks time tools with it.
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CommandRun", "child_environment", "run_command"]

_ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout that holds our packages


def child_environment(threads: int | None = None) -> dict[str, str]:
    """This process's environment for a child: our packages importable from this checkout
    (first on ``PYTHONPATH``) and ``threads`` OpenMP/MKL threads when given."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")]))
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


@dataclass(frozen=True)
class CommandRun:
    """One command's ``code`` (exit status), ``wall_s`` and ``cpu_s`` (user + system)."""

    code: int
    wall_s: float
    cpu_s: float


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(cmd: Sequence[str], *, cwd: str | Path | None = None,
                log: str | Path | None = None) -> CommandRun:
    """Run ``cmd`` in ``cwd`` to its end, its stdout and stderr to ``log`` (default: this
    process's), and time it."""
    cpu, t0 = _children_cpu(), time.perf_counter()
    if log is None:
        code = subprocess.call(list(cmd), cwd=cwd)
    else:
        with open(log, "w") as f:
            code = subprocess.call(list(cmd), stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
    return CommandRun(code, time.perf_counter() - t0, _children_cpu() - cpu)
