"""A study's runs from its committed tables, for a checkout without its run directories.

Run directories (checkpoints, per-epoch metrics) are not committed; a study's ``runs.csv`` is,
one row per run. :func:`committed_records` turns it back into run records for the claims
(analysis.studies.claims): every figure of the row, the shifted accuracies of
``full_test.csv`` (tools/evaluate_runs.py) where the study has one, and the input sizes of
``robustness.json`` where every seed of a head ran at a size, or every one was refused there
(its only per-run record is the count).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from surgery import read_json

__all__ = ["committed_records"]


def _value(text: str) -> Any:
    """A CSV cell as a number where it is one ('' is None)."""
    if text == "":
        return None
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text else number


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _shifts(directory: Path) -> dict[str, list[dict[str, Any]]]:
    """run name -> [{"shift", "test_acc"}] from full_test.csv's ``shift_<N>px`` columns."""
    path = directory / "full_test.csv"
    if not path.is_file():
        return {}
    out = {}
    for row in _rows(path):
        cols = [(int(m.group(1)), v) for k, v in row.items()
                if (m := re.fullmatch(r"shift_(\d+)px", k)) and v is not None]
        out[str(row["run"])] = [{"shift": s, "test_acc": v} for s, v in sorted(cols)]
    return out


def _sizes(directory: Path) -> dict[tuple[Any, Any, Any], dict[str, Any]]:
    """(model, head, train size) -> {"trained_at", "rows": [{"img_size", "status"}]}, the
    sizes where all seeds agree."""
    path = directory / "robustness.json"
    out: dict[tuple[Any, Any, Any], dict[str, Any]] = {}
    for r in read_json(path) if path.is_file() else []:
        seeds = r["ok"] + r["refused"] + r["failed"]
        status = ("ok" if r["ok"] == seeds else "refused" if r["refused"] == seeds else None)
        cell = out.setdefault((r["model"], r["head"], r["train_size"]),
                              {"trained_at": r["trained_at"], "rows": []})
        if status is not None and r["img_size"] != r["trained_at"]:
            cell["rows"].append({"img_size": r["img_size"], "status": status})
    return out


def committed_records(directory: str | Path) -> list[dict[str, Any]]:
    """The run records ``runs.csv`` of ``directory`` holds (empty without one), with
    ``head_label``, ``shifts`` and ``robustness`` as analysis.studies.collect gives them."""
    directory = Path(directory)
    if not (directory / "runs.csv").is_file():
        return []
    shifts, sizes = _shifts(directory), _sizes(directory)
    records = []
    for row in _rows(directory / "runs.csv"):
        name = Path(str(row.get("run_dir") or "")).name
        size = sizes.get((row["model"], row["head"], row["train_size"]), {})
        records.append({**row, "head_label": row["head"], "run": name,
                        "shifts": shifts.get(name, []), "robustness": size.get("rows", []),
                        "img_size": row.get("img_size") or size.get("trained_at")})
    return records
