"""The one-line text of an exception, for tables, reports and CLI error lines.

Tracebacks and multi-line messages from torch or timm do not fit a table cell or a JSON field;
every place that records an error records :func:`one_line` of it, cut at the same length.
"""

from __future__ import annotations

__all__ = ["one_line", "MAX_ERROR_CHARS"]

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
