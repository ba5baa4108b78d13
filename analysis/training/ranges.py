"""The range of every numeric training option, and the flag a user typed it as.

:meth:`TrainConfig.check <analysis.training.config.TrainConfig.check>` checks each numeric field
against :data:`NUMERIC_RULES`, so a library call, ``tools/finetune.py`` and a study refuse a value
such as ``--clip-grad -1`` (which would reverse the gradient) or ``--lr nan`` with the same
message, naming the flag, the value and the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

__all__ = ["NUMERIC_RULES", "Range", "check_number", "option_flag"]

# fields whose flag is not "--" + the field name with dashes
_FLAGS = {"optimizer": "--opt", "data_options": "--data-option", "timm_options": "--timm-option",
          "augment": "--augment", "progress": "--no-progress"}


def option_flag(field_name: str) -> str:
    """The command-line flag of a TrainConfig field: ``clip_grad`` -> ``--clip-grad``."""
    return _FLAGS.get(field_name, "--" + field_name.replace("_", "-"))


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

    @staticmethod
    def _num(x: float) -> str:
        return str(int(x)) if float(x).is_integer() else f"{x:g}"

    def describe(self) -> str:
        """``a whole number >= 1``, ``a number in [0, 1)``, ``a finite number > 0``."""
        kind = "a whole number" if self.whole else "a finite number"
        if self.low is not None and self.high is not None:
            return (f"{kind} in {'(' if self.low_open else '['}{self._num(self.low)}, "
                    f"{self._num(self.high)}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self._num(self.low)}"
        if self.high is not None:
            return f"{kind} {'<' if self.high_open else '<='} {self._num(self.high)}"
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


def _whole(low: int, optional: bool = False, hint: str = "") -> Range:
    return Range(low=low, whole=True, optional=optional, hint=hint)


NUMERIC_RULES: dict[str, Range] = {
    "dropout": Range(0, 1, high_open=True),
    "in_chans": _whole(1, optional=True),
    "train_size": _whole(1, optional=True, hint="leave it out to train on all the data"),
    "val_size": Range(0, low_open=True, hint="a count (500) or a fraction of train (0.1)"),
    "train_eval_size": _whole(1, optional=True),
    "test_size": _whole(1, optional=True, hint="leave it out to test on the whole test split"),
    "img_size": _whole(1, optional=True, hint="leave it out for the data's own size"),
    "epochs": _whole(1),
    "min_steps": _whole(0, optional=True, hint="0: each epoch is one pass over the training set"),
    "batch_size": _whole(1),
    "eval_batch_size": _whole(1, optional=True),
    "lr": Range(0, low_open=True),
    "min_lr": Range(0),
    "weight_decay": Range(0),
    "momentum": Range(0, 1, high_open=True),
    "warmup_epochs": Range(0),
    "label_smoothing": Range(0, 1, high_open=True,
                             hint="0 is plain cross-entropy, 0.1 a common choice"),
    "clip_grad": Range(0, low_open=True, optional=True,
                       hint="the largest gradient L2 norm; leave it out for no clipping"),
    "head_epochs": _whole(0),
    "backbone_lr_scale": Range(0),
    "seed": Range(0, 2**32, high_open=True, whole=True),
    "ckpt_steps": _whole(0, hint="0 turns it off"),
    "ckpt_minutes": Range(0, hint="0 turns it off"),
    "decode_workers": _whole(1, optional=True, hint="leave it out to decode on every core"),
    "pool_size": _whole(2, optional=True, hint="leave it out to draw from the whole split"),
    "feature_cache_views": _whole(0, hint="0 caches the plain features, no augmentation"),
    "feature_cache_mem_gb": Range(0, hint="GiB of features kept in memory; beyond, a file"),
}


def check_number(field_name: str, value: Any, rule: Range) -> None:
    """Raise ValueError naming the flag, the bad value and the range when ``value`` is outside."""
    if rule.holds(value):
        return
    hint = f" ({rule.hint})" if rule.hint else ""
    raise ValueError(f"{option_flag(field_name)} must be {rule.describe()}{hint}, got {value!r}")
