"""--tensorboard: event files tensorboard's own reader parses, holding the runs' values."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from analysis.training import TrainConfig, train
from tests.tiny_runs import TINY_ARGS, quiet, tiny_config

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

ROOT = Path(__file__).resolve().parents[3]


def _scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def test_a_run_writes_its_epoch_metrics(tmp_path):
    quiet(train, tiny_config(tmp_path, name="r", epochs=2, tensorboard=True))
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    got = _scalars(tmp_path / "r" / "tensorboard")
    assert [s for s, _ in got["acc/val"]] == [1, 2]
    assert [v for _, v in got["acc/val"]] == pytest.approx([r["val_acc"] for r in rows])
    assert [v for _, v in got["loss/train"]] == pytest.approx([r["train_loss"] for r in rows])


def test_a_study_writes_one_hparams_entry_per_run(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import compare_heads

    argv = [*TINY_ARGS, "--heads", "gap", "gmp", "--seeds", "0", "1", "--epochs", "1",
            "--jobs", "0", "--tensorboard", "--out", str(tmp_path / "study")]
    argv.remove("--epochs")
    argv.remove("2")
    assert quiet(compare_heads.main, argv) == 0
    runs = sorted((tmp_path / "study" / "runs").iterdir())
    logged = sorted(d for d in (tmp_path / "study" / "tensorboard").iterdir() if d.is_dir())
    assert [d.name for d in logged] == [d.name for d in runs] and len(runs) == 4
    for run, log in zip(runs, logged, strict=True):
        summary = json.loads((run / "summary.json").read_text())
        values = {tag: points[0][1] for tag, points in _scalars(log).items()}
        assert values["test_acc"] == pytest.approx(summary["test_acc"])
        assert values["head_params"] == summary["head_params"]
        assert (run / "tensorboard").is_dir()  # and each run its own epochs


def test_without_the_package_one_line_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboard" else real(name, *a))
    cfg = TrainConfig(model="test_resnet", dataset="synthetic", tensorboard=True)
    with pytest.raises(ValueError, match=r"headswap\[tensorboard\]"):
        cfg.check()
