"""tools/finetune.py and its run directory: --overwrite, --name, --resume with other options, an
unreadable last.pt, and two processes on one run directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import finetune  # noqa: E402
from _cli import run  # noqa: E402

from analysis.training import TrainConfig, train  # noqa: E402
from tests.tiny_runs import TINY_ARGS as TINY  # noqa: E402


class _Stop(Exception):
    pass


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """A run stopped in epoch 2 after step 5; its last.pt is at epoch 2, step 3 of 8."""
    out = tmp_path_factory.mktemp("cut")
    args = finetune.build_parser().parse_args(TINY + ["--ckpt-steps", "3", "--out", str(out),
                                                      "--name", "cut"])

    def stop(ctx):
        if ctx["global_step"] == 12:
            raise _Stop

    with pytest.raises(_Stop), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(finetune.config_from_args(args), on_step=stop)
    return out / "cut"


@pytest.fixture
def cut(interrupted, tmp_path) -> Path:
    run_dir = tmp_path / "cut"
    shutil.copytree(interrupted, run_dir)
    return run_dir


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


def test_overwrite_with_bad_data_keeps_the_old_run(tmp_path, capsys):
    argv = TINY + ["--epochs", "1", "--out", str(tmp_path), "--name", "ow"]
    assert run(lambda: finetune.main(argv)) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "ow").iterdir()}
    capsys.readouterr()
    assert run(lambda: finetune.main(argv + ["--overwrite", "--train-size", "100000"])) == 2
    assert "larger than the data" in _error_lines(capsys)[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "ow").iterdir()} == before


def test_a_name_with_a_path_is_refused(tmp_path, capsys):
    out = tmp_path / "a" / "b"
    assert run(lambda: finetune.main(TINY + ["--out", str(out), "--name", "../../escape"])) == 2
    (line,) = _error_lines(capsys)
    assert "'../../escape'" in line and "single directory name" in line
    assert not list(tmp_path.rglob("*.json"))


def test_resume_refuses_options_that_differ_from_the_run(cut, capsys):
    before = (cut / "last.pt").read_bytes()
    code = run(lambda: finetune.main(["--resume", str(cut), "--epochs", "3", "--lr", "0.5",
                                      "--no-progress"]))
    (line,) = _error_lines(capsys)
    assert code == 2 and "epochs 2 -> 3" in line and "lr 0.01 -> 0.5" in line
    assert (cut / "last.pt").read_bytes() == before and not (cut / "summary.json").exists()
    assert run(lambda: finetune.main(["--resume", str(cut), "resnet18"])) == 2
    assert "model 'test_resnet' -> 'resnet18'" in _error_lines(capsys)[0]
    assert run(lambda: finetune.main(["--resume", str(cut), "--name", "x"])) == 2
    assert "--name" in _error_lines(capsys)[0]


def test_resume_with_the_same_options_says_where_it_resumes(cut, capsys):
    assert finetune.main(["--resume", str(cut), "--epochs", "2", "--lr", "0.01",
                          "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"resuming {cut} in epoch 2/2 after step 3/8" in out
    assert (cut / "summary.json").is_file()
    assert finetune.main(["--resume", str(cut)]) == 0
    assert "already finished" in capsys.readouterr().out


def test_resume_with_a_truncated_last_checkpoint_points_to_best(cut, capsys):
    last = cut / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert run(lambda: finetune.main(["--resume", str(cut)])) == 2
    (line,) = _error_lines(capsys)
    assert "last.pt" in line and "best.pt is intact (epoch 1" in line and "--overwrite" in line


def _cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen([sys.executable, str(ROOT / "tools" / "finetune.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_two_processes_on_one_run_directory(tmp_path):
    opts = [*TINY, "--epochs", "6", "--out", str(tmp_path), "--name", "same"]
    first = _cli(*opts, "--seed", "1")
    deadline = time.time() + 300
    while not (tmp_path / "same" / ".lock").exists() and first.poll() is None:
        assert time.time() < deadline
        time.sleep(0.05)
    second = _cli(*opts, "--seed", "2")
    out2, err2 = second.communicate(timeout=300)
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and "error:" in err2
    assert f"in use by pid {first.pid}" in err2 or "already holds a run" in err2
    config = json.loads((tmp_path / "same" / "config.json").read_text())["config"]
    summary = json.loads((tmp_path / "same" / "summary.json").read_text())
    assert config["seed"] == summary["seed"] == 1
    assert TrainConfig.from_dict(config).epochs == 6
