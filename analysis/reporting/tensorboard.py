"""TensorBoard event files: a run's per-epoch metrics, and a study's HParams view.

``--tensorboard`` on the training tools writes, per run, ``RUN/tensorboard`` with the metrics
each epoch already records; per study, ``STUDY/tensorboard`` with one HParams entry per run
(model, head, learning rate, seed, training size against its accuracies, gap and costs), so
``tensorboard --logdir STUDY`` compares heads. Through ``torch.utils.tensorboard`` and the
``tensorboard`` package (the optional extra of that name).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["EPOCH_METRICS", "EpochWriter", "check_tensorboard", "write_hparams"]

EXTRA_HINT = "pip install 'headswap[tensorboard]'"
# the per-epoch metrics of a run, as TensorBoard tags
EPOCH_METRICS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "acc/train",
                 "val_acc": "acc/val", "gap_acc": "acc/train_minus_val", "lr": "lr",
                 "epoch_time_s": "time/epoch_s", "img_per_s": "time/img_per_s"}


def check_tensorboard() -> None:
    """ValueError naming the extra when the ``tensorboard`` package is not installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError(f"--tensorboard writes event files through the tensorboard package, "
                         f"which is not installed: {EXTRA_HINT}")


def _writer(log_dir: Path) -> Any:
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(log_dir))


class EpochWriter:
    """A run's event file, written one epoch row at a time (a resumed run appends a file)."""

    def __init__(self, run_dir: str | Path):
        self.log_dir = Path(run_dir) / "tensorboard"
        self._writer: Any = None

    def add(self, row: Mapping[str, Any]) -> None:
        """The metrics of one epoch row (``epoch`` is the step)."""
        if self._writer is None:
            self._writer = _writer(self.log_dir)
        for key, tag in EPOCH_METRICS.items():
            if row.get(key) is not None:
                self._writer.add_scalar(tag, float(row[key]), int(row["epoch"]))
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_hparams(study_dir: str | Path, runs: Sequence[Mapping[str, Any]]) -> Path:
    """``STUDY/tensorboard``: one HParams entry per run, written anew each time (``runs``:
    rows with ``name``, ``hparams`` and ``metrics``, plain numbers and strings)."""
    log_dir = Path(study_dir) / "tensorboard"
    shutil.rmtree(log_dir, ignore_errors=True)
    writer = _writer(log_dir)
    try:
        for run in runs:
            writer.add_hparams(dict(run["hparams"]), dict(run["metrics"]), run_name=run["name"])
    finally:
        writer.close()
    return log_dir
