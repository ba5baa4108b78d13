"""Decoding many image files at once: worker processes, in chunks, with a progress bar.

:func:`decode_files` yields ``(row, pixels, reason)`` for each file as soon as a worker has
decoded it (in any order); the caller writes the pixels where they belong. Workers are forked
(they need no imports of their own) and ignore Ctrl-C, so an interrupt reaches only the parent,
which stops them. One worker decodes in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np

from .images import BadImageError, decode_pixels

__all__ = ["cpu_cores", "decode_files"]

Decoded = tuple[int, "np.ndarray | None", str]  # row, pixels (None if bad), the decoder's reason
_SETTINGS: dict[str, Any] = {}  # a worker's size, colour mode and resize policy


def cpu_cores() -> int:
    """The cores this process may run on (its CPU affinity), the default number of workers."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _decode_one(row: int, path: str, size: int, gray: bool, resize: str) -> Decoded:
    try:
        return row, decode_pixels(path, size, gray, resize), ""
    except BadImageError as err:
        return row, None, err.reason


def _init_worker(settings: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _SETTINGS.update(settings)


def _decode_chunk(chunk: list[tuple[int, str]]) -> list[Decoded]:
    s = _SETTINGS
    return [_decode_one(row, path, s["size"], s["gray"], s["resize"]) for row, path in chunk]


def _context() -> Any:
    """Fork where there is fork (cheap, nothing to import); spawn elsewhere."""
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def decode_files(jobs: Sequence[tuple[int, str]], size: int, gray: bool, resize: str,
                 workers: int | None = None, progress: bool = True,
                 desc: str = "decoding") -> Generator[Decoded, None, None]:
    """Decode each ``(row, path)`` of ``jobs`` to a uint8 ``(C, size, size)`` array with
    ``workers`` processes (None: every core) and a tqdm bar (images); yields
    ``(row, pixels, "")`` or ``(row, None, reason)`` for an unreadable file.

    Closing the generator early (the caller stops at a bad image, or is interrupted) stops the
    workers at once."""
    from tqdm.auto import tqdm

    workers = cpu_cores() if workers is None else workers
    if workers < 1:
        raise ValueError(f"--decode-workers must be >= 1 (or left out: every core), got {workers}")
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress or None,
               dynamic_ncols=True, leave=False)
    try:
        if workers == 1 or len(jobs) < 2:
            for row, path in jobs:
                yield _decode_one(row, path, size, gray, resize)
                bar.update(1)
            return
        yield from _pooled(jobs, workers, {"size": size, "gray": gray, "resize": resize}, bar)
    finally:
        bar.close()


def _pooled(jobs: Sequence[tuple[int, str]], workers: int, settings: dict[str, Any],
            bar: Any) -> Iterator[Decoded]:
    """The pool: chunks small enough to balance the workers and keep the bar moving."""
    per = max(1, min(32, len(jobs) // (workers * 8)))
    chunks = [list(jobs[s:s + per]) for s in range(0, len(jobs), per)]
    pool = _context().Pool(min(workers, len(chunks)), initializer=_init_worker,
                           initargs=(settings,))
    try:
        for results in pool.imap_unordered(_decode_chunk, chunks):
            yield from results
            bar.update(len(results))
        pool.close()
    finally:
        pool.terminate()
        pool.join()
