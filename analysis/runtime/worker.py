"""A pool's worker process: runs jobs read from stdin, one JSON line each, until stdin closes.

Started by analysis.runtime.worker_pool as ``python -c BOOT worker.py TARGET RESULT_FD PARENT_PID``.
It first makes sure it dies with its parent (``PR_SET_PDEATHSIG`` on Linux, a watchdog on the
parent's pid anywhere) and ignores Ctrl-C (the parent decides), then imports ``TARGET``
(``module:function``) once and calls it on each job's payload with stdout and stderr in the
job's log. Each job's result is one JSON line on RESULT_FD: ``ok``, or ``failed`` / ``busy`` (an
exception's ``job_status``) with the error. Only the standard library is imported here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["die_with_parent", "output_to"]


@contextmanager
def output_to(log: str | Path, mode: str = "w") -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so child processes and
    C extensions too) to ``log`` (``mode`` "w" or "a") until the block ends."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, mode, encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def die_with_parent(parent: int) -> None:
    """Exit when process ``parent`` does: PR_SET_PDEATHSIG on Linux, and a watchdog thread
    anywhere. For any worker process (a WorkerPool's; a process pool's initializer), so that
    killing the parent does not leave its workers running on."""
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _run_one(fn: Callable[[dict[str, Any]], Any], job: dict[str, Any]) -> dict[str, Any]:
    """Call ``fn`` on one job with stdout and stderr (file descriptors 1 and 2) in its log."""
    import traceback

    status, message = "ok", ""
    t0 = time.perf_counter()
    with output_to(job["log"]):
        try:
            fn(job["payload"])
        except Exception as err:
            traceback.print_exc()
            status = str(getattr(err, "job_status", "failed"))
            message = f"{type(err).__name__}: {err}" if status == "failed" else str(err)
    seconds = time.perf_counter() - t0
    return {"name": job["name"], "status": status, "message": message, "seconds": seconds,
            "pid": os.getpid()}


def _worker_main(argv: list[str]) -> int:
    """``worker.py TARGET RESULT_FD PARENT_PID``: run the jobs read from stdin, one JSON line
    each, and write one JSON result line each to RESULT_FD."""
    import importlib

    target, result_fd, parent = argv[0], int(argv[1]), int(argv[2])
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches us too: the parent decides
    out = os.fdopen(result_fd, "w", buffering=1)
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        if line.strip():
            out.write(json.dumps(_run_one(fn, json.loads(line))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[2:]))
