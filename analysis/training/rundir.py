"""The run directory: every file written atomically (temp file, then rename).

A run killed at any moment leaves each file either at its previous or at its new content, never
half-written: ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``summary.json``, ``best.pt``,
``last.pt`` and ``curves.png``. The checkpoints ``best.pt`` and ``last.pt`` are written by
analysis.training.checkpoints.

A new run writes nothing until its first optimiser step has succeeded: only then does it
replace a run it overwrites (``--overwrite``) and write ``config.json``; a run that fails before
its first ``last.pt`` removes what it wrote. One process at a time holds a run directory
(analysis.training.lock).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgery import atomic_write_bytes, finite

__all__ = ["DERIVED_FILES", "METRIC_COLUMNS", "RUN_FILES", "refuse_taken", "remove_run_files",
           "run_path", "write_metrics"]

RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
             "curves.png")
# written beside a run by a study (its robustness evaluation, where it ran): stale once replaced
DERIVED_FILES = ("robustness.json", "placement.json")

# one row per epoch; accuracies are fractions in [0, 1], losses are mean cross-entropy (nats)
METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "gap_acc", "gap_loss",
    "train_loss_running", "epoch_time_s", "img_per_s", "peak_mem_mb",
)


def write_metrics(run_dir: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.csv`` and ``metrics.jsonl`` whole from the epoch rows."""
    run_dir = Path(run_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})
    atomic_write_bytes(run_dir / "metrics.csv", buf.getvalue().encode())
    lines = "".join(json.dumps(finite(dict(r))) + "\n" for r in rows)
    atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())


def run_path(out: str | Path, name: str) -> Path:
    """``out / name``, refusing names that are not one directory name (ValueError)."""
    bad = (not name or name in (".", "..") or "/" in name
           or (os.altsep is not None and os.altsep in name) or os.sep in name)
    if bad:
        raise ValueError(f"--name {name!r} must be a single directory name (no '/', '.' or '..'); "
                         "give the parent directory with --out")
    return Path(out) / name


def refuse_taken(run_dir: str | Path, overwrite: bool) -> None:
    """Refuse (ValueError) to start a run over one already in ``run_dir`` unless told to."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"{str(run_dir)!r} is a file, not a run directory; choose another "
                         "--name or --out")
    taken = [f for f in RUN_FILES if (run_dir / f).exists()]
    if taken and not overwrite:
        raise ValueError(f"run directory {str(run_dir)!r} already holds a run ({', '.join(taken)}); "
                         f"continue it with --resume {run_dir}, start over with --overwrite, or "
                         "choose another --name")


def remove_run_files(run_dir: str | Path) -> None:
    """Delete what a run wrote into ``run_dir`` (and what was derived from it), nothing else."""
    for f in (*RUN_FILES, *DERIVED_FILES):
        try:
            (Path(run_dir) / f).unlink()
        except FileNotFoundError:
            pass
