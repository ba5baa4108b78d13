"""The report of a head comparison study: tables, JSON and plots of its finished runs.

:func:`write_report` turns the records of a study (one per finished run) into
``summary.md/.csv/.json``, ``runs.csv``, ``comparisons.csv``, ``robustness.csv/.json`` and the
plots of analysis.reporting, with the machine they were measured on (analysis.machine).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from surgery import atomic_write_bytes

from ..machine import machine_info
from ..reporting import (
    plot_acc_vs_head_params,
    plot_acc_vs_shift,
    plot_gap_vs_train_size,
    plot_learning_curves,
    to_csv,
    to_json,
)
from ..reporting.tensorboard import write_hparams
from . import aggregate as agg
from .spec import StudySpec, combinations

__all__ = ["write_report"]


def write_report(out: str | Path, records: list[dict[str, Any]], spec: StudySpec,
                 missing: Sequence[str] = (), session: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Write ``summary.md/.csv/.json``, ``runs.csv``, ``comparisons.csv``,
    ``robustness.csv/.json``, ``shifts.csv`` and the plots into ``out``; returns the rows.
    ``session``: the timing of the invocation that ran runs (wall time against run times)."""
    out = Path(out)
    rows = agg.group_rows(records)
    baseline = spec.heads[0].label
    comps = [c for m in ("test_acc", agg.TRAIN_TEST_GAP)
             for c in agg.paired_differences(records, baseline, m)]
    robust = agg.robustness_rows(records)
    shifted = agg.shift_rows(records)
    figures = {
        "acc_vs_head_params.png": plot_acc_vs_head_params(rows, out / "acc_vs_head_params.png"),
        "gap_vs_train_size.png": plot_gap_vs_train_size(rows, out / "gap_vs_train_size.png"),
        "learning_curves.png": plot_learning_curves(records, out / "learning_curves.png"),
        "acc_vs_shift.png": plot_acc_vs_shift(shifted, out / "acc_vs_shift.png"),
    }
    meta = dict(spec.to_dict(), machine=machine_info(), runs=len(records),
                expected=len(combinations(spec)), missing=list(missing),
                train_time_s=sum(float(r.get("time_s") or 0.0) for r in records),
                figures=[k for k, v in figures.items() if v is not None], shift_rows=shifted,
                ran_on=_placements(records),
                **({"session": session} if session else {}))
    texts = {
        "summary.md": agg.summary_markdown(rows, comps, robust, meta),
        "summary.csv": to_csv(rows),
        "summary.json": json.dumps({"study": meta, "rows": rows, "comparisons": comps},
                                   indent=2, default=str) + "\n",
        "runs.csv": to_csv([agg.run_row(r) for r in records]),
        "comparisons.csv": to_csv(comps),
        "robustness.csv": to_csv(robust),
        "robustness.json": to_json(robust) + "\n",
        **({"shifts.csv": to_csv(shifted)} if shifted else {}),
    }
    for name, text in texts.items():
        atomic_write_bytes(out / name, text.encode())
    if spec.base.get("tensorboard") and records:
        write_hparams(out, [_hparams(r) for r in records])
    return {"rows": rows, "comparisons": comps, "robustness": robust, "shifts": shifted,
            "meta": meta}


def _hparams(record: Mapping[str, Any]) -> dict[str, Any]:
    """One run as TensorBoard's HParams view shows it: what was chosen against what it gave."""
    row = agg.run_row(record)
    name = str(record.get("run") or Path(str(row.get("run_dir"))).name)
    gap = row.get(agg.TRAIN_TEST_GAP)
    hparams = {"model": row["model"], "head": row["head"], "lr": float(record.get("lr") or 0.0),
               "seed": int(row.get("seed") or 0), "train_size": int(row.get("train_size") or 0)}
    metrics = {"val_acc": row.get("val_acc"), "test_acc": row.get("test_acc"),
               "train_test_gap": gap, "head_params": row.get("head_params"),
               "head_macs": None if row.get("head_gmacs") is None else row["head_gmacs"] * 1e9}
    return {"name": name, "hparams": hparams,
            "metrics": {k: float(v) for k, v in metrics.items() if v is not None}}


def _placements(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Where the runs ran: one row per host with its run count and the scheduler's job ids
    (from each run's ``placement.json``; runs without one are left out)."""
    hosts: dict[str, dict[str, Any]] = {}
    for r in records:
        where = r.get("ran_on") or {}
        if not where.get("host"):
            continue
        row = hosts.setdefault(where["host"], {"host": where["host"], "runs": 0, "job_ids": []})
        row["runs"] += 1
        if where.get("job"):
            row["job_ids"].append(str(where["job"]))
    for row in hosts.values():
        ids = row.pop("job_ids")
        row["jobs"] = ", ".join(ids[:8]) + (f", ... ({len(ids)} jobs)" if len(ids) > 8 else "")
    return list(hosts.values())
