"""How a training option is declared: once, on its :class:`TrainConfig` field.

Each field carries its flag, help, range, argparse extras, argument group, whether a resume may
change it and whether it changes the features a frozen backbone gives. The command-line flags
(analysis.training.options), the range checks (``TrainConfig.check``), the resume rules
(analysis.training.resume) and the grouping of runs by shared feature cache
(analysis.training.shared_cache) are all read from these declarations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from typing import Any

from surgery.ranges import Range

__all__ = ["Declared", "option", "whole"]


@dataclass(frozen=True)
class Declared:
    """What a field means to a user.

    Args:
        help: the flag's help (or a function giving it when a parser is built); ``{default}``
            is replaced by the field's default.
        group: the argument group the flag is listed in (``""``: no flag).
        flag: the flag, when it is not ``--`` + the name with dashes.
        range: the numbers it takes (checked by ``TrainConfig.check``).
        resume: a resume may change it (it changes how a run is watched, not what it computes).
        features: it changes what a frozen backbone extracts (runs that differ in it cannot
            share one feature cache).
        per_run: a flag of the tools that train one run only (a study varies it per run).
        unset_default: the flag's default is None (left out, the field's default applies).
        cli: further ``add_argument`` keywords (type, choices, metavar, action, nargs, dest).
    """

    help: str | Callable[[], str] = ""
    group: str = ""
    flag: str | None = None
    range: Range | None = None
    resume: bool = False
    features: bool = True
    per_run: bool = False
    unset_default: bool = False
    cli: dict[str, Any] = field(default_factory=dict)


def option(default: Any = MISSING, *, factory: Any = MISSING, **declared: Any) -> Any:
    """A :class:`TrainConfig` field with its declaration (the keywords of :class:`Declared`)."""
    meta = {"option": Declared(**declared)}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def whole(low: int, optional: bool = False, hint: str = "") -> Range:
    """Whole numbers from ``low`` up (None allowed when ``optional``)."""
    return Range(low=low, whole=True, optional=optional, hint=hint)
