"""The one-line text of an exception, for tables, reports and CLI error lines; and of a warning.

Tracebacks and multi-line messages from torch or timm do not fit a table cell or a JSON field;
every place that records an error records :func:`one_line` of it, cut at the same length.
:func:`one_line_warnings` shows warnings the same way: ``warning: <message>``, one line each,
without the source line Python echoes under it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["one_line", "one_line_warnings", "MAX_ERROR_CHARS"]

MAX_ERROR_CHARS = 300


def one_line(err: BaseException | str, limit: int = MAX_ERROR_CHARS, with_type: bool = True) -> str:
    """``'TypeName: first line of the message'``, cut to ``limit`` characters with an ellipsis
    (at a word boundary, so no word is cut in half).

    ``with_type=False`` leaves out the exception's class name (for messages already written for
    users). An empty message gives the class name alone.
    """
    if isinstance(err, BaseException):
        lines = str(err).strip().splitlines()
        first = lines[0].strip() if lines else ""
        name = type(err).__name__
        text = (f"{name}: {first}" if first else name) if with_type else (first or name)
    else:
        lines = err.strip().splitlines()
        text = lines[0].strip() if lines else ""
    if len(text) > limit:  # cut at a word boundary when there is one in the last quarter
        cut = text[: max(0, limit - 3)]
        space = cut.rfind(" ")
        text = (cut[:space] if space > 3 * len(cut) // 4 else cut).rstrip(" ,;:") + "..."
    return text


@contextmanager
def one_line_warnings(ignore: tuple[type[Warning], ...] = (FutureWarning,),
                      stream: TextIO | None = None) -> Iterator[None]:
    """Inside the block, show each warning as one ``warning: <message>`` line on ``stream``
    (default: stderr at the time) and ignore the ``ignore`` categories (timm's and torch's
    deprecation notices). The warning filters are restored afterwards, and every warning is
    shown again inside a new block (a worker process running many runs logs each run's own)."""
    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"warning: {one_line(str(message), limit=2 * MAX_ERROR_CHARS)}",
              file=stream or sys.stderr, flush=True)

    with warnings.catch_warnings():  # entering it also forgets which warnings were shown
        for category in ignore:
            warnings.simplefilter("ignore", category)
        warnings.showwarning = show
        yield
