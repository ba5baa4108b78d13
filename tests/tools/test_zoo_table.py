"""tools/zoo_table.py in-process on a few models: figures, resume, report files."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import surgery
from analysis import count_flops

_TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(_TOOLS))
_spec = importlib.util.spec_from_file_location("zoo_table", _TOOLS / "zoo_table.py")
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)
from _cli import run  # noqa: E402


def test_row_by_hand() -> None:
    row = zoo.zoo_row("resnet18")
    backbone = 11_689_512 - 513_000
    assert row["error"] is None and row["input"] == "224x224" and row["features"] == "512x7x7"
    assert row["params_backbone"] == backbone
    assert row["params_gap"] == row["params_gmp"] == backbone + 512 * 1000 + 1000
    assert row["params_flatten"] == backbone + 512 * 49 * 1000 + 1000
    assert row["gmacs_gap"] == row["gmacs_gmp"]  # pooling costs the same
    assert row["gmacs_gap"] - row["gmacs_backbone"] == pytest.approx((512 * 49 + 512_000) / 1e9)
    assert row["gmacs_flatten"] - row["gmacs_backbone"] == pytest.approx(512 * 49 * 1000 / 1e9)
    assert row["gmacs_gap"] == pytest.approx(1.82, rel=0.01)


def test_run_resume_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache.jsonl"
    argv = ["--models", "resnet18", "mobilenetv3_small_050", "--jobs", "1", "--cache",
            str(cache), "--out-dir", str(tmp_path), "--no-progress"]
    assert zoo.main(argv) == 0
    assert len(cache.read_text().splitlines()) == 2
    assert zoo.main(argv) == 0  # resumed: nothing recounted, nothing appended
    assert len(cache.read_text().splitlines()) == 2
    assert "0 counted now" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "zoo_table.csv").open()))
    assert [r["model"] for r in rows] == ["mobilenetv3_small_050", "resnet18"]
    cached = {json.loads(line)["model"]: json.loads(line) for line in cache.open()}
    assert float(rows[1]["gmacs_flatten"]) == cached["resnet18"]["gmacs_flatten"]
    report = (tmp_path / "zoo_table.md").read_text()
    assert "timm 1." in report and "GMACs" in report and "| resnet18" in report


def test_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert run(lambda: zoo.main(["--models", "nosuchnet*", "--out-dir", str(tmp_path)])) == 2
    assert "no timm model matches 'nosuchnet*'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        zoo.main(["--heads", "mlp"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "pit_ti_224", "mobilenetv3_small_050"])
def test_single_pass_count_equals_count_flops(name: str) -> None:
    """The backbone counted during swap_head's probe (or, for PiT, separately) is what
    count_flops says for the swapped model."""
    with torch.device("meta"):
        model = surgery.swap_head(name, head="gap", num_classes=1000)
    expected = count_flops(model, (3, *model.features.input_size), counter="torch")
    assert zoo.zoo_row(name)["gmacs_backbone"] == expected["backbone"] / 1e9
