"""What pick_head writes: the ranked table, the learning rates behind it, the rule, the plots.

:func:`table_rows` is the ranked table as people read it (percentages, the chosen learning rate,
the paired difference to the best with its Holm-corrected p, the training accuracy with a flag
when a head does not fit its training set); :func:`lr_rows` each head's chosen learning rate
with the accuracy at the neighbouring grid values; :func:`write_pick` writes ``pick.md``,
``pick.csv``, ``pick.json``, ``pick.png`` and, from the one pass, ``sweep.csv`` and ``lr.png``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgery import atomic_write_bytes

from ..reporting import format_table, plot_pick, readable, to_csv
from .lr_grid import Choice, neighbours
from .onepass import sweep_dir
from .pick import FIT_THRESHOLD, JSON_KEYS
from .recommend import RULE

__all__ = ["lr_rows", "table_rows", "write_pick"]


def _pct(v: Any) -> Any:
    return None if v is None else round(100 * float(v), 2)


def _fits(r: dict[str, Any]) -> str:
    acc = r.get("train_acc_mean")
    if acc is None:
        return ""
    return f"{100 * acc:.1f}" + ("" if acc >= FIT_THRESHOLD else " (does not fit)")


def table_rows(table: Sequence[dict[str, Any]], choices: dict[str, Any] | None = None, *,
               exact: bool = False) -> list[dict[str, Any]]:
    """The ranked table as people read it: percentages and points, parameters and MACs in
    readable units (``exact``: as counts, for CSV)."""
    choices = choices or {}
    rows = []
    for i, r in enumerate(table):
        edge = (choices.get(r["head"]) or {}).get("edge")
        diff = r.get("diff_mean")
        rows.append({
            "rank": i + 1, "head": r["head"], "val acc %": _pct(r["val_acc_mean"]),
            "± std": _pct(r["val_acc_std"]),
            "Δ best pts": None if diff is None or r.get("verdict") == "best" else _pct(diff),
            "p (Holm)": None if r.get("p") is None else float(f"{r['p']:.2g}"),
            "verdict": r.get("verdict"),
            "lr": None if r.get("lr") is None else f"{r['lr']:.3g}" + (f" ({edge} end)" if edge
                                                                    else ""),
            "train acc %": _fits(r), "train-val gap pts": _pct(r["gap_acc_mean"]),
            "head params": r["head_params"] if exact else readable(r["head_params"]),
            "head MACs": (None if r["head_gmacs"] is None else round(r["head_gmacs"] * 1e9))
            if exact else readable(None if r["head_gmacs"] is None else r["head_gmacs"] * 1e9),
            "any size": "yes" if r["any_size"] else "no", "seeds": r["seeds"],
            "test acc %": _pct(r["test_acc_mean"])})
    return rows


def lr_rows(choices: dict[str, Any], curves: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per head: the chosen learning rate, the mean validation accuracy there and at the grid
    values on either side (with their status when pruned or diverged), and the edge flag."""
    out = []
    for head, c in choices.items():
        choice = Choice(head, c["lr"], c["weight_decay"], c["val_acc_mean"], c["val_acc_std"],
                        (), c.get("edge"))
        near = neighbours(curves, choice)

        def cell(row: dict[str, Any] | None) -> str:
            if row is None:
                return "-"
            acc = "diverged" if row["val_acc_mean"] is None else \
                f"{100 * row['val_acc_mean']:.2f}%"
            note = f" ({row['status']})" if row["status"] != "ok" else ""
            return f"{row['lr']:.3g}: {acc}{note}"

        out.append({"head": head, "lower lr": cell(near.get("below")),
                    "chosen lr": f"{c['lr']:.3g}: {100 * c['val_acc_mean']:.2f}%",
                    "higher lr": cell(near.get("above")),
                    "weight decay": f"{c['weight_decay']:g}",
                    "edge": (f"best at the {c['edge']} end of the grid"
                             + (" (extended once)" if c.get("extended") else ""))
                    if c.get("edge") else ""})
    return out


def write_pick(out: str | Path, result: dict[str, Any], meta: dict[str, Any]) -> dict[str, Path]:
    """``pick.md``, ``pick.csv``, ``pick.json``, ``pick.png`` in ``out`` (and the one pass's
    ``sweep.csv`` and ``lr.png``); ``meta`` (command, machine, wall time, ...) goes into the
    markdown and a ``meta`` key of nothing else."""
    out = Path(out)
    choices = result.get("choices") or {}
    rows = table_rows(result["table"], choices)
    doc = {k: result[k] for k in JSON_KEYS}
    lines = [f"# Which head for {result['backbone']} on {result['dataset']}?", "",
             f"**Recommended: {result['recommended']}**: {result['reason']}.", "",
             format_table(rows, floatfmt=".4g"), "",
             f"Rule: {RULE}. Δ best: the mean paired difference to the best head over the seeds. "
             f"Train acc: the last epoch's, on a fixed sample of the training set; \"does not "
             f"fit\" below {100 * FIT_THRESHOLD:g}%.", ""]
    if choices:
        lines += ["## Each head at its own learning rate", "",
                  "Chosen on validation accuracy, mean over the seeds; the neighbouring grid "
                  "values show how flat the optimum is (`lr.png` draws every value).", "",
                  format_table(lr_rows(choices, result.get("curves") or []), floatfmt=".4g"), ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    if result.get("skipped"):
        lines += ["", "Head kinds that do not apply:"]
        lines += [f"- {k}: {why}" for k, why in result["skipped"]]
    files = {
        "pick.md": atomic_write_bytes(out / "pick.md", ("\n".join(lines) + "\n").encode()),
        "pick.csv": atomic_write_bytes(out / "pick.csv", to_csv(
            table_rows(result["table"], choices, exact=True)).encode()),
        "pick.json": atomic_write_bytes(out / "pick.json",
                                        (json.dumps(doc, indent=2) + "\n").encode()),
    }
    title = f"{result['backbone']} on {result['dataset']}, n={result['train_size']}"
    png = plot_pick(result["table"], out / "pick.png", title, result["recommended"])
    if png is not None:
        files["pick.png"] = png
    swept = sweep_dir(out, result["backbone"], result.get("study_train_size"))
    for name in ("sweep.csv", "lr.png"):
        if (swept / name).is_file():
            shutil.copyfile(swept / name, out / name)
            files[name] = out / name
    return files
