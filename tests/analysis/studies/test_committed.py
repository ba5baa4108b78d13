"""A study's claims from its committed tables when its run directories are not in the checkout."""

from __future__ import annotations

import json

import pytest

from analysis.studies import StudySpec, claim_rows, study_records
from surgery import parse_head

CSV = ("model,head,train_size,seed,test_acc,train_acc,head_params,epoch_time_s,peak_mem_mb,"
       "checkpoint_mb,run_dir,train_test_gap\n")


def _study(tmp_path, with_shifts=True):
    spec = StudySpec(("m",), (parse_head("gap"), parse_head("flatten")), (0, 1), (50,),
                     {"dataset": "synthetic", "regime": "full"})
    (tmp_path / "study.json").write_text(json.dumps(spec.to_dict()))
    rows = [("gap", 0, 0.80, 0.82, 10, "r/m-gap-s0"), ("gap", 1, 0.78, 0.81, 10, "r/m-gap-s1"),
            ("flatten", 0, 0.90, 0.99, 40, "r/m-flatten-s0"),
            ("flatten", 1, 0.88, 0.98, 40, "r/m-flatten-s1")]
    (tmp_path / "runs.csv").write_text(CSV + "".join(
        f"m,{h},50,{s},{t},{tr},{p},0.1,100,1.5,{d},{tr - t}\n" for h, s, t, tr, p, d in rows))
    if with_shifts:  # tools/evaluate_runs.py's table: accuracy at each shift, per run
        (tmp_path / "full_test.csv").write_text(
            "run,model,head,train_size,seed,shift_0px,shift_8px\n"
            "m-gap-s0,m,gap,50,0,0.8,0.7\nm-gap-s1,m,gap,50,1,0.78,0.69\n"
            "m-flatten-s0,m,flatten,50,0,0.9,0.4\nm-flatten-s1,m,flatten,50,1,0.88,0.45\n")
    (tmp_path / "robustness.json").write_text(json.dumps([
        {"model": "m", "head": h, "train_size": 50, "img_size": 84, "trained_at": 56,
         "ok": ok, "refused": 2 - ok, "failed": 0} for h, ok in (("gap", 2), ("flatten", 0))]))
    return spec


def test_claims_come_from_the_committed_tables_without_run_directories(tmp_path):
    _study(tmp_path)
    spec, records = study_records(tmp_path)
    assert len(records) == 4 and {r["head_label"] for r in records} == {"gap", "flatten"}
    rows = {r["claim"].split(":")[0]: r for r in claim_rows(records)}
    gap = rows["less overfitting on small data"]
    assert gap["better_mean"] == pytest.approx(100 * (0.02 + 0.03) / 2)
    assert gap["other_mean"] == pytest.approx(100 * (0.09 + 0.10) / 2)
    where = rows["loses 'where'"]  # shift 8 costs gap 10 and 9 points, flatten 50 and 43
    assert where["better_mean"] == pytest.approx(9.5) and where["other_mean"] == pytest.approx(46.5)
    assert rows["any input size"]["better_mean"] == 100.0 and rows["any input size"]["other_mean"] == 0.0


def test_a_study_without_shift_tables_measures_what_it_can(tmp_path):
    _study(tmp_path, with_shifts=False)
    _, records = study_records(tmp_path)
    claims = {r["claim"].split(":")[0] for r in claim_rows(records)}
    assert "loses 'where'" not in claims and "no parameters" in claims
