"""tools/param_flop_table.py in-process: JSON keys, figures by hand, formats, errors."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import sys
from pathlib import Path

import pytest
import torch

import surgery

_TOOLS = Path(__file__).resolve().parents[2] / "tools"
sys.path.insert(0, str(_TOOLS))
_spec = importlib.util.spec_from_file_location("param_flop_table", _TOOLS / "param_flop_table.py")
pft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pft)
from _cli import run  # noqa: E402

KEYS = {"model", "head", "params_total", "params_head", "gmacs_total", "gmacs_head", "sizes",
        "error"}
# resnet18 at 64 px: 512 channels on a 2x2 grid, 10 classes
BACKBONE = 11_689_512 - 513_000
GAP_HEAD, FLATTEN_HEAD = 512 * 10 + 10, 512 * 4 * 10 + 10


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = pft.main([*argv, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def json_rows() -> list[dict]:
    buf = io.StringIO()
    stdout, sys.stdout = sys.stdout, buf
    try:
        code = pft.main(["resnet18", "--heads", "gap", "gmp", "flatten", "--num-classes", "10",
                         "--sizes", "64", "96", "--format", "json", "--counter", "torch",
                         "--no-progress"])
    finally:
        sys.stdout = stdout
    assert code == 0
    return json.loads(buf.getvalue())


def test_json_rows_by_hand(json_rows: list[dict]) -> None:
    assert [(r["model"], r["head"]) for r in json_rows] == [
        ("resnet18", "gap"), ("resnet18", "gmp"), ("resnet18", "flatten")]
    gap, gmp, flat = json_rows
    for row in json_rows:
        assert KEYS <= set(row) and row["error"] is None
    assert gap["params_head"] == gmp["params_head"] == GAP_HEAD
    assert gap["params_total"] == BACKBONE + GAP_HEAD
    assert flat["params_head"] == FLATTEN_HEAD
    assert gap["gmacs_head"] == gmp["gmacs_head"] == pytest.approx((512 * 4 + 5120) / 1e9)
    assert flat["gmacs_head"] == pytest.approx(512 * 4 * 10 / 1e9)
    assert gap["head_share_pct"] == pytest.approx(100 * GAP_HEAD / (BACKBONE + GAP_HEAD))
    # pooling heads take any size; flatten was built for 64 px and refuses 96 px
    assert gap["sizes"] == {"64": True, "96": True}
    assert flat["sizes"] == {"64": True, "96": False}
    assert "built for a 2x2 grid" in flat["size_errors"]["96"]


def test_heads_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "resnet18", "--heads", "gem:p=3:learn_p=0", "spp:levels=1x2",
                        "attn:num_heads=4", "token", "--num-classes", "10", "--sizes", "64",
                        "--format", "json", "--counter", "torch")
    gem, spp, attn, token = json.loads(out)
    assert code == 0 and [r["head"] for r in (gem, spp, attn)] == [
        "gem:learn_p=0", "spp:levels=1x2", "attn:num_heads=4"]
    assert gem["params_head"] == GAP_HEAD  # a frozen p is a buffer, not a parameter
    assert gem["gmacs_head"] == pytest.approx((2 * 512 * 4 + 512 + 5120) / 1e9)
    assert spp["params_head"] == 5 * 512 * 10 + 10  # levels 1 and 2: 5 bins
    assert attn["params_head"] == 4 * 512 * 512 + 5 * 512 + GAP_HEAD
    assert "resnet18 has no class token" in token["error"]  # a row that says why


def test_csv_matches_json(capsys: pytest.CaptureFixture[str], json_rows: list[dict]) -> None:
    code, out, _ = _run(capsys, "resnet18", "--heads", "gap", "gmp", "flatten", "--num-classes",
                        "10", "--sizes", "64", "96", "--format", "csv", "--counter", "torch")
    assert code == 0
    parsed = list(csv.DictReader(io.StringIO(out)))
    for row, ref in zip(parsed, json_rows, strict=True):
        assert int(row["params_total"]) == ref["params_total"]
        assert int(row["params_head"]) == ref["params_head"]
        assert float(row["gmacs_total"]) == ref["gmacs_total"]
        assert float(row["gmacs_head"]) == ref["gmacs_head"]
        assert row["sizes@96"] == ("true" if ref["sizes"]["96"] else "false")


def test_text_table_and_out_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "t.tex"
    code, out, _ = _run(capsys, "resnet18", "--heads", "flatten", "--num-classes", "10",
                        "--sizes", "64", "96", "--format", "latex", "--counter", "torch",
                        "--out", str(out_file))
    assert code == 0 and str(out_file) in out
    text = out_file.read_text()
    assert "\\begin{tabular}" in text and "20,490" in text  # 512*2*2*10 + 10
    assert "built for a 2x2 grid" in text  # why 96 px fails, in the table


def test_failing_row_does_not_stop_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "vit_tiny_patch16_224", "resnet18", "--heads", "gap",
                        "--sizes", "8", "--format", "json", "--counter", "torch")
    rows = json.loads(out)
    assert code == 0
    assert "vit_tiny_patch16_224" in rows[0]["error"] and "8x8" in rows[0]["error"]
    assert rows[1]["error"] is None and rows[1]["params_head"] == 512 * 1000 + 1000
    assert pft.main(["vit_tiny_patch16_224", "--sizes", "8", "--strict", "--no-progress",
                     "--counter", "torch", "--format", "json"]) == 1
    capsys.readouterr()


def test_the_first_size_does_not_decide_the_verdict_of_the_others(
        capsys: pytest.CaptureFixture[str]) -> None:
    verdicts = []
    for sizes in (["50", "64"], ["64", "50"]):
        code, out, _ = _run(capsys, "test_vit", "--heads", "gap", "flatten", "--sizes", *sizes,
                            "--format", "json", "--counter", "torch")
        rows = json.loads(out)
        assert code == 0 and all(r["error"] is None for r in rows)
        assert all(r["input_size"] == 64 for r in rows)  # counted at the size it runs at
        assert all("divisible by patch size" in r["size_errors"]["50"] for r in rows)
        verdicts.append([(r["head"], r["sizes"]["50"], r["sizes"]["64"]) for r in rows])
    assert verdicts[0] == verdicts[1] == [("gap", False, True), ("flatten", False, True)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_measure_on_a_missing_device_is_one_error_before_the_rows(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = run(lambda: pft.main(["test_resnet", "test_vit", "--measure", "--device", "cuda",
                                 "--no-progress"]))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "CUDA is not available on this machine; use --device cpu" in err


def test_out_onto_a_directory_is_refused_before_counting(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    code = run(lambda: pft.main(["test_resnet", "--out", str(tmp_path), "--no-progress"]))
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "is a directory; give the path of a file" in err


def test_wildcards_expand_in_order() -> None:
    names = surgery.expand_model_names(["resnet1*", "resnet18"])
    assert "resnet18" in names and names.count("resnet18") == 1
    assert all(n.startswith("resnet1") for n in names)


@pytest.mark.parametrize("argv,message", [
    (["resnet81"], "unknown model 'resnet81'; closest: resnet18"),
    (["nosuchnet*"], "no timm model matches 'nosuchnet*'"),
    (["resnet18", "--format", "docx"], "invalid choice: 'docx'"),
    (["resnet18", "--heads", "mlp"], "--heads: unknown head 'mlp'"),
    (["resnet18", "--heads", "gem:q=1"], "head 'gem' has no option 'q'"),
    (["resnet18", "--num-classes", "0"], "expected a positive integer, got '0'"),
    (["resnet18", "--sizes", "-4"], "expected a positive integer"),
])
def test_user_errors_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                     message: str) -> None:
    try:
        code = run(lambda: pft.main(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.smoke
def test_fvcore_and_measure(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "resnet18", "--heads", "gmp", "--num-classes", "10", "--sizes",
                        "64", "--measure", "--format", "json")
    row = json.loads(out)[0]
    assert code == 0 and row["error"] is None
    assert row["gmacs_head"] == pytest.approx((512 * 4 + 5120) / 1e9)  # same as the torch counter
    assert row["infer_latency_ms"] > 0 and row["train_peak_mib"] > 0
    assert row["infer_throughput"] == pytest.approx(1e3 / row["infer_latency_ms"])
