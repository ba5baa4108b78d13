"""Zoo coverage: one architecture checked for real (meta device), and the summary arithmetic."""

from __future__ import annotations

import json

import zoo_coverage

from analysis.sweeps.zoo_checks import check_architecture, summarize
from analysis.sweeps.zoo_coverage_report import render_markdown
from surgery import HEADS


def test_check_architecture_on_meta():
    record = check_architecture("resnet18", num_classes=7)
    assert record["device"] == "meta"
    assert set(record["heads"]) == set(HEADS)
    token = record["heads"].pop("token")  # resnet18 has no class token: refused, with the reason
    assert not token["ok"] and "has no class token (its features are NCHW maps" in token["error"]
    assert all(r["ok"] and r["output_shape"] == [2, 7] for r in record["heads"].values())
    assert record["features"]["grid"] == [7, 7] and record["features"]["layout"] == "NCHW"


def test_unknown_architecture_is_a_recorded_failure_not_a_crash():
    record = check_architecture("not_a_model", heads=["gap"])
    assert not record["heads"]["gap"]["ok"]
    assert "unknown model 'not_a_model'" in record["heads"]["gap"]["error"]


def test_summary_counts_and_groups_failures():
    records = [
        {"model": "a", "heads": {"gap": {"ok": True}, "flatten": {"ok": True}}},
        {"model": "b", "heads": {"gap": {"ok": True}, "flatten": {"ok": False, "error": "E1"}}},
        {"model": "c", "heads": {"gap": {"ok": False, "error": "E2"},
                                 "flatten": {"ok": False, "error": "E1"}}},
    ]
    summary = summarize(records, ["gap", "flatten"])
    assert summary["per_head"]["gap"] == {"ok": 2, "total": 3, "not_applicable": 0, "percent": 66.67}
    assert summary["per_head"]["flatten"]["ok"] == 1
    text = render_markdown(summary, {"timm": "x", "torch": "y", "python": "z", "machine": "m",
                                     "command": "cmd", "seconds_this_run": 1, "num_classes": 10})
    assert "- E1: 2 (b, c)" in text and "- E2: 1 (c)" in text


def test_tool_writes_and_resumes(tmp_path, capsys):
    argv = ["--models", "resnet10t", "--heads", "gap", "gmp", "--jobs", "1", "--out-dir", str(tmp_path)]
    assert zoo_coverage.main(argv) == 0
    data = json.loads((tmp_path / "zoo_coverage.json").read_text())
    assert data["summary"]["per_head"]["gmp"] == {"ok": 1, "total": 1, "not_applicable": 0,
                                                  "percent": 100.0}
    assert "| gmp" in (tmp_path / "zoo_coverage.md").read_text()
    assert zoo_coverage.main(argv) == 0  # resumes: nothing left to run, same report
    assert len((tmp_path / "zoo_coverage.jsonl").read_text().splitlines()) == 1


def test_encoders_without_a_classifier_are_not_applicable_for_original():
    error = "ValueError: x_enc has no classifier of its own (timm builds it as a feature encoder)"
    records = [{"model": "x_enc", "heads": {"original": {"ok": False, "error": error}}},
               {"model": "y", "heads": {"original": {"ok": True}}}]
    summary = summarize(records, ["original"])
    assert summary["per_head"]["original"] == {"ok": 1, "total": 2, "not_applicable": 1,
                                               "percent": 100.0}
    assert summary["failures"]["original"] == []


def test_models_without_a_class_token_are_not_applicable_for_token_with_the_reason():
    record = check_architecture("vit_little_patch16_reg4_gap_256", heads=["token", "gem"])
    summary = summarize([record, check_architecture("deit_tiny_patch16_224", heads=["token"])],
                        ["token"])
    assert summary["per_head"]["token"] == {"ok": 1, "total": 2, "not_applicable": 1,
                                            "percent": 100.0}
    assert record["heads"]["gem"]["ok"]
    text = render_markdown(summary, {"timm": "x", "torch": "y", "python": "z", "machine": "m",
                                     "command": "cmd", "seconds_this_run": 1, "num_classes": 10})
    assert ("- token: 1 architectures\n  - no class token (its 4 prefix tokens (register or "
            "distillation) without a cls_token)") in text
    assert "vit_little_patch16_reg4_gap_256" in text.split("## Not applicable")[1]


def test_timm_max_check_reports_what_timm_does():
    from analysis.sweeps.zoo_checks import check_timm_max

    assert check_timm_max("resnet18")["ok"]
    refused = check_timm_max("levit_128s")  # timm 1.0.x: 'Only avg pooling (or none) is supported'
    assert not refused["ok"] and "pooling" in refused["error"]


def test_a_new_head_kind_is_checked_on_its_own_and_merged(tmp_path):
    argv = ["--models", "resnet10t", "--jobs", "1", "--out-dir", str(tmp_path)]
    assert zoo_coverage.main([*argv, "--heads", "gap"]) == 0
    assert zoo_coverage.main([*argv, "--heads", "gap", "gem", "token"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "zoo_coverage.jsonl").read_text().splitlines()]
    assert list(lines[0]["heads"]) == ["gap"]
    assert list(lines[1]["heads"]) == ["gap", "gem", "token"]  # the first result kept, two added
    summary = json.loads((tmp_path / "zoo_coverage.json").read_text())["summary"]["per_head"]
    assert summary["gem"]["ok"] == 1 and summary["token"]["not_applicable"] == 1


def test_heads_an_interrupted_sweep_has_not_checked_are_neither_working_nor_failing():
    records = [{"model": "a", "heads": {"gap": {"ok": True}, "gem": {"ok": True}}},
               {"model": "b", "heads": {"gap": {"ok": True}}}]  # gem not checked yet on b
    summary = summarize(records, ["gap", "gem"])
    assert summary["per_head"]["gem"] == {"ok": 1, "total": 2, "not_applicable": 0,
                                          "percent": 100.0, "not_checked": 1}
    assert summary["failures"]["gem"] == []
    text = render_markdown(summary, {"timm": "x", "torch": "y", "python": "z", "machine": "m",
                                     "command": "cmd", "seconds_this_run": 1, "num_classes": 10})
    assert "**Sweep in progress**: not checked yet: gem on 1 architectures" in text
    assert "| gem    |         1 |                0 |         0 |" in text


def test_report_only_writes_the_report_of_an_interrupted_sweep(tmp_path):
    argv = ["--models", "resnet10t", "--jobs", "1", "--out-dir", str(tmp_path)]
    assert zoo_coverage.main([*argv, "--heads", "gap"]) == 0
    assert zoo_coverage.main([*argv, "--heads", "gap", "gem", "--report-only"]) == 0
    assert len((tmp_path / "zoo_coverage.jsonl").read_text().splitlines()) == 1  # nothing run
    assert "not checked yet: gem on 1 architectures" in (tmp_path / "zoo_coverage.md").read_text()
