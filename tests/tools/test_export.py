"""tools/export.py in-process: the JSON contract, the text report, exit codes, one-line errors."""

from __future__ import annotations

import json

import export as tool
import numpy as np
import onnx
import pytest
import torch
from _cli import run

import surgery
from analysis.export import deps, onnx_session, read_metadata

TOP_KEYS = {"model", "head", "onnx", "exporter", "opset", "dynamic", "inputs", "outputs", "verify",
            "latency_ms", "file_bytes"}
ROW_KEYS = {"input_size", "ok", "max_abs_diff", "max_rel_diff", "error"}
TINY = ["test_resnet", "--input-size", "64", "--num-classes", "4"]


def _json(capsys, argv: list[str], code: int = 0) -> dict:
    assert tool.main([*argv, "--format", "json"]) == code
    return json.loads(capsys.readouterr().out)


def _error(capsys, argv: list[str]) -> str:
    assert run(lambda: tool.main(argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


@pytest.mark.slow
@pytest.mark.smoke
def test_json_contract_with_the_dynamo_exporter(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    report = _json(capsys, [*TINY, "--head", "gap", "--out", str(out), "--sizes", "48", "64",
                            "96"])
    assert set(report) == TOP_KEYS
    assert report["model"] == "test_resnet" and report["head"] == "gap"
    assert report["onnx"] == str(out) and report["file_bytes"] == out.stat().st_size
    assert report["exporter"] == {"name": "dynamo", "fallback_reason": None}
    assert report["opset"] == 18
    assert report["dynamic"] == {"mode": "auto", "axes": ["batch", "height", "width"],
                                 "fixed_reason": None}
    assert report["inputs"] == [{"name": "input", "shape": ["batch", 3, "height", "width"],
                                 "dtype": "float32"}]
    assert report["outputs"] == [{"name": "logits", "shape": ["batch", 4], "dtype": "float32"}]
    assert [r["input_size"] for r in report["verify"]] == [[48, 48], [64, 64], [96, 96]]
    assert all(set(r) == ROW_KEYS and r["ok"] and r["error"] is None for r in report["verify"])
    assert all(r["max_abs_diff"] <= 1e-4 * 1 + 1e-5 for r in report["verify"])
    lat = report["latency_ms"]
    assert set(lat) == {"torch", "onnxruntime"}
    assert all(set(lat[k]) == {"b1", "b8"} and min(lat[k].values()) > 0 for k in lat)
    session = onnx_session(out, threads=1)  # the file on disk runs at a size never verified
    y = session.run(None, {"input": np.zeros((2, 3, 72, 40), np.float32)})[0]
    assert y.shape == (2, 4)


def test_flatten_text_report_says_why_sizes_are_fixed(tmp_path, capsys):
    out = tmp_path / "f.onnx"
    assert tool.main([*TINY, "--head", "flatten", "--out", str(out), "--opset", "17",
                      "--no-bench"]) == 0
    text = capsys.readouterr().out
    assert "exporter   torchscript, opset 17 (the dynamo exporter failed: it writes opsets " \
           "18-23, not 17)" in text
    assert ("dynamic    batch; fixed because the flatten head is built for 64x64 inputs (a 2x2 "
            "feature grid)") in text
    assert "input      input: float32 [batch, 3, 64, 64]" in text
    lines = {ln.split()[0]: ln for ln in text.splitlines() if ln.startswith("  ")}
    assert lines["48x48"].split()[1] == "refused" and lines["80x80"].split()[1] == "refused"
    assert lines["64x64"].split()[1] == "ok"
    assert "latency" not in text


def test_a_dynamo_budget_too_small_falls_back_to_torchscript_and_says_so(tmp_path, capsys):
    out = tmp_path / "b.onnx"
    report = _json(capsys, [*TINY, "--head", "gap", "--out", str(out), "--no-bench",
                            "--dynamo-budget", "0.001", "--sizes", "48", "64"])
    assert report["exporter"]["name"] == "torchscript"
    assert "no result within 0.001 CPU s" in report["exporter"]["fallback_reason"]
    assert report["dynamic"]["axes"] == ["batch", "height", "width"]
    assert all(r["ok"] for r in report["verify"])
    with pytest.raises(SystemExit) as stop:  # argparse's own exit for a bad value
        tool.main([*TINY, "--head", "gap", "--out", str(out), "--dynamo-budget", "0"])
    assert stop.value.code == 2
    assert "--dynamo-budget: expected a positive number, got '0'" in capsys.readouterr().err


def test_a_head_spec_reaches_the_model_the_report_and_the_metadata(tmp_path, capsys):
    out = tmp_path / "g.onnx"
    report = _json(capsys, [*TINY, "--head", "gem:p=2:learn_p=0:hidden=8", "--out", str(out),
                            "--opset", "17", "--no-bench", "--sizes", "48", "64"])
    assert report["head"] == "gem:p=2:learn_p=0:hidden=8"
    assert [r["ok"] for r in report["verify"]] == [True, True]
    meta = read_metadata(out)
    assert meta["head"] == "gem" and meta["head_spec"] == "gem:p=2:learn_p=0:hidden=8"
    shapes = [sorted(t.dims) for t in onnx.load(str(out)).graph.initializer]
    assert [4, 8] in shapes  # the output layer after the hidden layer of 8


def test_run_directory_export_carries_class_names(tmp_path, capsys):
    model = surgery.swap_head("test_resnet", head="gmp", num_classes=2, input_size=64)
    run_dir = tmp_path / "run"
    surgery.save(model, run_dir / "best.pt")
    surgery.write_json(run_dir / "config.json", {"resolved": {
        "img_size": 64, "classes": ["no", "yes"], "mean": [0.5] * 3, "std": [0.25] * 3}})
    out = tmp_path / "run.onnx"
    report = _json(capsys, ["--model", str(run_dir), "--out", str(out), "--opset", "17",
                            "--no-bench", "--sizes", "64"])
    assert report["model"] == "test_resnet" and report["head"] == "gmp"
    assert report["verify"][0]["ok"] and report["latency_ms"] is None
    meta = read_metadata(out)
    assert meta["class_names"] == ["no", "yes"] and meta["mean"] == [0.5] * 3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = onnx_session(out).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_a_size_that_does_not_match_exits_1(tmp_path, capsys, monkeypatch):
    from analysis.export import verify

    monkeypatch.setattr(verify, "tolerance", lambda top: -1.0)  # nothing can pass
    report = _json(capsys, [*TINY, "--head", "gmp", "--out", str(tmp_path / "m.onnx"),
                            "--opset", "17", "--no-bench", "--sizes", "64"], code=1)
    assert not report["verify"][0]["ok"] and "> tolerance" in report["verify"][0]["error"]
    assert (tmp_path / "m.onnx").is_file()  # written, reported as not verified


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    weights = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, weights)
    out = ["--out", str(tmp_path / "m.onnx")]
    assert "is not a headswap model file" in _error(capsys, ["--model", str(weights), *out])
    assert "unsupported opset 99" in _error(capsys, [*TINY, "--head", "gap", *out,
                                                     "--opset", "99"])
    assert "is a file, not a directory" in _error(
        capsys, [*TINY, "--head", "gap", "--out", str(weights / "m.onnx")])
    assert "--out" in _error(capsys, [*TINY, "--head", "gap", "--out", str(tmp_path)])
    assert "either a model name" in _error(capsys, ["resnet18", "--model", str(weights), *out])
    assert "--head apply to a model name" in _error(
        capsys, ["--model", str(weights), "--head", "gap", *out])
    assert "--head is needed" in _error(capsys, ["resnet18", *out])
    assert "--dropout apply to a model name" in _error(
        capsys, ["--model", str(weights), "--dropout", "0.1", *out])
    assert "unknown head 'gem3'" in _error(capsys, [*TINY, "--head", "gem3", *out])
    assert "head 'gem' has no option 'q'" in _error(capsys, [*TINY, "--head", "gem:q=3", *out])
    assert "hidden is set both in the head spec" in _error(
        capsys, [*TINY, "--head", "flatten:hidden=8", "--hidden", "8", *out])
    assert "num_classes is set by headswap itself" in _error(
        capsys, [*TINY, "--head", "gap", "--timm-option", "num_classes=3", *out])
    assert "unknown model 'resnet81'" in _error(capsys, ["resnet81", "--head", "gap", *out])
    assert "--timm-option expects KEY=VALUE" in _error(
        capsys, [*TINY, "--head", "gap", "--timm-option", "depth", *out])
    monkeypatch.setattr(deps, "has_onnxruntime", False)
    assert "pip install -e '.[export]'" in _error(capsys, [*TINY, "--head", "gap", *out])
    assert list(tmp_path.iterdir()) == [weights]  # no .onnx, not even a partial one


def test_an_exporter_failure_is_one_line_even_at_the_file_descriptor(tmp_path, capfd):
    # opset 7: only TorchScript writes it, and it cannot export test_resnet's max pooling; its
    # C++ log (the whole IR graph) must not reach stdout or stderr
    out = tmp_path / "m.onnx"
    code = run(lambda: tool.main([*TINY, "--head", "gmp", "--out", str(out), "--opset", "7",
                                  "--format", "json"]))
    captured = capfd.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith(
        "error: dynamo exporter: it writes opsets 18-23, not 7; TorchScript exporter: ")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_pickled_object_is_named_without_unsafe_advice(tmp_path, capsys):
    path = tmp_path / "random.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole pickled module, not a headswap file
    code = run(lambda: tool.main(["--model", str(path), "--out", str(tmp_path / "m.onnx")]))
    err = capsys.readouterr().err
    assert code == 2 and "random.pt" in err and "surgery.save" in err
    assert "pickled Python objects" in err
    assert "weights_only" not in err and "will likely succeed" not in err
