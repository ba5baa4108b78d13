"""The one range type of every option: head options, training options and command-line flags.

A :class:`Range` says which numbers an option takes (``a whole number >= 1``, ``a number in
[0, 1)``), checks a value against it, and turns it into an argparse ``type`` so that a flag is
refused by the parser with the same words the library uses.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["Range", "POSITIVE_INT", "POSITIVE_FLOAT", "number_text"]


def number_text(x: float) -> str:
    """A bound as it reads in a message: ``1``, ``0.5``, ``1e-06``."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """Finite numbers from ``low`` to ``high`` (open ends excluded); ``whole``: integers only;
    ``optional``: None allowed (the option left out); ``hint``: the way out, in the error."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    whole: bool = False
    optional: bool = False
    hint: str = ""

    def describe(self, kind: str | None = None) -> str:
        """``a whole number >= 1``, ``a number in [0, 1)``; ``kind`` replaces the noun."""
        kind = kind or ("a whole number" if self.whole else "a finite number")
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.low_open else '['}{number_text(self.low)}, "
                    f"{number_text(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {number_text(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {number_text(self.high)}"
        return kind

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is in the range (None only when optional)."""
        if value is None:
            return self.optional
        if isinstance(value, bool) or not isinstance(value, Real):
            return False
        v = float(value)
        if not math.isfinite(v) or (self.whole and not v.is_integer()):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            return False
        return True

    def arg_type(self, expected: str | None = None) -> Callable[[str], Any]:
        """An argparse ``type``: the text as an int (``whole``) or float, refused outside the
        range with ``expected ...`` (``expected`` names it, e.g. ``a positive integer``)."""
        words = expected or self.describe()

        def parse(text: str) -> Any:
            try:
                value: float = int(text) if self.whole else float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}") from None
            if not self.holds(value):
                raise argparse.ArgumentTypeError(f"expected {words}, got {text!r}")
            return value

        parse.__name__ = "whole number" if self.whole else "number"  # argparse's "invalid X"
        return parse


POSITIVE_INT = Range(1, whole=True)
POSITIVE_FLOAT = Range(0, low_open=True)
