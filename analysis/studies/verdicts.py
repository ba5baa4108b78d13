"""The verdict rule for a claim measured over seeds, stated once and applied everywhere.

Runs with the same seed share data subset, batch order and backbone, so the evidence is the
paired difference per seed, signed so that the claim predicts a positive value, tested with a
two-sided paired t-test (scipy.stats.ttest_rel). **holds**: claimed direction, p < 0.05;
**holds weakly**: claimed direction, p >= 0.05 or too few seeds; **does not hold**: opposite
direction, p < 0.05; **not supported**: otherwise. docs/studies/README.md states it for readers.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from typing import Any

from .aggregate import mean_std

has_scipy = importlib.util.find_spec("scipy") is not None  # optional: only the t-test needs it

__all__ = ["ALPHA", "VERDICTS", "has_scipy", "paired_test", "verdict"]

ALPHA = 0.05
VERDICTS = ("holds", "holds weakly", "does not hold", "not supported")


def paired_test(claimed: Sequence[float], other: Sequence[float]) -> dict[str, Any]:
    """Paired comparison of two equally long sequences (one value per seed, same order):
    ``n``, ``diff_mean`` / ``diff_std`` of ``claimed - other``, ``wins`` (pairs where claimed is
    larger), ``t`` and the two-sided ``p`` of scipy's paired t-test. Identical differences give
    ``p`` 0 (a non-zero constant difference) or 1 (none); fewer than two pairs give None."""
    if len(claimed) != len(other):
        raise ValueError(f"a paired test needs as many values on each side, got {len(claimed)} "
                         f"and {len(other)}")
    diffs = [float(a) - float(b) for a, b in zip(claimed, other, strict=True)]
    mean, std = mean_std(diffs)
    out: dict[str, Any] = {"n": len(diffs), "diff_mean": mean, "diff_std": std,
                           "wins": sum(d > 0 for d in diffs), "t": None, "p": None}
    if len(diffs) < 2 or mean is None:
        return out
    if not std:  # scipy gives nan for zero variance: the difference is exact, or zero
        out["p"] = 0.0 if mean else 1.0
        out["t"] = math.copysign(math.inf, mean) if mean else 0.0
        return out
    if not has_scipy:
        raise ValueError("the paired t-test needs scipy: pip install scipy (or pip install "
                         "'headswap[studies]')")
    from scipy.stats import ttest_rel

    res = ttest_rel([float(a) for a in claimed], [float(b) for b in other])
    out["t"], out["p"] = float(res.statistic), float(res.pvalue)
    return out


def verdict(test: dict[str, Any], alpha: float = ALPHA) -> str:
    """The verdict (one of :data:`VERDICTS`) of a :func:`paired_test` result whose differences
    are signed so that the claim predicts a positive mean."""
    mean, p = test.get("diff_mean"), test.get("p")
    significant = p is not None and p < alpha
    if mean is not None and mean > 0:
        return "holds" if significant else "holds weakly"
    if mean is not None and mean < 0 and significant:
        return "does not hold"
    return "not supported"
