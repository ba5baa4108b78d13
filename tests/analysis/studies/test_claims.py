"""Claims measured from run records: pairing by seed, the claimed direction, the verdicts, and
tools/claims_table.py on a study directory written by the test."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from analysis.studies import CLAIMS, Claim, StudySpec, claim_rows, claims_summary, combinations
from surgery import parse_head

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

import claims_table  # noqa: E402

GAP_ACC = [0.83, 0.84, 0.82, 0.85, 0.86]
GMP_ACC = [0.82, 0.80, 0.81, 0.83, 0.84]  # GAP ahead by 0.02 on average, p = 0.022


def _record(head: str, seed: int, acc: float, **kw) -> dict:
    rec = {"model": "m", "head": head, "head_label": head, "seed": seed, "train_size": 50,
           "test_acc": acc, "train_acc": 1.0, "img_size": 56, "head_params": 2565}
    rec.update(kw)
    return rec


def _records() -> list[dict]:
    recs = [_record("gap", s, a) for s, a in enumerate(GAP_ACC)]
    recs += [_record("gmp", s, a) for s, a in enumerate(GMP_ACC)]
    shifts = [{"shift": 0, "test_acc": 0.9}, {"shift": 8, "test_acc": 0.5}]
    recs += [_record("flatten", s, 0.8, head_params=125445, shifts=shifts,
                     robustness=[{"img_size": 56, "status": "ok"},
                                 {"img_size": 84, "status": "refused"}]) for s in range(3)]
    for r in recs[:3]:
        r["shifts"] = [{"shift": 0, "test_acc": 0.9}, {"shift": 8, "test_acc": 0.85 + r["seed"] / 100}]
        r["robustness"] = [{"img_size": 56, "status": "ok"}, {"img_size": 84, "status": "ok"}]
    return recs


def test_claims_pair_by_seed_and_sign_the_claimed_direction():
    rows = {r["claim"]: r for r in claim_rows(_records(), study="s")}
    edge = rows["GAP edges out GMP"]
    assert edge["n"] == 5 and edge["wins"] == 5 and edge["verdict"] == "holds"
    assert edge["diff_mean"] == pytest.approx(2.0) and edge["p"] == pytest.approx(0.021743, abs=1e-5)
    assert edge["better_mean"] == pytest.approx(84.0)  # percent
    # lower is better: GAP's head has fewer parameters on every seed (a constant difference)
    params = rows["no parameters: GAP's head is only the output layer"]
    assert params["n"] == 3 and params["diff_mean"] == 125445 - 2565 and params["verdict"] == "holds"
    # the train-test gap: GAP's (0.17, 0.16, 0.18) is below Flatten's 0.2 on seeds 0..2
    gap = rows["less overfitting on small data: a smaller train-test gap than Flatten+Dense"]
    assert gap["diff_mean"] == pytest.approx(3.0) and gap["verdict"] == "holds"  # p = 0.035
    # Flatten is less accurate (0.8) than GAP: "at least as good" holds; reversed it would not
    acc = rows["... with test accuracy at least as good as Flatten+Dense"]
    assert acc["diff_mean"] == pytest.approx(3.0)
    worse = claim_rows(_records(), [Claim("x", "flatten", "gap", "test_acc")])
    assert worse[0]["verdict"] == "does not hold"
    sizes = rows["any input size: GAP runs at input sizes Flatten was not built for"]
    assert sizes["better_mean"] == 100 and sizes["other_mean"] == 0 and sizes["verdict"] == "holds"
    where = rows["loses 'where': shifted test images cost GAP less accuracy than Flatten+Dense"]
    assert where["other_mean"] == pytest.approx(40) and where["better_mean"] == pytest.approx(4)
    assert where["verdict"] == "holds"
    # claims whose heads (or figures) the records lack give no row
    assert "... and than Flatten+Dense with dropout" not in rows
    assert "less time: a shorter epoch than Flatten+Dense" not in rows


def test_claims_summary_lists_each_size_with_its_verdict():
    recs = _records() + [dict(r, train_size=250) for r in _records()]
    rows = claim_rows(recs, [Claim("GAP edges out GMP", "gap", "gmp", "test_acc")], study="s")
    (summary,) = claims_summary(rows)
    assert summary["verdict"] == "50: holds; 250: holds"
    assert summary["measured"].startswith("50: 84.0% vs 82.0%, diff 2.0 ± 1.2 (5/5 seeds)")
    assert len(CLAIMS) == len({c.text for c in CLAIMS})


def test_claims_table_tool_on_a_study_directory(tmp_path, capsys):
    study = tmp_path / "tiny"
    spec = StudySpec(("m",), (parse_head("gap"), parse_head("gmp")), (0, 1, 2, 3, 4), (50,),
                     {"dataset": "synthetic", "regime": "linear-probe"})
    (study / "runs").mkdir(parents=True)
    (study / "study.json").write_text(json.dumps(spec.to_dict()))
    for rec in _records()[:10]:
        name = next(c.config(spec, Path(".")).name for c in combinations(spec)
                    if c.head.label == rec["head"] and c.seed == rec["seed"])
        run = study / "runs" / name
        run.mkdir()
        (run / "summary.json").write_text(json.dumps(rec))
        (run / "robustness.json").write_text("[]")
    out = tmp_path / "claims.md"
    assert claims_table.main([str(study), "--out", str(out)]) == 0
    text = out.read_text()
    assert "### GAP edges out GMP" in text and "tiny (linear-probe)" in text
    assert "| holds" in text or "holds |" in text
    assert json.loads(out.with_suffix(".json").read_text())[0]["verdict"] == "holds"
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        claims_table.main([str(tmp_path / "nothing")])


def test_the_vgg_style_head_is_compared_by_its_label():
    from analysis.studies.claims import VGG_HEAD

    assert VGG_HEAD == parse_head("flatten:hidden=4096x4096:dropout=0.5").label
    recs = [_record("gap", s, a, checkpoint_mb=18.8 + s / 100) for s, a in enumerate(GAP_ACC)]
    recs += [_record(VGG_HEAD, s, a + 0.05, checkpoint_mb=474.9, head_params=119566341)
             for s, a in enumerate(GAP_ACC)]
    rows = {r["claim"]: r for r in claim_rows(recs)}
    assert rows["VGG-style head: GAP's checkpoint is smaller"]["verdict"] == "holds"
    acc = rows["VGG-style head: GAP at least as accurate"]
    assert acc["verdict"] == "does not hold" and acc["diff_mean"] == pytest.approx(-5.0)
    assert "... with test accuracy at least as good as Flatten+Dense" not in rows  # no flatten runs
