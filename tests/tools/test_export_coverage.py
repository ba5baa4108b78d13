"""tools/export_coverage.py in-process: the report files, and resuming from the JSONL cache."""

from __future__ import annotations

import json

import export_coverage as tool

import analysis.runtime.zoo_sweep as runtime_sweep
import analysis.sweeps.export_coverage as sweep
from analysis.sweeps import export_pairs, run_order
from analysis.sweeps.export_checks import Candidate

ARGS = ["--models", "test_resnet", "test_vit", "--opset", "17", "--jobs", "1", "--no-progress"]


def test_report_and_resume(tmp_path, capsys):
    out = ["--out-dir", str(tmp_path)]
    assert tool.main([*ARGS, "--heads", "gap", "flatten", *out]) == 0
    cache = tmp_path / "export_coverage.jsonl"
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert sorted((r["model"], r["head"]) for r in rows) == [
        ("test_resnet", "flatten"), ("test_resnet", "gap"), ("test_vit", "flatten"),
        ("test_vit", "gap")]
    by = {(r["model"], r["head"]): r for r in rows}
    assert all(r["verified"] and r["exporter"] == "torchscript" for r in rows)
    assert by[("test_resnet", "gap")]["dynamic_hw"]  # verified at 160 and 128 px
    assert [v["input_size"] for v in by[("test_resnet", "gap")]["verify"]] == [[160, 160],
                                                                               [128, 128]]
    # TorchScript traces test_vit's position-embedding size as a constant: the dynamic file
    # fails at 128 px, so it is exported again with fixed sizes
    assert not by[("test_vit", "gap")]["dynamic_hw"]
    assert by[("test_vit", "gap")]["fixed_reason"].startswith(
        "the torchscript export with dynamic height and width fails at 128x128 (onnxruntime:")
    assert not by[("test_vit", "flatten")]["dynamic_hw"]
    assert by[("test_vit", "flatten")]["verify"][1]["error"].startswith("refused: ")
    report = json.loads((tmp_path / "export_coverage.json").read_text())
    assert report["summary"]["total"]["verified"] == 4
    assert report["summary"]["total"]["dynamic_hw"] == 1
    md = (tmp_path / "export_coverage.md").read_text()
    assert "**4 of 4 pairs (100.0%) export and verify** (target 95%: met)" in md
    assert "CPU time per pair (4 timed): median " in md
    assert "| test_vit       | tokens   |" in md
    fallbacks = md.split("## TorchScript fallbacks")[1].split("## Failures")[0]
    assert fallbacks.count("it writes opsets 18-23, not 17") == 4  # opset 17: TorchScript only
    assert "4/4 pairs exported and verified" in capsys.readouterr().out

    assert tool.main([*ARGS, "--heads", "gap", "flatten", *out]) == 0  # all cached: nothing new
    assert len(cache.read_text().splitlines()) == 4
    assert "computed 0 pairs" in (tmp_path / "export_coverage.md").read_text()
    assert tool.main([*ARGS, "--heads", "gap", "gmp", "flatten", *out]) == 0  # a new head only
    new = [json.loads(line) for line in cache.read_text().splitlines()[4:]]
    assert sorted((r["model"], r["head"]) for r in new) == [("test_resnet", "gmp"),
                                                            ("test_vit", "gmp")]
    md = (tmp_path / "export_coverage.md").read_text()
    assert "computed 2 pairs" in md
    invocations = json.loads((tmp_path / "export_coverage.json").read_text())["meta"]["invocations"]
    assert [v["pairs"] for v in invocations] == [4, 2]  # the invocation computing nothing is not one
    assert "--heads gap gmp flatten" in invocations[1]["command"]
    assert "The rows were computed by these invocations" in md and md.count("| `python tools/") == 2


def test_report_only_computes_nothing_and_says_partial(tmp_path):
    rows = export_pairs((Candidate("test_resnet", "NCHW", 469688, "resnet"), ("gap",), 17, 300))
    (tmp_path / "export_coverage.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert tool.main([*ARGS, "--heads", "gap", "nin", "--report-only", "--out-dir",
                      str(tmp_path)]) == 0
    assert len((tmp_path / "export_coverage.jsonl").read_text().splitlines()) == 1
    md = (tmp_path / "export_coverage.md").read_text()
    assert "**Partial: 1 of 4 pairs done; the same command resumes" in md
    assert "**1 of 1 pairs (100.0%) export and verify**" in md
    assert "**Rows so far for 1 of the 2**" in md
    assert "Architectures with a row, per head: gap 1, nin 0 (of 2)." in md
    assert "No row yet (1): test_vit." in md
    report = json.loads((tmp_path / "export_coverage.json").read_text())
    assert report["meta"]["selected"] == ["test_resnet", "test_vit"]


def test_the_time_limit_counts_cpu_seconds_not_waiting(monkeypatch):
    import time

    from analysis.sweeps.export_checks import failure_row

    def fake_rows(name, heads, opset, dynamo_budget):
        assert abs(dynamo_budget - 1 / 3) < 1e-9  # a third of the pair's CPU time
        for head in heads:
            if head == "busy":  # a CPU-bound export that goes on after an Exception, as
                end = time.process_time() + 20  # torch.onnx tries its next capture strategy
                while time.process_time() < end:
                    try:
                        sum(range(1000))
                    except Exception:  # noqa: BLE001, S110
                        pass
            if head == "waits":  # wall time without CPU time: a machine loaded by other jobs
                time.sleep(1.5)
            yield {**failure_row(name, head), "verified": True}

    monkeypatch.setattr(sweep, "coverage_rows", fake_rows)
    task = (Candidate("m", "NCHW", 1, "f"), ("waits", "busy", "quick"), 17, 1)
    rows = export_pairs(task)
    assert [(r["head"], r["verified"], r["stage"]) for r in rows] == [
        ("waits", True, None), ("busy", False, "timeout"), ("quick", True, None)]
    assert rows[1]["error"] == "no result within 1 CPU s"
    assert rows[0]["cpu_seconds"] < 1 and all(r["params"] == 1 for r in rows)


def test_run_order_takes_the_layouts_in_turn_smallest_first():
    c = [Candidate("big", "NCHW", 9, "a"), Candidate("small", "NCHW", 1, "a"),
         Candidate("mid", "NCHW", 5, "b"), Candidate("tok", "tokens", 7, "c"),
         Candidate("ncl", "NCL", 3, "d"), Candidate("tok2", "tokens", 2, "c")]
    assert [x.name for x in run_order(c)] == ["small", "tok2", "ncl", "mid", "tok", "big"]
    assert run_order([]) == []


def test_an_interrupted_run_keeps_its_rows_and_records_itself(tmp_path, monkeypatch, capsys):
    from analysis.sweeps.export_checks import failure_row

    def pool(work, tasks, jobs, **options):
        yield [{**failure_row(tasks[0][0].name, h), "verified": True} for h in tasks[0][1]]
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) while the second architecture runs

    monkeypatch.setattr(runtime_sweep, "map_unordered", pool)
    out = ["--out-dir", str(tmp_path)]
    assert tool.main([*ARGS, "--heads", "gap", *out]) == 130
    assert "interrupted: the 1 pairs computed are in" in capsys.readouterr().err
    rows = (tmp_path / "export_coverage.jsonl").read_text().splitlines()
    assert [json.loads(r)["model"] for r in rows] == ["test_resnet"]
    meta = json.loads((tmp_path / "export_coverage.json").read_text())["meta"]
    assert [(i["pairs"], i.get("note")) for i in meta["invocations"]] == [(1, "interrupted")]
    assert "1 of 2 pairs done" in (tmp_path / "export_coverage.md").read_text()
