"""Export coverage: the deterministic sample, the quotas, the head list, the totals."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

import surgery
from analysis.sweeps import export_checks as cov
from analysis.sweeps.export_coverage_report import summarise

DOCS = Path(__file__).resolve().parents[3] / "docs"


@pytest.fixture(scope="module")
def candidates():
    return cov.zoo_candidates(DOCS / "zoo_table.csv", DOCS / "zoo_coverage.json")


def test_sample_is_deterministic_and_covers_every_layout(candidates):
    assert all(c.params <= 300e6 for c in candidates)
    per_layout = Counter(c.layout for c in candidates)
    assert set(per_layout) == set(cov.LAYOUTS)
    sample = cov.sample_architectures(candidates, 100)
    assert sample == cov.sample_architectures(list(reversed(candidates)), 100)
    assert len(sample) == len({c.name for c in sample}) == 100
    got = Counter(c.layout for c in sample)
    assert all(got[k] >= min(4, per_layout[k]) for k in cov.LAYOUTS)
    assert got["lists"] >= 4 and got["NCL"] >= 4
    for layout in cov.LAYOUTS:  # round robin over timm modules: spread over the families
        families = {c.family for c in candidates if c.layout == layout}
        taken = Counter(c.family for c in sample if c.layout == layout)
        assert max(taken.values()) <= math.ceil(got[layout] / len(families))


def test_lists_are_the_list_output_architectures(candidates):
    lists = {c.name for c in candidates if c.layout == "lists"}
    assert {"coat_mini", "crossvit_tiny_240"} <= lists
    assert "coat_lite_tiny" not in lists  # a plain token sequence


def test_quotas_by_hand():
    # floor max(4, 20 // 25) = 4: A 4, B 4, C 2; the other 10 by what is left (86 : 4 : 0):
    # A 9.56 -> 9, B 0.44 -> 0; the last one to the largest remainder (A)
    assert cov._quotas({"A": 90, "B": 8, "C": 2}, 20) == {"A": 14, "B": 4, "C": 2}
    assert cov._quotas({"A": 3, "B": 1}, 10) == {"A": 3, "B": 1}  # fewer than asked: all


def test_coverage_heads_pick_up_newer_kinds(monkeypatch):
    assert cov.coverage_heads()[:4] == ["gap", "gmp", "flatten", "nin"]
    assert "original" not in cov.coverage_heads() and "gapmp" not in cov.coverage_heads()
    heads = dict(surgery.HEADS)
    heads["zzpool"] = heads["gap"]
    monkeypatch.setattr(surgery, "HEADS", heads)
    assert cov.coverage_heads()[-1] == "zzpool"


def _row(model, head, verified=True, dynamic=True, limitation=None, fixed=None,
         exporter="dynamo"):
    return {**cov.failure_row(model, head), "exported": limitation is None, "exporter": exporter,
            "verified": verified, "dynamic_hw": dynamic, "limitation": limitation,
            "dynamic_axes": ["batch", "height", "width"] if dynamic else ["batch"],
            "fixed_reason": fixed, "layout": "NLC", "from_list": model == "b"}


def test_summarise_counts_and_leaves_out_not_applicable():
    rows = [
        _row("a", "gap"), _row("a", "flatten", dynamic=False,
                                fixed="the flatten head is built for 224x224 inputs"),
        _row("b", "gap", exporter="torchscript"),
        _row("b", "flatten", verified=False, dynamic=False, limitation="exporter"),
        _row("c", "token", verified=False, dynamic=False, limitation="not applicable"),
    ]
    s = summarise(rows, ["gap", "flatten", "token"])
    assert s["total"]["applicable"] == 4 and s["total"]["verified"] == 3
    assert s["total"]["percent_verified"] == 75.0 and not s["target_met"]
    assert s["total"]["dynamic_hw"] == 2 and s["total"]["torchscript"] == 1
    assert s["per_head"]["flatten"]["verified"] == 1 and s["per_head"]["token"]["applicable"] == 0
    assert s["per_layout"]["lists"]["pairs"] == 2 and s["per_layout"]["tokens"]["pairs"] == 3
    assert s["fixed_reasons"] == {"Flatten head (by design)": 1}
    # a dynamic file whose other size the model itself refuses (spp's grid minimum)
    unchecked = {**_row("d", "spp"), "dynamic_hw": False}
    assert summarise([unchecked], ["spp"])["fixed_reasons"] == {
        "H/W dynamic in the file, the other size checked refused by the model (unverified)": 1}
    assert s["limitations"] == {"exporter": 1}
    assert s["not_applicable"] == [{"model": "c", "head": "token"}]
