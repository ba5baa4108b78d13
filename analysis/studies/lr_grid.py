"""Each head at its own best learning rate: the grid, the choice on validation, the edge.

A head's learning rate is chosen from a grid (:func:`default_lrs`: seven values half a decade
apart, 1e-4 to 1e-1 for AdamW) by mean validation accuracy over the seeds
(:func:`choose_settings`); a setting (learning rate, weight decay) is eligible only when every
seed of it finished (none diverged or was pruned). A head whose choice sits at an end of the grid
is flagged: its best may lie beyond, so :func:`extension` names the next value that way (one
grid step), which the sweep trains once. :func:`sweep_rows` gives one row per member for
``sweep.csv`` and :func:`lr_curves` the accuracy per learning rate that ``lr.png`` draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..training.sweep import SweepMember
from .aggregate import mean_std

__all__ = ["Choice", "check_grid", "choose_settings", "default_lrs", "extension", "lr_curves",
           "neighbours", "sweep_rows"]

_HALF_DECADE = 10 ** 0.5


def default_lrs(optimizer: str = "adamw") -> tuple[float, ...]:
    """Seven learning rates half a decade apart: 1e-4 ... 1e-1 for AdamW, 1e-3 ... 1 for SGD
    (heads on frozen features range from a linear layer to an attention layer and a
    4096-wide MLP; their best rates span about two decades)."""
    low = -4 if optimizer == "adamw" else -3
    return tuple(float(f"{10 ** (low + k / 2):.4g}") for k in range(7))


def check_grid(values: Sequence[float], flag: str) -> tuple[float, ...]:
    """Sorted, finite, positive and distinct, else ValueError naming ``flag``."""
    bad = [v for v in values if isinstance(v, bool) or not math.isfinite(float(v)) or v <= 0]
    if bad or not values:
        raise ValueError(f"{flag} takes finite values > 0, got {' '.join(map(str, values)) or 'none'}")
    dupes = sorted({v for v in values if list(values).count(v) > 1})
    if dupes:
        raise ValueError(f"{flag} lists {', '.join(map(str, dupes))} twice; give each value once")
    return tuple(sorted(float(v) for v in values))


@dataclass
class Choice:
    """A head's chosen setting and what backs it: the mean / std of the seeds' best validation
    accuracy, the grid it was chosen from, and ``edge`` (``low`` / ``high``: the choice is the
    grid's smallest / largest learning rate, so the best may lie beyond)."""

    head: str
    lr: float
    weight_decay: float
    val_acc_mean: float
    val_acc_std: float
    lrs: tuple[float, ...]
    edge: str | None = None
    extended: list[float] = field(default_factory=list)


def _by_setting(members: Sequence[SweepMember]) -> dict[tuple[str, float, float],
                                                        list[SweepMember]]:
    out: dict[tuple[str, float, float], list[SweepMember]] = {}
    for m in members:
        out.setdefault(m.setting, []).append(m)
    return out


def choose_settings(members: Sequence[SweepMember]) -> dict[str, Choice]:
    """Per head label, the setting with the highest mean best validation accuracy over seeds
    among those whose every seed finished; ties go to the smaller learning rate. Heads without
    an eligible setting are left out."""
    choices: dict[str, Choice] = {}
    settings = _by_setting(members)
    for label in dict.fromkeys(s[0] for s in settings):
        mine = {s: ms for s, ms in settings.items() if s[0] == label}
        lrs = tuple(sorted({s[1] for s in mine}))
        scored = [(mean_std([m.best["val_acc"] for m in ms]), s) for s, ms in mine.items()
                  if all(m.status == "ok" and m.best["epoch"] for m in ms)]
        if not scored:
            continue
        (mean, std), best = max(scored, key=lambda t: (t[0][0], -t[1][1]))
        edge = ("low" if best[1] == lrs[0] and len(lrs) > 1 else
                "high" if best[1] == lrs[-1] and len(lrs) > 1 else None)
        choices[label] = Choice(label, best[1], best[2], float(mean or 0.0), float(std or 0.0),
                                lrs, edge)
    return choices


def extension(choice: Choice) -> float | None:
    """The next learning rate beyond the grid's end where ``choice`` sits (the ratio of the
    grid's last step there), or None when it sits inside."""
    lrs = choice.lrs
    if choice.edge == "low":
        return float(f"{lrs[0] / (lrs[1] / lrs[0]):.4g}")
    if choice.edge == "high":
        return float(f"{lrs[-1] * (lrs[-1] / lrs[-2]):.4g}")
    return None


def lr_curves(members: Sequence[SweepMember]) -> list[dict[str, Any]]:
    """Per (head, learning rate, weight decay): mean / std over seeds of the best validation
    accuracy (of the epochs each seed reached) and the setting's status (``ok``, or ``pruned``
    / ``diverged`` when a seed was)."""
    rows = []
    for (label, lr, wd), ms in _by_setting(members).items():
        accs = [m.best["val_acc"] for m in ms if m.best["epoch"]]
        mean, std = mean_std(accs) if accs else (None, None)
        status = next((s for s in ("diverged", "pruned") if any(m.status == s for m in ms)), "ok")
        rows.append({"head": label, "lr": lr, "weight_decay": wd, "val_acc_mean": mean,
                     "val_acc_std": std, "seeds": len(ms), "status": status})
    return sorted(rows, key=lambda r: (r["head"], r["weight_decay"], r["lr"]))


def neighbours(curves: Sequence[dict[str, Any]], choice: Choice) -> dict[str, dict[str, Any]]:
    """The curve points just below and above ``choice``'s learning rate (same weight decay):
    ``{"below": row, "above": row}`` (a side left out at the end of the grid)."""
    mine = [r for r in curves if r["head"] == choice.head
            and r["weight_decay"] == choice.weight_decay]
    lrs = [r["lr"] for r in mine]
    i = lrs.index(choice.lr)
    out = {}
    if i > 0:
        out["below"] = mine[i - 1]
    if i + 1 < len(mine):
        out["above"] = mine[i + 1]
    return out


def sweep_rows(members: Sequence[SweepMember]) -> list[dict[str, Any]]:
    """``sweep.csv``: one row per member and epoch (validation and training accuracy and loss)
    with the member's status; a member that stopped before its first epoch ended has one row
    without metrics."""
    rows = []
    for m in members:
        base = {"head": m.label, "lr": m.lr, "weight_decay": m.weight_decay, "seed": m.seed,
                "status": m.status}
        for r in m.history or [{}]:
            rows.append({**base, "epoch": r.get("epoch"), "val_acc": r.get("val_acc"),
                         "val_loss": r.get("val_loss"), "train_acc": r.get("train_acc"),
                         "train_loss": r.get("train_loss"), "stopped": m.stopped})
    return rows
