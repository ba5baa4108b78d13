"""The run directory: every file written atomically (temp file, then rename).

A run killed at any moment leaves each file either at its previous or at its new content, never
half-written: ``config.json``, ``metrics.csv``, ``metrics.jsonl``, ``summary.json``, ``best.pt``,
``last.pt`` and ``curves.png``. The checkpoints ``best.pt`` and ``last.pt`` are written by
analysis.checkpoints.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["METRIC_COLUMNS", "RUN_FILES", "atomic_write_bytes", "prepare_run_dir", "plot_curves",
           "read_json", "write_json", "write_metrics"]

RUN_FILES = ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
             "curves.png")

# one row per epoch; accuracies are fractions in [0, 1], losses are mean cross-entropy (nats)
METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "gap_acc", "gap_loss",
    "train_loss_running", "epoch_time_s", "img_per_s", "peak_mem_mb",
)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


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
    lines = "".join(json.dumps(_clean(dict(r))) + "\n" for r in rows)
    atomic_write_bytes(run_dir / "metrics.jsonl", lines.encode())


def plot_curves(path: str | Path, rows: Sequence[dict[str, Any]], title: str = "") -> Path | None:
    """Loss and accuracy per epoch, train (eval-mode sample) vs validation, as a PNG."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label, ax in (("train_loss", "train", ax1), ("val_loss", "validation", ax1),
                           ("train_acc", "train", ax2), ("val_acc", "validation", ax2)):
        ax.plot(ep, [r[key] for r in rows], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="loss (cross-entropy)")
    ax2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


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

