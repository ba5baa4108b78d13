"""tools/compare_heads.py with worker processes: a reused worker gives the runs an in-process
study gives, warnings are one line each, and killing the tool kills its worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import compare_heads  # noqa: E402

from analysis.runtime import process_alive  # noqa: E402

SYNTH = ["--dataset", "synthetic", "--data-option", "num_classes=3", "--data-option",
         "n_train=48", "--data-option", "n_test=24", "--data-option", "image_size=16",
         "--val-size", "12", "--batch-size", "16", "--no-progress"]
TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


@pytest.mark.slow
def test_one_reused_worker_gives_the_in_process_results(tmp_path, capsys):
    grid = ["test_resnet", "--heads", "gap", "gmp", *SYNTH, "--epochs", "2", "--robust-sizes",
            "16", "--threads", "1"]
    assert compare_heads.main([*grid, "--jobs", "0", "--out", str(tmp_path / "here")]) == 0
    capsys.readouterr()
    assert compare_heads.main([*grid, "--jobs", "1", "--out", str(tmp_path / "pool")]) == 0
    out = capsys.readouterr().out
    assert "runs in" in out and "1 worker process started" in out
    names = sorted(p.name for p in (tmp_path / "pool" / "runs").iterdir())
    assert len(names) == 2
    for name in names:
        assert _metrics(tmp_path / "pool" / "runs" / name) == _metrics(tmp_path / "here" / "runs" / name)
        log = (tmp_path / "pool" / "logs" / f"{name}.log").read_text().splitlines()
        assert log and all(line.startswith("warning: test_resnet: ") for line in log)
    session = json.loads((tmp_path / "pool" / "summary.json").read_text())["study"]["session"]
    assert session["runs"] == 2 and session["workers_started"] == 1
    assert session["wall_s"] >= session["jobs_s"] > 0


@pytest.mark.slow
@pytest.mark.smoke
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_killing_the_study_kills_its_worker(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, str(ROOT / "tools" / "compare_heads.py"), "test_resnet", "--heads",
           "gap", *SYNTH, "--epochs", "500", "--out", str(out)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    parent = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    runs = out / "runs"
    deadline = time.time() + 240
    owner = None
    while owner is None:
        assert parent.poll() is None and time.time() < deadline, parent.stderr.read()
        locks = list(runs.glob("*/.lock")) if runs.is_dir() else []
        text = locks[0].read_text() if locks else ""
        owner = json.loads(text) if text else None
        time.sleep(0.1)
    worker = owner["pid"]  # the lock names the process running the run
    assert worker != parent.pid and process_alive(worker)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while process_alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(worker)


@pytest.mark.slow
def test_a_run_held_by_another_process_is_reported_busy_by_the_workers(tmp_path, capsys):
    import fcntl

    out = tmp_path / "study"
    grid = ["test_resnet", "--heads", "gap", "gmp", *SYNTH, "--epochs", "1", "--robust-sizes",
            "16", "--threads", "1", "--jobs", "1", "--out", str(out)]
    held = out / "runs" / "test_resnet-gmp-synthetic-nall-s0"
    held.mkdir(parents=True)
    fd = os.open(held / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"host": "node7", "pid": 4242, "started": "then"}).encode())
    try:
        assert compare_heads.main(grid) == 1
    finally:
        os.close(fd)
    err = capsys.readouterr().err
    assert f"busy: {held.name}: left alone: run directory" in err and "pid 4242 on node7" in err
    assert [p.name for p in held.iterdir()] == [".lock"]
    assert (out / "runs" / "test_resnet-gap-synthetic-nall-s0" / "summary.json").is_file()


PROBE = ["test_resnet", "--heads", "gap", "gem", "attn", *SYNTH, "--epochs", "2", "--regime",
         "linear-probe", "--feature-cache-dtype", "float32", "--robust-sizes", "16", "--threads",
         "1"]


def _study_cache(out: Path) -> Path:
    """The study's one cache file, which every run read (none of them extracted)."""
    caches = list((out / "features").glob("*.feat"))
    assert len(caches) == 1  # built by the study before its runs, for all its heads
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 3
    for run in runs:
        cache = json.loads((run / "summary.json").read_text())["feature_cache"]
        assert cache["used"] and not cache["built"] and cache["storage"] == "disk"
        assert cache["path"] == str(caches[0])
    return caches[0]


@pytest.mark.slow
@pytest.mark.smoke
def test_a_linear_probe_study_extracts_once_and_its_worker_reads_that_cache(tmp_path, capsys):
    from analysis.features import clear_memory

    clear_memory()
    assert compare_heads.main([*PROBE, "--jobs", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shared feature extraction" in out and "1 worker process started" in out
    _study_cache(tmp_path)


@pytest.mark.slow
def test_cached_runs_in_a_worker_give_the_in_process_results(tmp_path, capsys):
    from analysis.features import clear_memory

    clear_memory()
    assert compare_heads.main([*PROBE, "--jobs", "0", "--out", str(tmp_path / "here")]) == 0
    clear_memory()
    assert compare_heads.main([*PROBE, "--jobs", "1", "--out", str(tmp_path / "pool")]) == 0
    _study_cache(tmp_path / "pool")
    for run in sorted((tmp_path / "pool" / "runs").iterdir()):
        here = _metrics(tmp_path / "here" / "runs" / run.name)  # the cache in memory
        for a, b in zip(here, _metrics(run), strict=True):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-7)
