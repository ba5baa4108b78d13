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
from analysis.sweeps import zoo_row

_TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(_TOOLS))
_spec = importlib.util.spec_from_file_location("zoo_table", _TOOLS / "zoo_table.py")
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)
from _cli import run  # noqa: E402


def test_row_by_hand() -> None:
    row = zoo_row("resnet18")
    backbone = 11_689_512 - 513_000
    assert row["error"] is None and row["input"] == "224x224" and row["features"] == "512x7x7"
    assert row["params_backbone"] == backbone
    assert row["params_gap"] == row["params_gmp"] == backbone + 512 * 1000 + 1000
    assert row["params_flatten"] == backbone + 512 * 49 * 1000 + 1000
    assert row["gmacs_gap"] == row["gmacs_gmp"]  # pooling costs the same
    assert row["gmacs_gap"] - row["gmacs_backbone"] == pytest.approx((512 * 49 + 512_000) / 1e9)
    assert row["gmacs_flatten"] - row["gmacs_backbone"] == pytest.approx(512 * 49 * 1000 / 1e9)
    assert row["gmacs_gap"] == pytest.approx(1.82, rel=0.01)
    c, p, k = 512, 49, 1000
    assert row["params_gem"] == backbone + c * k + k + 1  # + the exponent p
    assert row["gmacs_gem"] - row["gmacs_backbone"] == pytest.approx((2 * c * p + c + c * k) / 1e9)
    assert row["params_attn"] == backbone + 4 * c * c + 5 * c + c * k + k
    assert row["gmacs_attn"] - row["gmacs_backbone"] == pytest.approx(
        (4 * c * c + c + 2 * 8 * p * c + c * k) / 1e9)  # 8 heads: the query folded into keys
    assert row["params_spp"] == backbone + 21 * c * k + k
    assert row["gmacs_spp"] - row["gmacs_backbone"] == pytest.approx((213 * c + 21 * c * k) / 1e9)
    assert row["params_token"] is None and row["gmacs_token"] is None  # no class token


def test_token_row_takes_the_class_token_and_the_models_own_post_pool_norm() -> None:
    row = zoo_row("beit_base_patch16_224", heads=("gap", "token"))
    c, k = 768, 1000
    assert row["params_token"] - row["params_backbone"] == c * k + k + 2 * c  # fc + fc_norm
    # the class token costs nothing to select; fc_norm over C features: 5 MACs each
    assert row["gmacs_token"] - row["gmacs_backbone"] == pytest.approx((c * k + 5 * c) / 1e9)


def test_heads_with_options_get_their_own_columns(tmp_path: Path) -> None:
    argv = ["--models", "resnet18", "--heads", "gap", "gem:p=2", "spp:levels=1x2",
            "--jobs", "1", "--cache", str(tmp_path / "c.jsonl"), "--out-dir", str(tmp_path),
            "--no-progress"]
    assert zoo.main(argv) == 0
    row = next(csv.DictReader((tmp_path / "zoo_table.csv").open()))
    assert {"gmacs_gem-p2", "params_spp-levels1x2"} <= set(row)
    assert int(row["params_spp-levels1x2"]) == 11_689_512 - 513_000 + 5 * 512 * 1000 + 1000


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
    assert run(lambda: zoo.main(["--heads", "mlp", "--models", "resnet18"])) == 2
    assert "unknown head 'mlp'" in capsys.readouterr().err
    assert run(lambda: zoo.main(["--heads", "original", "--models", "resnet18"])) == 2
    assert "the original head has no features-only cost" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "pit_ti_224", "mobilenetv3_small_050"])
def test_single_pass_count_equals_count_flops(name: str) -> None:
    """The backbone counted during swap_head's probe (or, for PiT, separately) is what
    count_flops says for the swapped model."""
    with torch.device("meta"):
        model = surgery.swap_head(name, head="gap", num_classes=1000)
    expected = count_flops(model, (3, *model.features.input_size), counter="torch")
    assert zoo_row(name)["gmacs_backbone"] == expected["backbone"] / 1e9
