"""Pools of worker processes for functions of this package: the start method, how many cores,
and two ways to map a function over items.

:func:`map_unordered` is for long items (an architecture of a zoo sweep): a
``multiprocessing`` pool whose workers are replaced after ``max_tasks_per_child`` items (memory
does not pile up), die with this process however it ends, and are killed when the caller stops
early. :func:`process_pool` is a ``concurrent.futures`` executor for many short items (image
decoding): stopping early cancels what has not started and waits for the few running ones,
where ``Pool.terminate()`` can hang for good if a worker dies while holding the result queue.
Workers of both ignore Ctrl-C: the parent handles it and stops them.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from .signals import worker_signals
from .worker import die_with_parent

__all__ = ["START_METHODS", "can_fork", "cpu_cores", "map_unordered", "process_pool"]

START_METHODS = ("fork", "spawn")
T = TypeVar("T")
R = TypeVar("R")


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default number of workers."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether this platform starts workers by fork (cheap: they inherit what is imported)."""
    return "fork" in mp.get_all_start_methods()


def _context(start: str) -> Any:
    """``start`` (fork or spawn); spawn where there is no fork."""
    if start not in START_METHODS:
        raise ValueError(f"unknown start method {start!r}; choose one of "
                         f"{', '.join(START_METHODS)}")
    return mp.get_context("fork" if start == "fork" and can_fork() else "spawn")


def _init_worker(parent: int | None, initializer: Callable[..., None] | None,
                 initargs: tuple[Any, ...]) -> None:
    """Every worker: Ctrl-C ignored and SIGTERM ending it, dying with ``parent`` (when given),
    then the caller's own ``initializer``."""
    worker_signals()
    if parent is not None:
        die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, *, start: str = "fork",
                 initializer: Callable[..., None] | None = None,
                 initargs: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """An executor of ``workers`` processes started by ``start`` whose workers ignore Ctrl-C
    and run ``initializer(*initargs)`` first. Shut it down with ``cancel_futures=True`` to
    stop early."""
    return ProcessPoolExecutor(workers, mp_context=_context(start), initializer=_init_worker,
                               initargs=(None, initializer, initargs))


def map_unordered(fn: Callable[[T], R], items: Iterable[T], workers: int, *,
                  start: str = "spawn", max_tasks_per_child: int | None = None,
                  initializer: Callable[..., None] | None = None,
                  initargs: tuple[Any, ...] = ()) -> Generator[R, None, None]:
    """``fn`` over ``items`` in ``workers`` processes, results as they finish (in this process,
    in order, when ``workers`` <= 1). The workers die with this process, however it ends (a
    SIGTERM to it alone would otherwise leave them running on), and closing the generator
    kills them at once: call ``.close()`` on it when stopping early."""
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, items)
        return
    with _context(start).Pool(workers, maxtasksperchild=max_tasks_per_child,
                              initializer=_init_worker,
                              initargs=(os.getpid(), initializer, initargs)) as pool:
        yield from pool.imap_unordered(fn, items, chunksize=1)
