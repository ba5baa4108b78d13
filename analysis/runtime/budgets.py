"""Time budgets for one piece of work: CPU seconds (SIGPROF) or wall-clock seconds (SIGALRM).

:func:`cpu_budget` counts this process's CPU time, so a machine loaded by other jobs slows the
work down without timing it out (export coverage: a pair's limit; the exporter: how long dynamo
may try). :func:`wall_budget` counts wall-clock time (the zoo table: an architecture that hangs).
Both are no-ops off the main thread and where the timer does not exist (not POSIX), and both
put back a timer a caller had set.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["BUDGET_KINDS", "CpuBudgetExceeded", "WallBudgetExceeded", "budget", "cpu_budget",
           "one_torch_thread", "wall_budget"]

BUDGET_KINDS = ("cpu", "wall")


class CpuBudgetExceeded(BaseException):
    """The block of :func:`cpu_budget` used more CPU time than it was given; ``budget`` is the
    object that block's ``with ... as`` received (nested budgets tell theirs apart by it).

    A ``BaseException``, as ``KeyboardInterrupt`` is: torch.onnx catches ``Exception`` and tries
    its next capture strategy, and a budget it swallowed would never end the export.
    """

    def __init__(self, message: str, budget: object = None):
        super().__init__(message)
        self.budget = budget


_REFIRE_CPU_SECONDS = 1.0  # a spent budget fires again this often until its block ends


@contextlib.contextmanager
def cpu_budget(seconds: float | None) -> Iterator[object | None]:
    """Raise :class:`CpuBudgetExceeded` inside the block once this process has used ``seconds``
    of CPU time in it (SIGPROF; CPU time, so a busy machine does not make it fire early). The
    block receives the budget's identity (None when there is no timer of its own), which the
    exception carries as ``budget``.

    Once spent, it fires again every CPU second until the block ends, so that code which
    catches the exception and carries on is stopped at the next firing. A timer already
    running (a caller's own budget) is kept: when it is due first it fires as it would have,
    otherwise it is set again afterwards with what is left of it (and its own repeat). A no-op
    for None, off the main thread, or without ``setitimer`` (not POSIX).
    """
    if seconds is None or not hasattr(signal, "setitimer") or not _main_thread():
        yield None
        return
    outer_left, outer_repeat = signal.getitimer(signal.ITIMER_PROF)
    if outer_left and outer_left <= seconds:
        yield None  # the caller's budget ends first
        return
    outer_handler = signal.getsignal(signal.SIGPROF)
    budget = object()
    active = True

    def expired(signum: int, frame: Any) -> None:
        if active:
            raise CpuBudgetExceeded(f"no result within {seconds:g} CPU s", budget)

    start = time.process_time()
    signal.signal(signal.SIGPROF, expired)
    signal.setitimer(signal.ITIMER_PROF, seconds, _REFIRE_CPU_SECONDS)
    try:
        yield budget
    finally:
        active = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, outer_handler)
        if outer_left:
            used = time.process_time() - start
            signal.setitimer(signal.ITIMER_PROF, max(1e-3, outer_left - used), outer_repeat)


class WallBudgetExceeded(Exception):
    """The block of :func:`wall_budget` ran longer than it was given. An ``Exception``: code
    that turns failures into records (a zoo-table row) records it as one."""


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def wall_budget(seconds: float | None) -> Iterator[None]:
    """Raise :class:`WallBudgetExceeded` inside the block after ``seconds`` of wall-clock time
    (SIGALRM). A caller's alarm is put back afterwards, with what is left of it. A no-op for
    None, off the main thread, or without ``setitimer``."""
    if seconds is None or not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return
    outer_left, outer_repeat = signal.getitimer(signal.ITIMER_REAL)
    outer_handler = signal.getsignal(signal.SIGALRM)

    def expired(signum: int, frame: Any) -> None:
        raise WallBudgetExceeded(f"no result within {seconds:g} s")

    start = time.monotonic()
    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_left:
            used = time.monotonic() - start
            signal.setitimer(signal.ITIMER_REAL, max(1e-3, outer_left - used), outer_repeat)


def budget(kind: str, seconds: float | None) -> contextlib.AbstractContextManager[Any]:
    """The budget of ``kind`` (``cpu`` or ``wall``, see :data:`BUDGET_KINDS`) for ``seconds``."""
    if kind == "cpu":
        return cpu_budget(seconds)
    if kind == "wall":
        return wall_budget(seconds)
    raise ValueError(f"unknown budget kind {kind!r}; choose one of {', '.join(BUDGET_KINDS)}")


def one_torch_thread() -> None:
    """A sweep worker's share of the CPU: one torch thread (the sweep runs one item per core,
    and CPU-second budgets then mean one core's time)."""
    import torch

    torch.set_num_threads(1)
