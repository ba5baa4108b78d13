"""pick: which heads are tried, how they are ranked, and one extraction for the whole study."""

from __future__ import annotations

import json
import warnings

import pytest

import surgery
from analysis.features import clear_memory
from analysis.studies import (
    JSON_KEYS,
    ROW_KEYS,
    VARIANTS,
    candidate_heads,
    compare_to_best,
    holm,
    pick_rows,
    pool_for,
    recommend,
    run_pick,
)
from surgery import parse_head


def _row(head, accs, params):
    return {"head": head, "val_acc_mean": sum(accs) / len(accs), "head_params": params}


def _compare(heads):
    rows = [_row(h, accs, params) for h, accs, params in heads]
    per_seed = {h: dict(enumerate(accs)) for h, accs, _ in heads}
    return compare_to_best(rows, per_seed)


def test_a_smaller_head_within_noise_of_the_best_is_recommended():
    compared = _compare([("attn", [0.900, 0.910, 0.920], 1_000_000),
                         ("gap", [0.896, 0.913, 0.915], 5_000),  # -0.2 points, seeds disagree
                         ("nin", [0.800, 0.810, 0.820], 100)])    # -10 points on every seed
    verdicts = {r["head"]: r["verdict"] for r in compared}
    assert verdicts == {"attn": "best", "gap": "within noise", "nin": "clearly worse"}
    head, reason = recommend(compared)
    assert head == "gap" and "attn" in reason and "5,000 vs 1,000,000" in reason


def test_a_clearly_worse_head_is_not_recommended_even_when_smallest():
    compared = _compare([("flatten", [0.90, 0.91, 0.92], 50_000),
                         ("gap", [0.88, 0.895, 0.90], 5_000)])  # 1.5-2 points below on each seed
    gap = next(r for r in compared if r["head"] == "gap")
    assert gap["diff_mean"] == pytest.approx(-0.055 / 3) and gap["p"] < 0.05
    assert recommend(compared)[0] == "flatten"


def test_the_correction_counts_the_heads_compared():
    # the same pair of heads: p 0.027 alone is clearly worse; among four heads Holm lifts it
    worse = [0.90, 0.91, 0.92], [0.885, 0.898, 0.914]
    alone = _compare([("a", worse[0], 10), ("b", worse[1], 1)])
    p_alone = next(r["p"] for r in alone if r["head"] == "b")
    crowd = _compare([("a", worse[0], 10), ("b", worse[1], 1),
                      ("c", [0.899, 0.912, 0.918], 5), ("d", [0.901, 0.905, 0.921], 5)])
    p_crowd = next(r["p"] for r in crowd if r["head"] == "b")
    assert p_alone < 0.05 < p_crowd
    assert p_crowd == pytest.approx(3 * p_alone)  # Holm: the smallest of 3 p-values times 3
    assert {r["head"]: r["verdict"] for r in alone}["b"] == "clearly worse"
    assert {r["head"]: r["verdict"] for r in crowd}["b"] == "within noise"
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


def test_one_seed_recommends_the_best():
    compared = _compare([("flatten", [0.9], 50_000), ("gap", [0.899], 5_000)])
    head, reason = recommend(compared)
    assert head == "flatten" and "one seed" in reason


def test_rows_average_over_seeds_and_rank_by_validation_accuracy():
    recs = [{"head_label": "gap", "best_val_acc": v, "gap_acc": g, "test_acc": 0.5,
             "head_params": 10, "head_gmacs": 1e-6, "seed": s, "lr": 1e-3}
            for s, (v, g) in enumerate(((0.8, 0.1), (0.6, 0.3)))]
    recs += [{"head_label": "flatten", "best_val_acc": 0.75, "gap_acc": 0.0, "test_acc": 0.5,
              "head_params": 40, "head_gmacs": 4e-6, "seed": 0, "lr": 1e-2}]
    rows = pick_rows(recs, [parse_head("gap"), parse_head("flatten")])
    assert [r["head"] for r in rows] == ["flatten", "gap"]
    gap = rows[1]
    assert gap["val_acc_mean"] == pytest.approx(0.7) and gap["gap_acc_mean"] == pytest.approx(0.2)
    assert gap["val_acc_std"] == pytest.approx(0.1414213, rel=1e-5)  # sample std of 0.8, 0.6
    assert rows[0]["any_size"] is False and gap["any_size"] is True  # from surgery.HEADS
    assert set(ROW_KEYS) <= set(gap)
    assert gap["lr"] == 1e-3 and gap["per_seed"] == {0: 0.8, 1: 0.6}


def test_pool_holds_train_size_plus_validation():
    assert pool_for(10_000, 0.1) == (11_111, 1_111)
    assert pool_for(100, 20) == (120, 20)


def test_candidates_are_read_from_the_registry_at_run_time(monkeypatch):
    kind = surgery.HeadKind("toyhead", "a kind registered after import",
                            surgery.HEADS["gap"].build)
    monkeypatch.setitem(surgery.HEADS, "toyhead", kind)
    heads, skipped = candidate_heads("test_resnet", img_size=128, in_chans=3)
    labels = [h.label for h in heads]
    assert "toyhead" in labels and "original" in labels
    assert [k for k, _ in skipped] == ["token"]  # a CNN: no class token
    assert labels[-len(VARIANTS):] == [parse_head(v).label for v in VARIANTS]


@pytest.mark.parametrize("model, img_size, token, spp", [
    ("test_resnet", 32, False, None),          # 1x1 grid: no pyramid fits
    ("test_resnet", 64, False, "spp:levels=1x2"),  # 2x2 grid: the coarser levels
    ("test_resnet", 128, False, "spp"),        # 4x4 grid: the default levels
    ("test_vit", 32, True, "spp:levels=1x2"),  # a class token; 2x2 patches
    ("test_vit", 64, True, "spp"),             # 4x4 patches
])
def test_token_needs_a_class_token_and_spp_a_grid_that_holds_its_levels(model, img_size, token,
                                                                         spp):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads, skipped = candidate_heads(model, img_size=img_size, in_chans=3)
    kinds, why = [h.kind for h in heads], dict(skipped)
    assert {"gap", "gmp", "gapmp", "flatten", "nin", "gem", "attn", "original"} <= set(kinds)
    assert ("token" in kinds) is token
    assert [h for h in heads if h.kind == "spp"] == ([parse_head(spp)] if spp else [])
    assert set(kinds) | set(why) == set(surgery.HEADS)  # every kind tried, once
    if not token:
        assert "no class token" in why["token"]
    if not spp:  # the refusal of the default levels is the one reported
        assert "needs a feature grid of at least 4x4" in why["spp"]


@pytest.mark.slow
def test_a_model_without_its_own_head_has_no_original():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        heads, skipped = candidate_heads("mobilenetv5_300m_enc", img_size=64, in_chans=3)
    assert "original" not in [h.label for h in heads]
    why = dict(skipped)
    assert list(why) == ["token", "original"] and "no classifier" in why["original"]


def test_one_extraction_serves_every_head_and_seed(tmp_path):
    clear_memory()
    base = dict(dataset="synthetic", val_size=16, epochs=1, batch_size=16, regime="linear-probe",
                data_options=dict(num_classes=3, n_train=120, n_test=24, image_size=32),
                checkpoint=None, test_size=12, min_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_pick("test_resnet", base, seeds=[0, 1], train_size=48, out=tmp_path,
                          heads=[parse_head("gap"), parse_head("flatten:dropout=0.5")],
                          progress=False)
    caches = result["study"]["feature_caches"]
    # a random backbone: one per seed, each extracted once for both heads
    assert [c["built"] for c in caches] == [True, True]
    for run in (tmp_path / "runs").iterdir():
        info = json.loads((run / "summary.json").read_text())["feature_cache"]
        assert info["used"] and not info["built"]
    assert set(JSON_KEYS) <= set(result) and len(result["rows"]) == 2
    assert all(tuple(r) == ROW_KEYS for r in result["rows"])
    assert result["recommended"] in {"gap", "flatten-d0.5"} and result["reason"]
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["base"]["pool_size"] == 64 and study["robustness"] is False
