"""Signal handling for workers and long sweeps: who reacts to Ctrl-C and to SIGTERM.

Workers ignore Ctrl-C (:func:`ignore_interrupts`): the terminal sends SIGINT to the whole process
group, and the parent decides what happens to its workers. A sweep that must keep what it
computed when a scheduler stops it treats SIGTERM as Ctrl-C (:func:`sigterm_as_interrupt`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

__all__ = ["ignore_interrupts", "sigterm_as_interrupt", "worker_signals"]


def ignore_interrupts() -> None:
    """Ignore Ctrl-C (SIGINT) in this process: for a worker whose parent stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_signals() -> None:
    """A pool worker's signals: Ctrl-C ignored, SIGTERM ends it (a forked worker would
    otherwise inherit a sweep's SIGTERM-as-Ctrl-C, and a pool stopping its workers with SIGTERM
    would print a KeyboardInterrupt traceback for each)."""
    ignore_interrupts()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM (a scheduler's stop, ``kill``) raises KeyboardInterrupt, as
    Ctrl-C does; the previous handler is put back afterwards. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
