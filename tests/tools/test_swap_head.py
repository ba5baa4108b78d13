"""tools/swap_head.py in-process: the text report, the JSON contract, errors and --save."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import swap_head as tool
import torch
from _cli import run

from surgery import load, swap_head, swap_report

ROOT = Path(__file__).resolve().parents[2]


def test_json_contract(capsys):
    assert tool.main(["resnet18", "--head", "flatten", "--num-classes", "10", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "resnet18" and report["head"] == "flatten"
    assert report["num_classes"] == 10
    assert report["removed"].startswith("fc: Linear(in_features=512, out_features=1000")
    assert report["params"]["head"] == 512 * 7 * 7 * 10 + 10
    assert report["params"]["backbone"] == 11_689_512 - 513_000  # resnet18 minus its classifier
    assert report["params"]["total"] == 11_176_512 + 250_890
    by_size = {s["input_size"][0]: s for s in report["sizes"]}
    assert by_size[224]["ok"] and by_size[224]["output_shape"] == [1, 10]
    assert not by_size[160]["ok"] and "built for a 7x7 grid" in by_size[160]["error"]
    assert not by_size[288]["ok"]


def _readme_example() -> tuple[list[str], str]:
    """The command the README shows for this tool, and the output it shows for it."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^\$ python tools/swap_head\.py ([^\n]*)\n(.*?)^```", text, re.M | re.S)
    assert match, "README shows a swap_head.py example"
    return match.group(1).split(), match.group(2)


def test_text_report_is_what_the_readme_shows(capsys):
    argv, shown = _readme_example()
    assert tool.main(argv) == 0
    assert capsys.readouterr().out == shown


def test_text_report_for_a_head_with_hidden_layers(capsys):
    assert tool.main(["resnet18", "--head", "gmp", "--hidden", "64", "--dropout", "0.5"]) == 0
    out = capsys.readouterr().out
    params = re.search(r"backbone ([\d,]+) \| head ([\d,]+) \| total ([\d,]+)", out)
    assert params, out
    backbone, head, total = (int(g.replace(",", "")) for g in params.groups())
    assert head == (512 * 64 + 64) + (64 * 10 + 10)  # Linear 512 -> 64, Linear 64 -> 10
    assert backbone == 11_689_512 - 513_000 and total == backbone + head
    sizes = re.findall(r"^\s+(\d+)x\1\s+(.*)$", out, re.M)
    assert [s for s, _ in sizes] == ["224", "160", "288"]  # built size, ~0.75x, ~1.25x
    assert all("(1, 10)" in result and "refuses" not in result for _, result in sizes)


def test_save_writes_a_loadable_model(tmp_path, capsys):
    path = tmp_path / "gmp.pt"
    assert tool.main(["resnet18", "--head", "gmp", "--input-size", "64", "--save", str(path)]) == 0
    model = load(path)
    assert model.recipe["head"] == "gmp" and model(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_user_errors_are_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "swap_head.py"), "resnet81"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "unknown model 'resnet81'; closest:" in proc.stderr


def test_timm_options_reach_the_backbone(capsys):
    argv = ["vit_tiny_patch16_224", "--head", "gap", "--timm-option", "dynamic_img_size=True",
            "--timm-option", "depth=1", "--sizes", "224", "160", "--format", "json"]
    assert tool.main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["ok"] for s in report["sizes"]] == [True, True]  # fixed-size ViT would refuse 160


def test_bad_timm_option_is_a_user_error():
    with pytest.raises(ValueError, match="--timm-option expects KEY=VALUE"):
        tool.main(["resnet18", "--timm-option", "depth"])


@pytest.mark.parametrize("head, spec, head_params", [
    ("gem:p=3:learn_p=0", "gem:learn_p=0", 512 * 10 + 10),
    ("gem", "gem", 512 * 10 + 10 + 1),  # the learned exponent
    ("attn:num_heads=4", "attn:num_heads=4", 4 * 512 * 512 + 5 * 512 + 512 * 10 + 10),
    ("spp", "spp", 21 * 512 * 10 + 10),
])
def test_every_new_head_gets_the_usual_report(capsys, head, spec, head_params):
    assert tool.main(["resnet18", "--head", head, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["head_spec"] == spec and report["params"]["head"] == head_params
    assert all(s["ok"] for s in report["sizes"])  # 224, 160 and 288: grids of 4x4 and more


def test_token_head_report_and_refusal(capsys):
    argv = ["vit_tiny_patch16_224", "--head", "token", "--timm-option", "depth=1"]
    assert tool.main([*argv, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"]["head"] == 192 * 10 + 10 and report["features"]["num_prefix_tokens"] == 1
    with pytest.raises(ValueError, match="resnet18 has no class token"):
        tool.main(["resnet18", "--head", "token"])


def test_a_spec_and_a_flag_for_the_same_option_are_refused():
    with pytest.raises(ValueError, match="ambiguous"):
        tool.main(["resnet18", "--head", "gap:dropout=0.5", "--dropout", "0.2"])


def _error_of(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = run(lambda: tool.main(argv))
    except SystemExit as exit_:  # argparse errors
        code = exit_.code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return code, err


@pytest.mark.parametrize("option, instead", [
    ("num_classes=5", "use --num-classes"), ("pretrained=True", "use --pretrained"),
    ("in_chans=1", "use --in-chans"), ("checkpoint_path=w.pth", "use --checkpoint FILE"),
    ("head=gmp", "use --head"),
])
def test_timm_options_that_headswap_sets_are_refused_by_name(option, instead, capsys):
    code, err = _error_of(["test_resnet", "--timm-option", option], capsys)
    key = option.split("=")[0]
    assert code == 2 and f"{key} is set by headswap itself; {instead}" in err


@pytest.mark.parametrize("flag", ["--sizes", "--input-size", "--num-classes", "--in-chans"])
def test_zero_sizes_and_counts_are_invalid_not_refused_by_the_backbone(flag, capsys):
    code, err = _error_of(["test_resnet", flag, "0"], capsys)
    assert code == 2 and f"argument {flag}: expected a positive integer, got '0'" in err


def test_swap_report_refuses_an_invalid_size():
    model = swap_head("test_resnet", head="gap", num_classes=2)
    with pytest.raises(ValueError, match="input size 0 is not valid"):
        swap_report(model, [64, 0])


def test_save_where_it_cannot_go_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for target, expect in ((tmp_path, "is a directory; give the path of a file"),
                           (tmp_path / "file" / "m.pt", "is a file, not a directory")):
        code, err = _error_of(["test_resnet", "--save", str(target)], capsys)
        assert code == 2 and expect in err

