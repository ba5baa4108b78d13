"""The verdict rule: paired t-test over seeds (checked against a hand computation) and verdicts."""

from __future__ import annotations

import math

import pytest

from analysis.studies.verdicts import paired_test, verdict

A = [0.83, 0.84, 0.82, 0.85, 0.86]
B = [0.82, 0.80, 0.81, 0.83, 0.84]


def test_paired_test_against_a_hand_computation():
    # differences 0.01 0.04 0.01 0.02 0.02: mean 0.02, sample std sqrt(0.0006 / 4)
    res = paired_test(A, B)
    sd = math.sqrt(0.0006 / 4)
    assert res["n"] == 5 and res["wins"] == 5
    assert res["diff_mean"] == pytest.approx(0.02) and res["diff_std"] == pytest.approx(sd)
    assert res["t"] == pytest.approx(0.02 / (sd / math.sqrt(5)))  # 3.6515
    # two-sided p of t = 3.6515 with 4 degrees of freedom (tables: between 0.02 and 0.025)
    assert res["p"] == pytest.approx(0.021743, abs=1e-5)


def test_paired_test_edge_cases():
    assert paired_test([1.0, 2.0, 3.0], [0.0, 1.0, 2.0])["p"] == 0.0  # a constant difference
    assert paired_test([1.0, 2.0], [1.0, 2.0])["p"] == 1.0
    assert paired_test([1.0], [0.0])["p"] is None
    with pytest.raises(ValueError, match="as many values"):
        paired_test([1.0], [1.0, 2.0])


@pytest.mark.parametrize("claimed, other, expected", [
    (A, B, "holds"),                                      # p = 0.022, claimed direction
    ([0.83, 0.80, 0.85], [0.82, 0.81, 0.83], "holds weakly"),  # mean +0.007, p = 0.49
    (B, A, "does not hold"),                              # the opposite, p = 0.022
    ([0.82, 0.81, 0.83], [0.83, 0.80, 0.85], "not supported"),  # opposite, not significant
    ([0.8, 0.8], [0.8, 0.8], "not supported"),            # no difference
    ([0.9], [0.8], "holds weakly"),                       # one seed: no test
])
def test_verdicts(claimed, other, expected):
    assert verdict(paired_test(claimed, other)) == expected
