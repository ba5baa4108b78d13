"""The run directory: every file written atomically (temp file, then rename).

A run killed at any moment leaves each file either at its previous or at its new content, never
half-written: ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``summary.json``, ``best.pt``,
``last.pt`` and ``curves.png``. The checkpoints ``best.pt`` and ``last.pt`` are written by
analysis.training.checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgery import atomic_write_bytes, finite

__all__ = ["METRIC_COLUMNS", "RUN_FILES", "prepare_run_dir", "write_metrics"]

RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
             "curves.png")

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


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False, write: bool = True) -> Path:
    """Create ``run_dir``; refuse (ValueError) to start over a run already there unless told to.

    ``write=False`` (ranks other than 0) only checks.
    """
    run_dir = Path(run_dir)
    taken = [f for f in RUN_FILES if (run_dir / f).exists()]
    if taken and not overwrite:
        raise ValueError(f"run directory {str(run_dir)!r} already holds a run ({', '.join(taken)}); "
                         f"continue it with --resume {run_dir}, start over with --overwrite, or "
                         "choose another --name")
    if write:
        for f in taken:
            (run_dir / f).unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir

