"""The global-pooling claims, measured: each claim a paired comparison of two heads on one figure.

A :class:`Claim` says head ``better`` beats head ``other`` on ``metric`` (higher, or lower where
``lower``). :func:`claim_rows` pairs the runs of a study by model, training-set size and seed and
gives, per cell, both heads' mean and spread, the paired difference (signed so that the claim
predicts a positive value) and the verdict of analysis.studies.verdicts. :data:`CLAIMS` are the
claims of the README's table; :func:`claims_markdown` formats the rows, one table per claim.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..reporting import format_table
from .aggregate import generalisation_gap, mean_std
from .verdicts import paired_test, verdict

__all__ = ["CLAIMS", "METRICS", "Claim", "claim_rows", "claims_markdown", "claims_summary"]

Record = Mapping[str, Any]


def _other_sizes_ok(record: Record) -> float | None:
    """Fraction of the evaluated input sizes other than the trained one at which the model ran."""
    rows = [r for r in record.get("robustness") or []
            if r.get("img_size") != record.get("img_size")]
    return sum(r.get("status") == "ok" for r in rows) / len(rows) if rows else None


def _shift_drop(record: Record) -> float | None:
    """Test accuracy lost at the largest shift evaluated: accuracy at shift 0 minus at the max."""
    rows = {int(r["shift"]): r.get("test_acc") for r in record.get("shifts") or []}
    if 0 not in rows or len(rows) < 2 or rows[0] is None or rows[max(rows)] is None:
        return None
    return float(rows[0]) - float(rows[max(rows)])


# metric -> (value of a run record, what it is, unit, scale for display)
METRICS: dict[str, tuple[Callable[[Record], Any], str, str, float]] = {
    "test_acc": (lambda r: r.get("test_acc"), "test accuracy", "%", 100.0),
    "train_test_gap": (generalisation_gap, "train-test gap", "points", 100.0),
    "head_params": (lambda r: r.get("head_params"), "head parameters", "", 1.0),
    "other_sizes_ok": (_other_sizes_ok, "runs at other input sizes", "% of sizes", 100.0),
    "epoch_time_s": (lambda r: r.get("epoch_time_s"), "epoch time", "s", 1.0),
    "peak_mem_mb": (lambda r: r.get("peak_mem_mb"), "peak memory", "MiB", 1.0),
    "checkpoint_mb": (lambda r: r.get("checkpoint_mb"), "checkpoint size", "MiB", 1.0),
    "shift_drop": (_shift_drop, "accuracy lost at the largest shift", "points", 100.0),
}


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``other`` on ``metric``: a higher value, or a lower one when ``lower``."""

    text: str
    better: str
    other: str
    metric: str
    lower: bool = False


VGG_HEAD = "flatten-h4096x4096-d0.5"  # the label of flatten:hidden=4096x4096:dropout=0.5

CLAIMS = (
    Claim("no parameters: GAP's head is only the output layer", "gap", "flatten", "head_params",
          lower=True),
    Claim("any input size: GAP runs at input sizes Flatten was not built for", "gap", "flatten",
          "other_sizes_ok"),
    Claim("less overfitting on small data: a smaller train-test gap than Flatten+Dense", "gap",
          "flatten", "train_test_gap", lower=True),
    Claim("... and than Flatten+Dense with dropout", "gap", "flatten-d0.5", "train_test_gap",
          lower=True),
    Claim("... with test accuracy at least as good as Flatten+Dense", "gap", "flatten",
          "test_acc"),
    Claim("GAP edges out GMP", "gap", "gmp", "test_acc"),
    Claim("less time: a shorter epoch than Flatten+Dense", "gap", "flatten", "epoch_time_s",
          lower=True),
    Claim("less memory: a lower peak than Flatten+Dense", "gap", "flatten", "peak_mem_mb",
          lower=True),
    Claim("loses 'where': shifted test images cost GAP less accuracy than Flatten+Dense", "gap",
          "flatten", "shift_drop", lower=True),
    # VGG's classifier (Flatten, 4096, 4096, dropout 0.5): where its 123 M of 138 M parameters went
    Claim("VGG-style head: GAP overfits less", "gap", VGG_HEAD, "train_test_gap", lower=True),
    Claim("VGG-style head: GAP at least as accurate", "gap", VGG_HEAD, "test_acc"),
    Claim("VGG-style head: GAP trains a shorter epoch", "gap", VGG_HEAD, "epoch_time_s",
          lower=True),
    Claim("VGG-style head: GAP peaks lower in memory", "gap", VGG_HEAD, "peak_mem_mb", lower=True),
    Claim("VGG-style head: GAP's checkpoint is smaller", "gap", VGG_HEAD, "checkpoint_mb",
          lower=True),
    Claim("VGG-style head: GAP loses less accuracy to shifts", "gap", VGG_HEAD, "shift_drop",
          lower=True),
)


def _label(record: Record) -> str:
    return str(record.get("head_label") or record.get("head"))


def _by_seed(records: Sequence[Record], head: str, fn: Callable[[Record], Any]
             ) -> dict[Any, float]:
    out = {}
    for r in records:
        value = fn(r) if _label(r) == head else None
        if value is not None:
            out[r.get("seed")] = float(value)
    return out


def claim_rows(records: Sequence[Record], claims: Sequence[Claim] = CLAIMS,
               study: str = "") -> list[dict[str, Any]]:
    """One row per claim x model x training-set size where the study ran both heads: their
    means and stds over seeds (display units), the paired difference in the claimed direction
    (``diff_mean`` / ``diff_std``, display units), ``n`` seeds, ``wins``, ``p`` and ``verdict``."""
    cells: dict[tuple[Any, Any], list[Record]] = {}
    for r in records:
        cells.setdefault((r.get("model"), r.get("train_size")), []).append(r)
    rows = []
    for claim in claims:
        fn, what, unit, scale = METRICS[claim.metric]
        for (model, size), runs in sorted(cells.items(), key=lambda kv: (str(kv[0][0]),
                                                                          kv[0][1] or 0)):
            a, b = _by_seed(runs, claim.better, fn), _by_seed(runs, claim.other, fn)
            seeds = [s for s in a if s in b]
            if not seeds:
                continue
            hi, lo = ([b[s] for s in seeds], [a[s] for s in seeds]) if claim.lower else \
                ([a[s] for s in seeds], [b[s] for s in seeds])
            test = paired_test(hi, lo)
            (am, asd), (bm, bsd) = mean_std([a[s] for s in seeds]), mean_std([b[s] for s in seeds])
            rows.append({
                "claim": claim.text, "study": study, "model": model, "train_size": size,
                "metric": what, "unit": unit, "better": claim.better, "other": claim.other,
                "better_mean": _scaled(am, scale), "better_std": _scaled(asd, scale),
                "other_mean": _scaled(bm, scale), "other_std": _scaled(bsd, scale),
                "diff_mean": _scaled(test["diff_mean"], scale),
                "diff_std": _scaled(test["diff_std"], scale), "n": test["n"],
                "wins": test["wins"], "p": test["p"], "verdict": verdict(test)})
    return rows


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _fmt(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    digits = 0 if abs(mean) >= 1000 else (1 if abs(mean) >= 1 or mean == 0 else 3)
    text = f"{mean:,.{digits}f}"
    return text + (f" ± {std:,.{digits}f}" if std is not None else "")


def _p(p: float | None) -> str:
    return "" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def claims_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every row, one table per claim: setting, both heads, the paired difference, verdict."""
    lines: list[str] = []
    for text in dict.fromkeys(r["claim"] for r in rows):
        mine = [r for r in rows if r["claim"] == text]
        first = mine[0]
        lines += [f"### {text}", "",
                  f"{first['metric']} ({first['unit'] or 'count'}), {first['better']} against "
                  f"{first['other']}; difference in the claimed direction, paired by seed", ""]
        table = [{"study": r["study"], "train size": r["train_size"],
                  first["better"]: _fmt(r["better_mean"], r["better_std"]),
                  first["other"]: _fmt(r["other_mean"], r["other_std"]),
                  "difference": _fmt(r["diff_mean"], r["diff_std"]),
                  "seeds (wins)": f"{r['n']} ({r['wins']})", "p": _p(r["p"]),
                  "verdict": r["verdict"]} for r in mine]
        lines += [format_table(table), ""]
    return "\n".join(lines)


def claims_summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per claim x study for the README: the measured figure per training size with its
    verdict, smallest size first."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        row = out.setdefault((r["claim"], r["study"]), {"claim": r["claim"], "study": r["study"],
                                                         "measured": [], "verdicts": []})
        unit = f" {r['unit']}" if r["unit"] and r["unit"] != "%" else r["unit"]
        row["measured"].append(
            f"{r['train_size']}: {_fmt(r['better_mean'], None)}{unit} vs "
            f"{_fmt(r['other_mean'], None)}{unit}, diff {_fmt(r['diff_mean'], r['diff_std'])}"
            f" ({r['wins']}/{r['n']} seeds)")
        row["verdicts"].append(f"{r['train_size']}: {r['verdict']}")
    return [{"claim": v["claim"], "study": v["study"], "measured": "; ".join(v["measured"]),
             "verdict": "; ".join(v["verdicts"])} for v in out.values()]
