"""analysis.studies.aggregate on hand-made run records: mean, std, the gap, pairing, robustness rows."""

from __future__ import annotations

import math
import re

import pytest

from analysis.studies import aggregate as agg


def _rec(head: str, seed: int, test: float, train: float, size: int = 1000, **extra) -> dict:
    return {"model": "m", "head": head.split("-")[0], "head_label": head, "train_size": size,
            "seed": seed, "test_acc": test, "train_acc": train, "params": 1000 + len(head),
            "head_params": 10 * len(head), "gmacs": 0.5, "epoch_time_s": 2.0 + seed,
            "peak_mem_mb": 100.0 + seed, **extra}


def test_mean_std_against_hand_values():
    mean, std = agg.mean_std([0.8, 0.9, 1.0])
    assert mean == pytest.approx(0.9)
    assert std == pytest.approx(0.1)  # sample std: sqrt((0.01 + 0 + 0.01) / 2)
    assert agg.mean_std([0.7]) == (0.7, None)  # one seed: std undefined, not 0
    assert agg.mean_std([]) == (None, None)
    assert agg.mean_std([None, 1.0, float("nan"), 3.0]) == (2.0, pytest.approx(math.sqrt(2)))


def test_gap_is_train_minus_test():
    assert agg.generalisation_gap({"train_acc": 0.95, "test_acc": 0.80}) == pytest.approx(0.15)
    assert agg.generalisation_gap({"train_acc": 0.95}) is None


def test_group_rows_per_model_head_size_with_spread():
    records = [_rec("gap", 0, 0.80, 0.90), _rec("gap", 1, 0.84, 0.92),
               _rec("gmp", 0, 0.78, 0.95), _rec("gmp", 1, 0.76, 0.97),
               _rec("gap", 0, 0.70, 0.99, size=100)]
    rows = agg.group_rows(records)
    assert [(r["head"], r["train_size"], r["seeds"]) for r in rows] == [
        ("gap", 1000, 2), ("gmp", 1000, 2), ("gap", 100, 1)]
    gap, gmp, small = rows
    assert gap["test_acc_mean"] == pytest.approx(0.82)
    assert gap["test_acc_std"] == pytest.approx(math.sqrt(2 * 0.02**2))
    # gaps 0.10 and 0.08 -> mean 0.09, std sqrt(2 * 0.01^2)
    assert gap["train_test_gap_mean"] == pytest.approx(0.09)
    assert gap["train_test_gap_std"] == pytest.approx(math.sqrt(2) * 0.01)
    assert gmp["train_test_gap_mean"] == pytest.approx((0.17 + 0.21) / 2)
    assert gmp["epoch_time_s_mean"] == pytest.approx(2.5) and gmp["seed_list"] == [0, 1]
    assert gap["head_params"] == 30 and gmp["params"] == 1003
    assert small["test_acc_std"] is None and small["train_test_gap_mean"] == pytest.approx(0.29)


def test_paired_differences_pair_by_seed():
    records = [_rec("gap", 0, 0.80, 0.9), _rec("gap", 1, 0.84, 0.9), _rec("gap", 2, 0.82, 0.9),
               _rec("gmp", 0, 0.79, 0.9), _rec("gmp", 1, 0.85, 0.9), _rec("gmp", 2, 0.80, 0.9),
               _rec("gmp", 3, 0.99, 0.9)]  # seed 3 has no gap partner: not paired
    (row,) = agg.paired_differences(records, "gap", "test_acc")
    diffs = [-0.01, 0.01, -0.02]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert row["head"] == "gmp" and row["n"] == 3 and row["wins"] == 1
    assert row["diff_mean"] == pytest.approx(mean)
    assert row["diff_std"] == pytest.approx(std)
    assert row["t"] == pytest.approx(mean / (std / math.sqrt(3)))
    (g,) = agg.paired_differences(records, "gap", agg.TRAIN_TEST_GAP)
    assert g["diff_mean"] == pytest.approx(-mean)  # same train acc: the gap moves the other way


def test_paired_difference_of_identical_runs_has_no_t():
    records = [_rec("gap", s, 0.8, 0.9) for s in (0, 1)] + [_rec("gmp", s, 0.8, 0.9) for s in (0, 1)]
    (row,) = agg.paired_differences(records, "gap")
    assert row["diff_mean"] == 0 and row["diff_std"] == 0 and row["t"] is None


def test_robustness_rows_count_refusals_and_keep_the_reason():
    why = "Flatten head was built for a 2x2 grid (input 48x48) but got 3x3"
    recs = [
        _rec("gap", 0, 0.8, 0.9, img_size=48, robustness=[
            {"img_size": 48, "status": "ok", "test_acc": 0.8},
            {"img_size": 96, "status": "ok", "test_acc": 0.6}]),
        _rec("gap", 1, 0.8, 0.9, img_size=48, robustness=[
            {"img_size": 48, "status": "ok", "test_acc": 0.9},
            {"img_size": 96, "status": "ok", "test_acc": 0.7}]),
        _rec("flatten", 0, 0.8, 0.9, img_size=48, robustness=[
            {"img_size": 48, "status": "ok", "test_acc": 0.8},
            {"img_size": 96, "status": "refused", "reason": why}]),
    ]
    rows = agg.robustness_rows(recs)
    by = {(r["head"], r["img_size"]): r for r in rows}
    assert by[("gap", 96)]["test_acc_mean"] == pytest.approx(0.65) and by[("gap", 96)]["ok"] == 2
    assert by[("flatten", 96)]["refused"] == 1 and by[("flatten", 96)]["ok"] == 0
    assert by[("flatten", 96)]["reason"] == why and by[("flatten", 96)]["test_acc_mean"] is None
    pivot = {r["head"]: r for r in agg.robustness_pivot(rows)}
    assert pivot["flatten"]["96 px"] == "refused" and pivot["gap"]["48 px*"] == "85.0 ± 7.1"


def test_summary_markdown_shows_mean_pm_std_and_missing_runs():
    records = [_rec("gap", 0, 0.80, 0.90), _rec("gap", 1, 0.90, 0.95)]
    rows = agg.group_rows(records)
    text = agg.summary_markdown(rows, agg.paired_differences(records, "gap"), [],
                                {"models": ["m"], "base": {"dataset": "synthetic"},
                                 "missing": ["m-gmp-s0"], "command": "python x.py"})
    assert "85.0 ± 7.1" in text  # test accuracy in percent
    assert "python x.py" in text and "m-gmp-s0" in text
    assert agg.pm(0.5, None) == "50.0" and agg.pm(None, None) == ""
    one = agg.summary_markdown(agg.group_rows(records[:1]), [], [], {"base": {}})
    assert re.search(r"\|\s+80(\.0)?\s+\|", one)  # one seed: no std, and no 80.000 padding
    assert "80.000" not in one
