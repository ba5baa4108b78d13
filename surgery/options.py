"""``KEY=VALUE`` options as users type them: ``--timm-option``, ``--data-option``, head specs.

One parser for every place a user writes options, so ``img_size=64``, ``gray=true``,
``drop_rate=0.1`` and ``act_layer=gelu`` mean the same thing everywhere: Python literals
(numbers, ``True``/``False``/``None``, tuples) where they parse, ``true``/``false`` in any case
as booleans, and anything else as a plain string.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_value", "parse_options"]


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
