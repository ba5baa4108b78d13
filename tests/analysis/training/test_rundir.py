"""The run directory belongs to one run: --overwrite replaces an old run only once the new one
trains, a lock keeps a second process out, names stay inside --out, a run that never trained
leaves nothing behind, and peak memory is each run's own."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from analysis.training import TrainConfig, train
from analysis.training import step as step_mod
from tests.tiny_runs import quiet, tiny_config

ROOT = Path(__file__).resolve().parents[3]
TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}


def tiny(out: Path, **kw) -> TrainConfig:
    """test_resnet on 4 generated classes, 64 train / 32 val images at 16 px: 8 steps an epoch."""
    return tiny_config(out, **kw)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())}


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    quiet(train, tiny(out, name="done"))
    return out / "done"


@pytest.fixture
def old_run(finished, tmp_path) -> Path:
    """A copy of a finished run, as a study leaves it (with its robustness evaluation)."""
    run_dir = tmp_path / "ow"
    shutil.copytree(finished, run_dir)
    (run_dir / "robustness.json").write_text("[]")
    return run_dir


# 1. --overwrite


@pytest.mark.parametrize("bad", [dict(train_size=100000),     # a data error
                                 dict(label_smoothing=1.5)])  # fails in (or before) the first step
def test_overwrite_keeps_the_old_run_when_the_new_one_fails_before_training(old_run, bad):
    before = _files(old_run)
    with pytest.raises((ValueError, RuntimeError)):
        quiet(train, tiny(old_run.parent, name="ow", overwrite=True, **bad))
    assert _files(old_run) == before


def test_overwrite_replaces_the_whole_old_run_once_training_started(old_run):
    seen: dict[str, list[str]] = {}

    def first_step(ctx):
        if ctx["global_step"] == 0:
            seen["files"] = sorted(p.name for p in old_run.iterdir() if p.name != ".lock")

    summary = quiet(train, tiny(old_run.parent, name="ow", overwrite=True, seed=1),
                     on_step=first_step)
    assert seen["files"] == ["config.json"]  # the old run went when the new one had trained
    config = json.loads((old_run / "config.json").read_text())["config"]
    assert config["seed"] == 1 and summary["seed"] == 1
    assert not (old_run / "robustness.json").exists()  # no evaluation of the old model is left


# 17. a run that fails before it trained leaves nothing


class _Boom(Exception):
    pass


def _boom_at(step: int):
    def hook(ctx):
        if ctx["global_step"] == step:
            raise _Boom

    return hook


def test_a_run_that_fails_in_its_first_step_leaves_nothing(tmp_path, monkeypatch):
    with pytest.raises((ValueError, RuntimeError)):
        quiet(train, tiny(tmp_path, name="ls", label_smoothing=1.5))
    assert not (tmp_path / "ls").exists()

    def oom(self, *a, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(step_mod.TrainStep, "__call__", oom)
    with pytest.raises(RuntimeError, match="out of memory"):
        quiet(train, tiny(tmp_path, name="oom"))
    assert list(tmp_path.iterdir()) == []


def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path):
    with pytest.raises(_Boom):
        quiet(train, tiny(tmp_path, name="early"), on_step=_boom_at(3))
    assert not (tmp_path / "early").exists()
    quiet(train, tiny(tmp_path, name="early"))  # the name is free: no --overwrite needed
    assert (tmp_path / "early" / "summary.json").is_file()


def test_resume_of_a_config_that_never_trained_names_the_bad_value(tmp_path):
    run_dir = tmp_path / "inf"
    run_dir.mkdir()
    config = asdict(tiny(tmp_path))
    config["lr"] = None  # how --lr inf reached config.json (JSON has no inf)
    (run_dir / "config.json").write_text(json.dumps({"config": config}))
    with pytest.raises(ValueError, match="lr"):
        train(resume=run_dir)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(finished, tmp_path):
    run_dir = tmp_path / "lone"
    run_dir.mkdir()
    shutil.copy(finished / "config.json", run_dir / "config.json")
    summary = quiet(train, resume=run_dir)
    assert _metrics(run_dir) == _metrics(finished)
    assert summary["test_acc"] == json.loads((finished / "summary.json").read_text())["test_acc"]


# 3. names


@pytest.mark.parametrize("name", ["../../escape", "a/b", "..", ".", "/abs"])
def test_run_names_are_single_path_components(tmp_path, name):
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(ValueError, match="single directory name"):
        quiet(train, tiny(out, name=name))
    assert not list(tmp_path.rglob("config.json"))


# 2. one process per run directory


def _hold_lock(run_dir: Path, owner: dict) -> int:
    """Take the run's lock as another process would, recording ``owner``; returns the fd."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps(owner).encode())
    return fd


OTHER = {"host": "node7", "pid": 4242, "started": "2030-01-01T10:00:00", "slurm_job_id": "99"}


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_directory_in_use_is_refused_naming_its_owner(tmp_path, overwrite):
    fd = _hold_lock(tmp_path / "busy", OTHER)
    try:
        with pytest.raises(ValueError, match=r"in use by pid 4242 on node7 .*Slurm job 99"):
            quiet(train, tiny(tmp_path, name="busy", overwrite=overwrite))
    finally:
        os.close(fd)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == [".lock"]  # untouched
    quiet(train, tiny(tmp_path, name="busy"))  # free again once its owner let go
    assert not (tmp_path / "busy" / ".lock").exists()


def test_resume_of_a_run_in_use_is_refused(finished, tmp_path):
    run_dir = tmp_path / "r"
    shutil.copytree(finished, run_dir)
    (run_dir / "summary.json").unlink()
    fd = _hold_lock(run_dir, OTHER)
    try:
        with pytest.raises(ValueError, match="in use by pid 4242"):
            quiet(train, resume=run_dir)
    finally:
        os.close(fd)


def test_a_lock_whose_owner_died_on_this_host_is_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    owner = dict(OTHER, host=socket.gethostname(), pid=gone.pid)
    fd = _hold_lock(tmp_path / "stale", owner)  # still held, e.g. by a child that inherited it
    try:
        quiet(train, tiny(tmp_path, name="stale"))
    finally:
        os.close(fd)
    assert (tmp_path / "stale" / "summary.json").is_file()


def test_the_lock_records_host_pid_start_and_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    seen = {}

    def read_lock(ctx):
        seen.setdefault("owner", json.loads((tmp_path / "r" / ".lock").read_text()))

    quiet(train, tiny(tmp_path, name="r"), on_step=read_lock)
    owner = seen["owner"]
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert owner["slurm_job_id"] == "1234" and owner["started"]
    assert not (tmp_path / "r" / ".lock").exists()  # released with the run


# peak memory: each run its own


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="Linux only")
def test_peak_memory_is_the_runs_own_not_the_processs(tmp_path):
    first = quiet(train, tiny(tmp_path, name="a"))
    spike = torch.ones(400 * 2**20 // 4)  # 400 MiB touched, then freed
    del spike
    second = quiet(train, tiny(tmp_path, name="b"))
    assert second["peak_mem_mb"] < first["peak_mem_mb"] + 200


# progress to a file or pipe


def test_progress_to_a_file_is_one_line_per_epoch(tmp_path, capsys):
    quiet(train, tiny(tmp_path, name="p", epochs=2, progress=True))
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch")]
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2: 8/8 steps")
