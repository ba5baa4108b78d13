"""The study runner: a run another process still trains is left alone, progress in a log is one
line per run, and the invocation's time is set against its runs' own times."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from analysis.studies import StudySpec, combinations, run_study, runner
from surgery import parse_head

TINY_DATA = {"num_classes": 4, "n_train": 64, "n_test": 32, "image_size": 16, "channels": 1}


def test_a_run_in_use_elsewhere_is_skipped_with_a_note(tmp_path):
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("gmp")), (0,), (None,),
                     {"dataset": "synthetic", "data_options": TINY_DATA, "val_size": 16,
                      "epochs": 1, "batch_size": 16, "lr": 0.01}, robust_sizes=(16,))
    gap, gmp = (str(c.config(spec, tmp_path).name) for c in combinations(spec))
    busy = tmp_path / "runs" / gmp
    busy.mkdir(parents=True)
    fd = os.open(busy / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process (or its orphaned worker)
    os.write(fd, json.dumps({"host": "node7", "pid": 4242, "started": "2030-01-01"}).encode())
    try:
        result = run_study(spec, tmp_path, jobs=0, progress=False)
    finally:
        os.close(fd)
    assert result["ran"] == [gap] and result["failed"] == []
    assert [name for name, _ in result["busy"]] == [gmp]
    assert "in use by pid 4242 on node7" in result["busy"][0][1]
    assert [p.name for p in busy.iterdir()] == [".lock"]  # not run twice into one directory
    assert result["report"]["meta"]["runs"] == 1


def _fake_run_job(job: dict) -> dict:
    cfg = job["config"]
    run_dir = Path(cfg["out"]) / cfg["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"model": cfg["model"], "head": cfg["head"], "train_size": 10, "seed": cfg["seed"],
               "test_acc": 0.5, "train_acc": 1.0, "head_params": 1}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "robustness.json").write_text("[]")
    return summary


def test_progress_in_a_log_is_one_line_per_run_and_time_is_reported(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setattr(runner, "run_job", _fake_run_job)
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("gmp")), (0, 1), (None,),
                     {"dataset": "synthetic", "epochs": 1})
    result = run_study(spec, tmp_path, jobs=0, progress=True)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err and len(lines) == 4 and lines[-1].startswith("study runs: 4/4 runs in")
    assert "gmp-synthetic-nall-s1 ok" in lines[-1]
    timing = result["timing"]
    assert timing["runs"] == 4 and timing["workers_started"] == 0
    assert timing["features_s"] >= 0  # no frozen backbone here: nothing to extract
    assert timing["overhead_s"] == timing["wall_s"] - timing["features_s"] - timing["jobs_s"] >= 0
    assert "Last invocation: 4 runs in" in (tmp_path / "summary.md").read_text()
