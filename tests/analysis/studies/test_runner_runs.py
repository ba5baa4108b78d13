"""The study runner: a run another process still trains is left alone, progress in a log is one
line per run, and the invocation's time is set against its runs' own times."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

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
    assert timing["overhead_s"] == pytest.approx(
        timing["wall_s"] - timing["features_s"] - timing["sweep_s"] - timing["jobs_s"])
    assert timing["overhead_s"] >= 0
    assert "Last invocation: 4 runs in" in (tmp_path / "summary.md").read_text()


def test_an_image_folder_is_decoded_once_by_the_study_before_its_workers_start(tmp_path,
                                                                                monkeypatch):
    from tests.image_folders import make_folder

    root = make_folder(tmp_path / "imgs", per_class=6)
    cache = tmp_path / "cache"
    seen = []

    def workers(pending, jobs, threads, runs_per_worker, out, record):  # what they would find
        seen.append(sorted(p.parent.name for p in cache.rglob("manifest.json")))
        for job in pending:
            record(job.name, "ok", "", 0.0)
        return jobs

    monkeypatch.setattr(runner, "_run_pending", workers)
    base = {"dataset": "imagefolder", "data_dir": str(root), "img_size": 20, "resize": "pad",
            "val_size": 2, "data_cache_dir": str(cache), "decode_workers": 1, "epochs": 1}
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("gmp")), (0,), (None,),
                     base)
    result = run_study(spec, tmp_path / "study", jobs=2, progress=False)
    assert len(seen) == 1 and len(seen[0]) == 1 and seen[0][0].split("-")[1:3] == ["20px", "pad"]
    assert result["timing"]["data_load_s"] > 0
    synthetic = run_study(StudySpec(("test_resnet",), (parse_head("gap"),), (0,), (None,),
                                    {"dataset": "synthetic", "epochs": 1}),
                          tmp_path / "synthetic", jobs=2, progress=False)
    assert synthetic["timing"]["data_load_s"] == 0.0 and len(seen) == 2
