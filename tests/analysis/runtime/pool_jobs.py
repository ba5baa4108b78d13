"""Jobs for the worker-pool tests. Standard library only, so that a worker starts in a blink."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


class Busy(Exception):
    job_status = "busy"


def dispatch(payload: dict[str, Any]) -> None:
    """The pool's one target: ``payload["do"]`` says what this job does."""
    print(f"pid {os.getpid()} job {payload['i']}", flush=True)
    action = payload["do"]
    if action == "fail":
        raise ValueError(f"bad value {payload['i']}\nsecond line")
    if action == "busy":
        raise Busy("in use by pid 1 on elsewhere")
    if action == "crash":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "sleep":
        Path(payload["pidfile"]).write_text(str(os.getpid()))
        time.sleep(600)
