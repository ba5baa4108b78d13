"""The run directory: every file written atomically (temp file, then rename).

A run killed at any moment leaves each file (``config.json``, ``metrics.csv``/``.jsonl``,
``summary.json``, ``curves.png``; the checkpoints through analysis.training.checkpoints) at its
previous or its new content, never half-written. A new run writes nothing, and replaces no run
(``--overwrite``), until its first optimiser step has succeeded; one that fails before its
first ``last.pt`` removes what it wrote. One process at a time holds a run directory
(analysis.runtime.run_lock).
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
           "run_path", "run_summary", "write_metrics"]

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


def run_summary(cfg: Any, parts: Any, history: Sequence[dict[str, Any]], best: dict[str, Any],
                totals: dict[str, Any], test: tuple[float, float], *, device: Any,
                world_size: int, run_dir: Path) -> dict[str, Any]:
    """What ``summary.json`` holds: the run's settings, the test metrics of its best-validation
    checkpoint, the train / validation figures of that epoch and of the last, costs, time
    (``totals``: ``time_s``, ``train_time_s``, ``train_images``), memory and the feature cache.
    ``cfg`` is the TrainConfig, ``parts`` the RunParts (analysis.training.parts)."""
    b = history[best["epoch"] - 1] if best.get("epoch") else history[-1]
    last = history[-1]
    head = cfg.head_spec()
    best_pt = Path(run_dir) / "best.pt"
    return {
        "model": cfg.model, "head": head.kind, "head_spec": str(head),
        "head_label": head.label, "hidden": list(head.hidden), "dropout": head.dropout,
        "dataset": cfg.dataset, "regime": cfg.regime,
        "train_size": len(parts.data.train_y), "img_size": parts.img_size,
        "seed": cfg.seed, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "epochs": len(history), "test_acc": test[1],
        "test_loss": test[0], "best_val_acc": best["val_acc"],
        "best_epoch": best["epoch"],
        # generalisation of the checkpoint the test accuracy comes from, then of the last
        "train_acc": b["train_acc"], "val_acc": b["val_acc"], "gap_acc": b["gap_acc"],
        "gap_loss": b["gap_loss"], "train_loss": b["train_loss"], "val_loss": b["val_loss"],
        "final_train_acc": last["train_acc"], "final_val_acc": last["val_acc"],
        "final_gap_acc": last["gap_acc"], "final_gap_loss": last["gap_loss"],
        **parts.costs,
        "time_s": totals["time_s"],  # wall time of training, evaluation and checkpoints
        "train_time_s": totals["train_time_s"],
        "epoch_time_s": sum(r["epoch_time_s"] for r in history) / len(history),
        "img_per_s": totals["train_images"] / max(totals["train_time_s"], 1e-9),
        "peak_mem_mb": max(r["peak_mem_mb"] for r in history),
        # size of best.pt (the whole model, as surgery.save writes it) in MiB
        "checkpoint_mb": best_pt.stat().st_size / 2**20 if best_pt.is_file() else None,
        "device": str(device), "world_size": world_size,
        "run_dir": str(run_dir),
        # whether the head trained on cached features, and the extraction (not in time_s)
        "feature_cache": parts.feature_cache,
    }


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
