"""Decoding many image files at once: worker processes, in chunks, with a progress bar.

:func:`decode_files` yields ``(row, pixels, reason)`` for each file as soon as a worker has
decoded it (in any order); the caller writes the pixels where they belong. The workers come from
analysis.runtime's :func:`process_pool`: forked (they need no imports of their own), ignoring
Ctrl-C, so an interrupt reaches only the parent, which stops them. One worker decodes in this
process.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import as_completed
from typing import Any

import numpy as np

from ..runtime import cpu_cores, process_pool
from .images import BadImageError, decode_pixels

__all__ = ["decode_files"]

Decoded = tuple[int, "np.ndarray | None", str]  # row, pixels (None if bad), the decoder's reason
_SETTINGS: dict[str, Any] = {}  # a worker's size, colour mode and resize policy


def _decode_one(row: int, path: str, size: int, gray: bool, resize: str) -> Decoded:
    try:
        return row, decode_pixels(path, size, gray, resize), ""
    except BadImageError as err:
        return row, None, err.reason


def _init_worker(settings: dict[str, Any]) -> None:
    _SETTINGS.update(settings)


def _decode_chunk(chunk: list[tuple[int, str]]) -> list[Decoded]:
    s = _SETTINGS
    return [_decode_one(row, path, s["size"], s["gray"], s["resize"]) for row, path in chunk]


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
    """The pool: chunks small enough to balance the workers and keep the bar moving; stopping
    early cancels the chunks not started and waits for the few running ones (at most 32 images
    each)."""
    per = max(1, min(32, len(jobs) // (workers * 8)))
    chunks = [list(jobs[s:s + per]) for s in range(0, len(jobs), per)]
    pool = process_pool(min(workers, len(chunks)), start="fork", initializer=_init_worker,
                        initargs=(settings,))
    try:
        pending = [pool.submit(_decode_chunk, chunk) for chunk in chunks]
        for done in as_completed(pending):
            results = done.result()
            yield from results
            bar.update(len(results))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
