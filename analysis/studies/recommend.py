"""Which head to recommend: the smallest one the evidence cannot tell from the best.

A seed fixes the validation split, training subset and batch order for every head, so the
evidence is the paired difference per seed. The rule, stated once: the **best** head has the
highest mean validation accuracy; every other head gets a one-sided paired t-test over the
seeds (is it lower?), Holm-corrected over the heads compared, and is **clearly worse** when
that p < 0.05, else **within noise** (with fewer than two seeds, only the best is left). The
recommendation is the head with the fewest parameters among the best and those within noise
(ties: the higher mean accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .aggregate import mean_std

__all__ = ["ALPHA", "RULE", "compare_to_best", "holm", "recommend"]

ALPHA = 0.05
RULE = ("the head with the fewest parameters among the best (highest mean validation accuracy) "
        "and the heads within noise of it: a head is clearly worse when a one-sided paired "
        "t-test over the seeds (each seed shares its split and batch order across heads) gives "
        "p < 0.05 after Holm's correction for the number of heads compared")


def _one_sided_p(diffs: Sequence[float]) -> float | None:
    """p of a one-sided paired t-test that the mean of ``diffs`` is below 0 (None: < 2 pairs)."""
    if len(diffs) < 2:
        return None
    mean, std = mean_std(diffs)
    if not std:
        return 0.0 if (mean or 0.0) < 0 else 1.0
    from scipy.stats import t as student_t

    stat = float(mean or 0.0) / (float(std) / math.sqrt(len(diffs)))
    return float(student_t.cdf(stat, df=len(diffs) - 1))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None and does not count)."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(order)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def compare_to_best(rows: Sequence[Mapping[str, Any]],
                    per_seed: Mapping[str, Mapping[int, float]]) -> list[dict[str, Any]]:
    """``rows`` (each with ``head``, ``val_acc_mean``, ``head_params``) with, per head, the paired
    difference to the best over the seeds both have (``diff_mean`` / ``diff_std``, fractions),
    the Holm-corrected one-sided ``p`` and ``verdict`` (``best``, ``within noise``, ``clearly
    worse``). ``per_seed``: head -> seed -> validation accuracy."""
    done = [r for r in rows if r.get("val_acc_mean") is not None]
    if not done:
        return [dict(r) for r in rows]
    best = max(done, key=lambda r: r["val_acc_mean"])
    out, raw = [], []
    for r in rows:
        mine, theirs = per_seed.get(r["head"], {}), per_seed.get(best["head"], {})
        seeds = sorted(set(mine) & set(theirs))
        diffs = [mine[s] - theirs[s] for s in seeds]
        mean, std = mean_std(diffs) if diffs else (None, None)
        out.append({**r, "diff_mean": mean, "diff_std": std, "paired_seeds": len(seeds)})
        raw.append(None if r is best else _one_sided_p(diffs))
    for row, p in zip(out, holm(raw), strict=True):
        row["p"] = p
        if row["head"] == best["head"]:
            row["verdict"] = "best"
        elif row.get("val_acc_mean") is None:
            row["verdict"] = None
        else:
            row["verdict"] = "within noise" if p is not None and p >= ALPHA else "clearly worse"
    return out


def recommend(compared: Sequence[Mapping[str, Any]]) -> tuple[str | None, str]:
    """``(head, reason)`` by the rule of this module from :func:`compare_to_best`'s rows."""
    close = [r for r in compared if r.get("verdict") in ("best", "within noise")]
    if not close:
        return None, "no run finished"
    best = next(r for r in close if r["verdict"] == "best")
    pick = min(close, key=lambda r: (r["head_params"] if r.get("head_params") is not None
                                     else math.inf, -r["val_acc_mean"]))

    def acc(r: Mapping[str, Any]) -> str:
        return f"{100 * r['val_acc_mean']:.2f}%"

    others = len(close) - 1
    if len(compared) == 1:
        return best["head"], f"the only head compared ({acc(best)})"
    if pick is best:
        tail = (f"the {others} head(s) within noise of it have as many or more parameters" if others else
                "every other head is clearly worse (paired over seeds, Holm-corrected p < 0.05)"
                if best.get("paired_seeds", 0) >= 2 else
                "one seed cannot tell heads apart: give --seeds with two or more")
        return pick["head"], f"best mean validation accuracy ({acc(best)}); {tail}"
    return pick["head"], (
        f"{acc(pick)} is within noise of the best ({best['head']}, {acc(best)}: "
        f"{100 * pick['diff_mean']:+.2f} points paired over {pick['paired_seeds']} seeds, "
        f"Holm-corrected p = {pick['p']:.2g}) with the fewest head parameters "
        f"({pick['head_params']:,} vs {best['head_params']:,})")
