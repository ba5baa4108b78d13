"""tools/evaluate_runs.py: finished runs tested again on the whole test split and shifted
images, without training."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

from analysis.training import train
from tests.tiny_runs import quiet, tiny_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import evaluate_runs as tool  # noqa: E402
from _cli import run  # noqa: E402


def test_a_run_tested_on_a_subset_reports_the_whole_split_like_a_run_that_was_not(tmp_path, capsys):
    cut = quiet(train, tiny_config(tmp_path, name="cut", test_size=8, seed=3))
    whole = quiet(train, tiny_config(tmp_path, name="whole", seed=3))  # same training
    out = tmp_path / "report" / "again"
    assert quiet(tool.main, [str(tmp_path / "cut"), "--shifts", "0", "2", "--shift-images", "16",
                             "--sizes", "24", "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader((out.parent / "again.csv").open()))
    assert len(rows) == 1 and rows[0]["test_images"] == "32"
    assert float(rows[0]["test_acc"]) == pytest.approx(whole["test_acc"], abs=1e-9)
    assert float(rows[0]["reported_test_acc"]) == pytest.approx(cut["test_acc"])
    assert {"shift_0px", "shift_2px", "acc_24px"} <= set(rows[0])
    assert 0 <= float(rows[0]["shift_2px"]) <= 1
    md = (out.parent / "again.md").read_text()
    assert "python tools/evaluate_runs.py" in md and "| gap" in md


def test_study_directories_expand_to_their_runs_and_bad_paths_are_one_line(tmp_path, capsys):
    from analysis.studies import find_runs

    study = tmp_path / "study"
    quiet(train, tiny_config(study / "runs", name="r0"))
    assert [p.name for p in find_runs([study])] == ["r0"]
    assert run(lambda: tool.main([str(tmp_path / "nowhere")])) == 2
    assert "neither a run directory" in capsys.readouterr().err
    (study / "runs" / "r0" / "best.pt").unlink()
    assert run(lambda: tool.main([str(study / "runs" / "r0")])) == 2
    assert "no best.pt" in capsys.readouterr().err
