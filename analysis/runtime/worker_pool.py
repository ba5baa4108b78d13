"""A pool of reusable worker processes: each imports its target once and runs many jobs.

:class:`WorkerPool` starts ``size`` Python processes that call one target function
(``"module:function"``) on job after job, each job's output going to its own log file. A job
that raises is reported ``failed`` (or ``busy``, when its exception says so with a
``job_status`` attribute, as a run directory in use by another process does) and the worker
goes on with the next; a worker that dies (a segfault, the out-of-memory killer) is replaced and
its job reported failed with the last line of its log. Workers die with the pool's process:
``PR_SET_PDEATHSIG`` on Linux, a watchdog on the parent's pid elsewhere, and :meth:`close`
(also on Ctrl-C, which the workers ignore) kills what is left.

A worker is analysis/runtime/worker.py run as a script: it imports only the standard library
until it has made sure it dies with its parent, then imports the target once.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surgery.files import last_line

__all__ = ["Job", "JobResult", "WorkerPool"]

# run worker.py as a script without importing the package (and torch) first
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
_WORKER_PY = Path(__file__).resolve().with_name("worker.py")


@dataclass(frozen=True)
class Job:
    """One call of the target: ``payload`` is its JSON argument, ``log`` gets its output."""

    name: str
    payload: dict[str, Any]
    log: Path


@dataclass(frozen=True)
class JobResult:
    """``status``: ok, failed or busy; ``message``: the error (``Type: text``) or why the
    worker died; ``seconds``: the job's wall time in its worker; ``pid``: that worker."""

    name: str
    status: str
    message: str
    seconds: float
    pid: int
    log: Path


class _Worker:
    """One worker process, its result pipe and the job it is running."""

    def __init__(self, target: str, env: dict[str, str] | None, log: Path | None):
        read_fd, write_fd = os.pipe()
        cmd = [sys.executable, "-c", _BOOT, str(_WORKER_PY), target,
               str(write_fd), str(os.getpid())]
        err = open(log, "ab") if log is not None else None  # noqa: SIM115 (the child holds it)
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                         stderr=err, pass_fds=(write_fd,), env=env)
        finally:
            os.close(write_fd)
            if err is not None:
                err.close()
        self.fd, self.buf, self.ready, self.done = read_fd, b"", False, 0
        self.job: Job | None = None
        self.t0 = 0.0

    def give(self, job: Job) -> bool:
        """Send ``job``; False if the worker is gone."""
        self.job, self.t0 = job, time.perf_counter()
        line = json.dumps({"name": job.name, "payload": job.payload, "log": str(job.log)})
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return False
        return True

    def messages(self) -> list[dict[str, Any]] | None:
        """The complete messages that arrived; None once the worker closed its end (died)."""
        chunk = os.read(self.fd, 65536)
        if not chunk:
            return None
        self.buf += chunk
        *lines, self.buf = self.buf.split(b"\n")
        return [json.loads(ln) for ln in lines if ln.strip()]

    def stop(self, kill: bool) -> None:
        """Let an idle worker finish (``kill``: kill it, as for one in the middle of a job)."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if kill:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.fd)


class WorkerPool:
    """``size`` reusable worker processes calling ``target`` (``"package.module:function"``,
    which takes a job's payload) with ``env`` as their environment; what they print outside
    their jobs (importing the target) goes to ``log`` (default: this process's stderr).
    ``max_jobs`` > 0 replaces a worker after that many jobs (1: a fresh process for each).

    Use as a context manager (or call :meth:`close`): leaving it kills every worker. Create and
    use it from the main thread: on Linux a worker dies with the thread that started it.
    """

    def __init__(self, size: int, target: str, env: dict[str, str] | None = None,
                 log: Path | None = None, max_jobs: int = 0):
        if size < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {size}")
        self.size, self.target, self.env, self.log = size, target, env, log
        self.max_jobs = max_jobs
        self.workers: list[_Worker] = []
        self.started = 0  # worker processes started, replacements included

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker: idle ones finish, busy ones are killed."""
        while self.workers:
            worker = self.workers.pop()
            worker.stop(kill=worker.job is not None)

    def run(self, jobs: Iterable[Job],
            on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Run every job (in the workers, ``size`` at a time); results in the order they end."""
        queue, results = deque(jobs), []
        with selectors.DefaultSelector() as sel:
            while queue or any(w.job is not None for w in self.workers):
                self._dispatch(queue, sel)
                for key, _ in sel.select(timeout=1.0):
                    for result in self._collect(key.data, sel):
                        results.append(result)
                        if on_result is not None:
                            on_result(result)
        return results

    def _dispatch(self, queue: deque[Job], sel: selectors.BaseSelector) -> None:
        """Start workers up to ``size``, give idle ones a job, let idle ones go when none is left
        (or when they ran ``max_jobs``)."""
        for worker in list(self.workers):
            if worker.job is None and self.max_jobs and worker.done >= self.max_jobs:
                self._retire(worker, sel, kill=False)
        while queue and len(self.workers) < self.size:
            worker = _Worker(self.target, self.env, self.log)
            self.started += 1
            self.workers.append(worker)
            sel.register(worker.fd, selectors.EVENT_READ, worker)
        for worker in list(self.workers):
            if worker.job is not None:
                continue
            if not queue:
                self._retire(worker, sel, kill=False)
            elif not worker.give(queue[0]):
                worker.job = None  # gone before it started the job: the job waits for another
                self._retire(worker, sel, kill=True)
            else:
                queue.popleft()

    def _retire(self, worker: _Worker, sel: selectors.BaseSelector, kill: bool) -> None:
        sel.unregister(worker.fd)
        self.workers.remove(worker)
        worker.stop(kill=kill)

    def _collect(self, worker: _Worker, sel: selectors.BaseSelector) -> list[JobResult]:
        """The results a worker sent; a dead worker's job is reported failed."""
        messages = worker.messages()
        if messages is None:
            return self._bury(worker, sel)
        results = []
        for msg in messages:
            if "ready" in msg:
                worker.ready = True
                continue
            job, worker.job = worker.job, None
            worker.done += 1
            assert job is not None
            results.append(JobResult(job.name, msg["status"], msg["message"], msg["seconds"],
                                     msg["pid"], job.log))
        return results

    def _bury(self, worker: _Worker, sel: selectors.BaseSelector) -> list[JobResult]:
        job, ready = worker.job, worker.ready
        worker.job = None
        self._retire(worker, sel, kill=True)
        code = worker.proc.returncode
        if not ready:
            where = f"{self.log}: {_last_line(self.log)}" if self.log else "its error is above"
            raise RuntimeError(f"a worker process for {self.target} could not start "
                               f"({_death(code)}); {where}")
        if job is None:
            return []
        return [JobResult(job.name, "failed",
                          f"the worker process {_death(code)} during this run; last line of its "
                          f"log: {_last_line(job.log)}", time.perf_counter() - worker.t0,
                          worker.proc.pid, job.log)]


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {code}"


def _last_line(log: Path) -> str:
    return last_line(log) or "(no log, or an empty one)"
