"""The tiny training runs the tests share: test_resnet on 4 generated classes, in seconds."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from analysis.training import TrainConfig

# the same run from the command line (tools/finetune.py), two epochs
TINY_ARGS = ["test_resnet", "--dataset", "synthetic", "--data-option", "num_classes=4",
             "--data-option", "n_train=96", "--data-option", "n_test=32", "--data-option",
             "image_size=16", "--val-size", "32", "--epochs", "2", "--batch-size", "8",
             "--lr", "0.01", "--no-progress"]


def tiny_config(out: str | Path, **kw: Any) -> TrainConfig:
    """test_resnet on 4 generated classes, 64 train / 32 val images at 16 px: 8 steps an epoch,
    one epoch; ``kw`` overrides any field (``data_options`` as a whole)."""
    base: dict[str, Any] = dict(
        model="test_resnet", head="gap", dataset="synthetic", val_size=32,
        data_options=dict(num_classes=4, n_train=96, n_test=32, image_size=16),
        epochs=1, batch_size=8, lr=1e-2, progress=False, out=str(out), ckpt_minutes=0,
        min_steps=0)
    base.update(kw)
    return TrainConfig(**base)


def quiet(fn: Any, *a: Any, **kw: Any) -> Any:
    """``fn(*a, **kw)`` with warnings silenced (tiny inputs make the swap warn on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **kw)
