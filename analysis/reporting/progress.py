"""Progress bars that suit where they are written: tqdm on a terminal, plain lines elsewhere.

A tqdm bar written to a file or a pipe (``2> log``, nohup, a study's log) comes out as one long
line of ``\\r`` frames. :func:`progress_bar` gives tqdm when its stream is a terminal (or a
notebook) and otherwise a :class:`LineProgress` with the same ``update`` / ``set_postfix`` /
``close`` methods that writes one line when it closes (an epoch) or one per update (a study's runs).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

__all__ = ["LineProgress", "progress_bar"]


class LineProgress:
    """A progress bar as plain lines: ``desc: n/total unit in 3.2s (loss=0.41)``."""

    def __init__(self, total: int, desc: str, unit: str, initial: int = 0,
                 per_update: bool = False, stream: IO[str] | None = None):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.per_update = per_update
        self.stream = stream
        self.postfix: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.per_update:
            self._write()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed and not self.per_update:
            self._write()
        self.closed = True

    def _write(self) -> None:
        extra = ", ".join(f"{k}={v}" for k, v in self.postfix.items())
        line = (f"{self.desc}: {self.n}/{self.total} {self.unit}s in "
                f"{time.perf_counter() - self.t0:.1f}s" + (f" ({extra})" if extra else ""))
        print(line, file=self.stream or sys.stderr, flush=True)


def _interactive(stream: IO[str]) -> bool:
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    return "ipykernel" in sys.modules  # a notebook's stderr is no tty, but tqdm draws a widget


def progress_bar(total: int, desc: str, unit: str = "step", *, initial: int = 0,
                 per_update: bool = False, leave: bool = False,
                 stream: IO[str] | None = None) -> Any:
    """tqdm on a terminal, else a :class:`LineProgress` (one line at close, or per update)."""
    stream = stream or sys.stderr
    if _interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                    dynamic_ncols=True, file=stream)
    return LineProgress(total, desc, unit, initial=initial, per_update=per_update, stream=stream)
