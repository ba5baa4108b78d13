"""``KEY=VALUE`` options as users type them: ``--timm-option``, ``--data-option``, head specs.

One parser for every place a user writes options, so ``img_size=64``, ``gray=true``,
``drop_rate=0.1`` and ``act_layer=gelu`` mean the same thing everywhere: Python literals
(numbers, ``True``/``False``/``None``, tuples) where they parse, ``true``/``false`` in any case
as booleans, and anything else as a plain string.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .ranges import Range

__all__ = ["parse_value", "parse_options", "format_value", "Option"]


def parse_value(text: str) -> Any:
    """``'64'`` -> 64, ``'0.5'`` -> 0.5, ``'true'`` -> True, ``'(1, 2)'`` -> (1, 2), ``'gelu'`` -> 'gelu'."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_options(items: Iterable[str], flag: str = "--option") -> dict[str, Any]:
    """``['img_size=64', 'dynamic_img_size=True']`` -> ``{'img_size': 64, 'dynamic_img_size': True}``.

    ``flag`` names the option in the error (``--timm-option expects KEY=VALUE, got 'x'``). A key
    given twice takes its last value, as a flag given twice does in argparse.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag} expects KEY=VALUE with KEY a name (e.g. img_size=64), "
                             f"got {item!r}")
        options[key] = parse_value(text)
    return options


def _number_text(value: float) -> str:
    """A float as short as it round-trips: 0.5, 3, 1e-06."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def format_value(value: Any) -> str:
    """A value as it is written in a head spec: ``(512, 256)`` -> ``512x256``, True -> ``1``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, (tuple, list)):
        return "x".join(format_value(v) for v in value)
    return str(value)


_TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "0 or 1 (or true / false)",
               "ints": "integers separated by x (e.g. 512x256)", "choice": "one of"}


@dataclass(frozen=True)
class Option:
    """One option a head kind declares: its name, type, default and allowed range.

    ``type`` is ``int``, ``float``, ``bool``, ``ints`` (a tuple of integers, written ``512x256``)
    or ``choice`` (one of ``choices``). ``range`` (a :class:`surgery.ranges.Range`, the range
    type of every option) bounds numbers and each item of ``ints``. ``default`` None means
    "chosen from the features" (the help says how). ``short`` is the option's prefix in run
    names (``h`` for hidden: ``gap-h512``); empty for a choice, whose value alone is written.
    """

    name: str
    type: str
    default: Any
    help: str
    range: Range | None = None
    choices: tuple[str, ...] = ()
    short: str | None = None

    def expected(self) -> str:
        """What a valid value looks like, for error messages and --help."""
        if self.type == "choice":
            return "one of " + ", ".join(self.choices)
        words = _TYPE_WORDS[self.type]
        if self.range is None or self.type == "bool":
            return words
        return self.range.describe(words)

    def coerce(self, value: Any, where: str = "") -> Any:
        """``value`` (text as typed, or a Python value) as this option's type; ValueError if not."""
        raw = value
        if isinstance(value, str) and self.type != "choice":
            value = _parse_typed(value, self.type)
        checked = _check_type(value, self.type, self.choices)
        if checked is None or not self._in_range(checked):
            at = f" in {where!r}" if where else ""
            raise ValueError(f"option {self.name}={format_value(raw)}{at} is not valid; expected "
                             f"{self.expected()}")
        return checked

    def _in_range(self, value: Any) -> bool:
        if self.type not in ("int", "float", "ints") or self.range is None:
            return True
        items = value if self.type == "ints" else (value,)
        return all(self.range.holds(v) for v in items)


def _parse_typed(text: str, type_: str) -> Any:
    """Text to a candidate value: ``ints`` split on ``x``; everything else via parse_value."""
    if type_ == "ints":
        text = text.strip()
        if not text:
            return ()
        return tuple(parse_value(t) for t in text.split("x"))
    return parse_value(text)


def _check_type(value: Any, type_: str, choices: tuple[str, ...]) -> Any:
    """``value`` converted to ``type_`` if it is one (bool 0/1, int -> float), else None."""
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        return bool(value) if isinstance(value, int) and value in (0, 1) else None
    if isinstance(value, bool):
        return None
    if type_ == "int":
        return value if isinstance(value, int) else None
    if type_ == "float":
        return float(value) if isinstance(value, (int, float)) else None
    if type_ == "ints":
        items = (value,) if isinstance(value, int) else value
        if not isinstance(items, (tuple, list)):
            return None
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in items)
        return tuple(int(v) for v in items) if ok else None
    return value if isinstance(value, str) and value in choices else None
