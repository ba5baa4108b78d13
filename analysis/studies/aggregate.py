"""Study aggregation: run records in, rows out. Pure functions, no files, no printing.

A *record* is one finished run: its ``summary.json`` plus ``head_label``, ``history`` (the epoch
rows of ``metrics.jsonl``) and ``robustness``. Rows group records by model x head x train size,
each figure as mean and sample standard deviation over the seeds. The *train-test gap* is
``train_acc - test_acc`` (an eval-mode sample of the training images against the test split,
both at the best validation epoch); accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..machine import describe_machine
from ..reporting import format_table, readable

__all__ = [
    "mean_std", "generalisation_gap", "run_row", "group_rows", "paired_differences",
    "robustness_rows", "robustness_pivot", "shift_pivot", "shift_rows", "summary_markdown", "pm",
    "GROUP_KEYS", "TRAIN_TEST_GAP",
]

GROUP_KEYS = ("model", "head_label", "train_size")
# the generalisation gap's name in rows, columns and comparisons ("gap" is a head)
TRAIN_TEST_GAP = "train_test_gap"
# figures averaged over seeds: record key -> row prefix
_AVERAGED = {
    "test_acc": "test_acc", "train_acc": "train_acc", TRAIN_TEST_GAP: TRAIN_TEST_GAP,
    "test_loss": "test_loss",
    "epoch_time_s": "epoch_time_s", "img_per_s": "img_per_s", "peak_mem_mb": "peak_mem_mb",
    "best_epoch": "best_epoch", "checkpoint_mb": "checkpoint_mb",
}
# properties of the architecture: the same for every seed
_CONSTANT = ("params", "head_params", "gmacs", "head_gmacs", "img_size", "epochs", "dataset",
             "lr", "weight_decay")  # a head's learning rate: one per head, chosen or given


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the finite values.

    ``(None, None)`` for no values; the std is None for a single value (undefined, not zero).
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, None
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var)


def generalisation_gap(record: Mapping[str, Any]) -> float | None:
    """``train_acc - test_acc`` of a run record (fractions); None when either is missing."""
    tr, te = record.get("train_acc"), record.get("test_acc")
    if tr is None or te is None:
        return None
    return float(tr) - float(te)


def _label(record: Mapping[str, Any]) -> str:
    return str(record.get("head_label") or record.get("head"))


def run_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One flat row per run (for ``runs.csv``): identity, accuracies, the train-test gap, costs."""
    keys = ("model", "train_size", "seed", "test_acc", "train_acc", "val_acc", "test_loss",
            "best_epoch", "epochs", "params", "head_params", "gmacs", "head_gmacs",
            "epoch_time_s", "img_per_s", "peak_mem_mb", "checkpoint_mb", "time_s", "run_dir")
    row = {"model": record.get("model"), "head": _label(record)}
    row.update({k: record.get(k) for k in keys if k != "model"})
    row[TRAIN_TEST_GAP] = generalisation_gap(record)
    where = record.get("ran_on") or {}
    row["host"], row["job"] = where.get("host"), where.get("job")
    return row


def _group(records: Sequence[Mapping[str, Any]], keys: Sequence[str]
           ) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in records:
        key = tuple(_label(r) if k == "head_label" else r.get(k) for k in keys)
        groups.setdefault(key, []).append(r)
    return groups


def group_rows(records: Sequence[Mapping[str, Any]],
               keys: Sequence[str] = GROUP_KEYS) -> list[dict[str, Any]]:
    """Rows per model x head x train size (order of first appearance) with mean/std over seeds.

    Each row has the group keys (``head_label`` shown as ``head``), ``seeds`` (how many runs),
    the architecture's constants (``params``, ``head_params``, ``gmacs``, ``head_gmacs``, ...),
    and ``<figure>_mean`` / ``<figure>_std`` for test and train accuracy, the train-test gap
    (``train_test_gap``), test loss,
    epoch time (s), throughput (img/s), peak memory (MiB) and the best epoch.
    """
    rows = []
    for key, runs in _group(records, keys).items():
        row: dict[str, Any] = {("head" if k == "head_label" else k): v
                               for k, v in zip(keys, key, strict=True)}
        row["seeds"] = len(runs)
        row["seed_list"] = sorted(r.get("seed") for r in runs if r.get("seed") is not None)
        for c in _CONSTANT:
            row[c] = runs[0].get(c)
        for src, name in _AVERAGED.items():
            vals = [generalisation_gap(r) if src == TRAIN_TEST_GAP else r.get(src) for r in runs]
            row[f"{name}_mean"], row[f"{name}_std"] = mean_std(vals)
        rows.append(row)
    return rows


def paired_differences(records: Sequence[Mapping[str, Any]], baseline: str,
                       metric: str = "test_acc") -> list[dict[str, Any]]:
    """Each head minus ``baseline`` on ``metric``, paired by seed, per model x train size.

    Runs with the same seed share the data subset, the batch order and the backbone's
    initialisation, so the paired difference removes most of the seed-to-seed noise. Returns
    rows with ``diff_mean``, ``diff_std``, ``n`` (paired seeds), ``wins`` (seeds where the head
    beats the baseline), ``t`` (mean / standard error; None below 2 pairs).
    """
    rows = []
    by_cell = _group(records, ("model", "train_size"))
    for (model, size), runs in by_cell.items():
        base = {r.get("seed"): r for r in runs if _label(r) == baseline}
        if not base:
            continue
        heads = list(dict.fromkeys(_label(r) for r in runs if _label(r) != baseline))
        for head in heads:
            diffs = []
            for r in runs:
                b = base.get(r.get("seed"))
                if _label(r) != head or b is None:
                    continue
                a_v = generalisation_gap(r) if metric == TRAIN_TEST_GAP else r.get(metric)
                b_v = generalisation_gap(b) if metric == TRAIN_TEST_GAP else b.get(metric)
                if a_v is not None and b_v is not None:
                    diffs.append(float(a_v) - float(b_v))
            mean, std = mean_std(diffs)
            t = None
            if mean is not None and std:  # undefined for one pair or identical differences
                t = mean / (std / math.sqrt(len(diffs)))
            rows.append({"model": model, "train_size": size, "head": head, "baseline": baseline,
                         "metric": metric, "n": len(diffs), "diff_mean": mean, "diff_std": std,
                         "wins": sum(d > 0 for d in diffs), "t": t})
    return rows


def robustness_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model x head x train size x evaluated input size: test accuracy mean/std over the
    seeds where the model ran, how many refused, and the refusal reason (Flatten heads)."""
    rows = []
    for (model, head, size), runs in _group(records, GROUP_KEYS).items():
        by_px: dict[int, list[Mapping[str, Any]]] = {}
        for r in runs:
            for e in r.get("robustness") or []:
                by_px.setdefault(int(e["img_size"]), []).append(e)
        for px in sorted(by_px):
            evals = by_px[px]
            ok = [e for e in evals if e.get("status") == "ok"]
            mean, std = mean_std([e.get("test_acc") for e in ok])
            reasons = list(dict.fromkeys(e.get("reason") for e in evals if e.get("reason")))
            rows.append({"model": model, "head": head, "train_size": size, "img_size": px,
                         "trained_at": runs[0].get("img_size"), "ok": len(ok),
                         "refused": sum(e.get("status") == "refused" for e in evals),
                         "failed": sum(e.get("status") == "failed" for e in evals),
                         "test_acc_mean": mean, "test_acc_std": std,
                         "reason": reasons[0] if reasons else None})
    return rows


def shift_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per model x head x train size x pixel shift: test accuracy mean/std over the seeds
    (each seed's accuracy the mean over the shift's directions) and how many seeds."""
    rows = []
    for (model, head, size), runs in _group(records, GROUP_KEYS).items():
        by_shift: dict[int, list[float]] = {}
        for r in runs:
            for e in r.get("shifts") or []:
                by_shift.setdefault(int(e["shift"]), []).append(e.get("test_acc"))
        for s in sorted(by_shift):
            mean, std = mean_std(by_shift[s])
            rows.append({"model": model, "head": head, "train_size": size, "shift": s,
                         "seeds": len(by_shift[s]), "test_acc_mean": mean, "test_acc_std": std})
    return rows


def shift_pivot(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model x head x train size, one ``<s> px`` column per shift (acc ± std, %)."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["head"], r["train_size"])
        row = out.setdefault(key, {"model": key[0], "head": key[1], "train size": key[2]})
        row[f"{r['shift']} px"] = pm(r["test_acc_mean"], r["test_acc_std"])
    return list(out.values())


def pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` for a table cell (accuracies as percent by default); '' when missing."""
    if mean is None:
        return ""
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def robustness_pivot(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model x head x train size, one ``<px> px`` column per evaluated size holding
    ``acc ± std`` (percent), ``refused`` or ``failed``; the trained size is marked ``*``."""
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = (r["model"], r["head"], r["train_size"])
        row = out.setdefault(key, {"model": key[0], "head": key[1], "train size": key[2]})
        col = f"{r['img_size']} px" + ("*" if r["img_size"] == r.get("trained_at") else "")
        if r["ok"]:
            row[col] = pm(r["test_acc_mean"], r["test_acc_std"])
        else:
            row[col] = "refused" if r["refused"] else "failed"
    return list(out.values())


def _fmt(value: Any, digits: int = 3) -> Any:
    return "" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else value)


def _session_lines(session: Mapping[str, Any] | None) -> list[str]:
    """The last invocation's wall time against its runs' own times, if it ran any."""
    if not session or not session.get("runs"):
        return []
    workers = session["workers_started"]
    features = (f"; shared feature extraction {session['features_s']:.1f} s"
                if session.get("features_s") else "")
    if session.get("sweep_s"):
        features += (f"; one pass over the cached features (every head x learning rate x "
                     f"seed) {session['sweep_s']:.1f} s")
    return [f"Last invocation: {session['runs']} runs in {session['wall_s']:.1f} s wall, the "
            f"runs themselves {session['jobs_s']:.1f} s ({session['jobs']} at a time){features}; "
            f"overhead {session['overhead_s']:.1f} s ({workers} worker "
            f"process{'' if workers == 1 else 'es'} started).", ""]


def _head_lr_text(head_lr: Mapping[str, float] | None) -> str:
    """`` (flatten-h4096: 0.0001)``: the heads trained at their own learning rate."""
    if not head_lr:
        return ""
    return " (" + ", ".join(f"{k}: {v:g}" for k, v in head_lr.items()) + ")"


def summary_markdown(rows: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]],
                     robustness: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The study's ``summary.md``: settings, machine, the summary table (mean ± std over seeds),
    paired differences against the first head, the robustness tables, the plots, missing runs."""
    lines = _header_lines(meta) + _summary_lines(rows) + _paired_lines(comparisons)
    lines += _robustness_lines(robustness, meta)
    for fig in meta.get("figures", []):
        lines += [f"![{fig}]({fig})", ""]
    if meta.get("ran_on"):
        lines += ["## Where the runs ran", "", format_table(
            [{"host": p["host"], "runs": p["runs"], "jobs": p["jobs"]} for p in meta["ran_on"]]),
                  ""]
    if meta.get("missing"):
        lines += [f"Missing runs ({len(meta['missing'])}): {', '.join(meta['missing'])}", ""]
    return "\n".join(lines)


def _header_lines(meta: Mapping[str, Any]) -> list[str]:
    """Title, command, machine and time, sessions, data and optimisation settings."""
    base, mach = meta.get("base", {}), meta.get("machine", {})
    lines = [f"# Head comparison: {', '.join(meta.get('models', []))}", ""]
    if meta.get("command"):
        lines += ["Command:", "", f"    {meta['command']}", ""]
    return lines + [
        f"Machine: {describe_machine(mach)}. Training + evaluation time of all runs: "
        f"{float(meta.get('train_time_s', 0)) / 60:.1f} min.",
        "",
        *_session_lines(meta.get("session")),
        f"Data: {base.get('dataset')}, input {base.get('img_size') or 'native'} px, "
        f"{base.get('epochs')} epochs, batch {base.get('batch_size')}, {base.get('optimizer')} "
        f"lr {base.get('lr')}{_head_lr_text(meta.get('head_lr'))}, weight decay "
        f"{base.get('weight_decay')}, "
        f"pretrained: {'yes' if base.get('pretrained') else 'no'}. Seeds: "
        f"{', '.join(map(str, meta.get('seeds', [])))}. Runs: {meta.get('runs')} of "
        f"{meta.get('expected')}.",
        "",
    ]


def _summary_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The summary table: one row per model x head x training size, mean ± std over seeds."""
    table = [{"model": r["model"], "head": r["head"], "train size": r["train_size"],
              "seeds": r["seeds"], "lr": _fmt(r.get("lr"), 3),
              "head params": readable(r["head_params"]), "params": readable(r["params"]),
              "MACs per image": readable(None if r["gmacs"] is None else r["gmacs"] * 1e9),
              "test acc": pm(r["test_acc_mean"], r["test_acc_std"]),
              "train acc": pm(r["train_acc_mean"], r["train_acc_std"]),
              "train-test gap": pm(r["train_test_gap_mean"], r["train_test_gap_std"]),
              "epoch s": pm(r["epoch_time_s_mean"], r["epoch_time_s_std"], 1.0),
              "peak MiB": pm(r["peak_mem_mb_mean"], None, 1.0, 0),
              "ckpt MiB": pm(r.get("checkpoint_mb_mean"), None, 1.0, 1)} for r in rows]
    return ["## Summary (mean ± sample std over seeds)", "",
            "Accuracies in percent; train-test gap = train accuracy - test accuracy (percentage "
            "points) of the best-validation checkpoint; epoch time in seconds; peak memory in "
            "MiB (CPU: the run's peak resident set; CUDA: max allocated).", "",
            format_table(table, floatfmt=".4g"), ""]


def _paired_lines(comparisons: Sequence[Mapping[str, Any]]) -> list[str]:
    """Paired differences against the first head (same seed: same data, order, backbone)."""
    if not comparisons:
        return []
    comp = [{"metric": c["metric"], "model": c["model"], "train size": c["train_size"],
             "head": c["head"], "n": c["n"], "diff": pm(c["diff_mean"], c["diff_std"], 100, 2),
             "wins": f"{c['wins']}/{c['n']}", "t": _fmt(c["t"], 2)} for c in comparisons]
    return [f"## Paired differences against {comparisons[0]['baseline']} (same seed: same "
            "data subset, batch order and backbone initialisation)", "",
            "diff = head - baseline in percentage points, mean ± std over seeds; wins = "
            "seeds where the head's value is higher; t = mean / standard error.", "",
            format_table(comp, floatfmt=".4g"), ""]


def _robustness_lines(robustness: Sequence[Mapping[str, Any]],
                      meta: Mapping[str, Any]) -> list[str]:
    """The input-size and shift robustness tables, when the study measured them."""
    lines: list[str] = []
    if robustness:
        n_img = meta.get("robust_images")
        lines += ["## Input-size robustness (test accuracy %, mean ± std over seeds"
                  + (f", {n_img} test images" if n_img else "") + "; * = trained size)", "",
                  format_table(robustness_pivot(robustness), floatfmt=".4g"), ""]
        reasons = list(dict.fromkeys(r["reason"] for r in robustness if r.get("reason")))
        lines += [f"- {reason}" for reason in reasons] + ([""] if reasons else [])
    shifted = meta.get("shift_rows") or []
    if shifted:
        lines += ["## Shift robustness (test accuracy %, mean ± std over seeds, "
                  f"{meta.get('shift_images') or 'all'} test images shifted by s pixels of the "
                  "stored images, zero fill, mean over right, left, down and up)", "",
                  format_table(shift_pivot(shifted), floatfmt=".4g"), ""]
    return lines
