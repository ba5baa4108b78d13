"""Each head's learning rate: the grid, the choice on validation, the edge and its extension."""

from __future__ import annotations

import pytest

from analysis.studies.lr_grid import (
    check_grid,
    choose_settings,
    default_lrs,
    extension,
    lr_curves,
    neighbours,
)
from analysis.training.sweep import SweepMember


def _member(head, lr, seed, acc, status="ok"):
    m = SweepMember(head, lr, 0.05, seed, status=status)
    m.best = {"val_acc": acc, "epoch": 1}
    return m


def _grid(head, accs, lrs=(1e-3, 1e-2, 1e-1), statuses=None):
    out = []
    for lr, per_seed in zip(lrs, accs, strict=True):
        for seed, acc in enumerate(per_seed):
            status = (statuses or {}).get((lr, seed), "ok")
            out.append(_member(head, lr, seed, acc, status))
    return out


def test_the_default_grid_is_seven_values_half_a_decade_apart():
    lrs = default_lrs("adamw")
    assert len(lrs) == 7 and lrs[0] == 1e-4 and lrs[-1] == 0.1
    assert all(b / a == pytest.approx(10 ** 0.5, rel=1e-3) for a, b in zip(lrs, lrs[1:], strict=False))
    assert default_lrs("sgd")[0] == 1e-3


def test_the_choice_is_the_best_mean_over_seeds_with_its_edge():
    members = _grid("gap", [[0.5, 0.6], [0.7, 0.8], [0.9, 0.6]])  # mean 0.55, 0.75, 0.75
    choice = choose_settings(members)["gap"]
    assert (choice.lr, choice.edge) == (1e-2, None)  # a tie goes to the smaller rate
    assert choice.val_acc_mean == pytest.approx(0.75) and extension(choice) is None
    high = choose_settings(_grid("gap", [[0.5, 0.5], [0.6, 0.6], [0.9, 0.9]]))["gap"]
    assert high.edge == "high" and extension(high) == pytest.approx(1.0)
    low = choose_settings(_grid("gap", [[0.9, 0.9], [0.6, 0.6], [0.5, 0.5]]))["gap"]
    assert low.edge == "low" and extension(low) == pytest.approx(1e-4)


def test_a_setting_with_a_diverged_or_pruned_seed_is_never_chosen():
    members = _grid("gap", [[0.5, 0.5], [0.7, 0.7], [0.9, 0.9]],
                    statuses={(1e-1, 1): "diverged"})
    assert choose_settings(members)["gap"].lr == 1e-2
    members = _grid("gap", [[0.5, 0.5], [0.7, 0.7], [0.9, 0.9]],
                    statuses={(1e-1, 0): "pruned", (1e-1, 1): "pruned"})
    assert choose_settings(members)["gap"].lr == 1e-2
    curves = lr_curves(members)
    assert [r["status"] for r in curves] == ["ok", "ok", "pruned"]
    near = neighbours(curves, choose_settings(members)["gap"])
    assert near["below"]["lr"] == 1e-3 and near["above"]["status"] == "pruned"


def test_a_grid_is_positive_finite_and_distinct():
    assert check_grid([1e-2, 1e-3], "--lrs") == (1e-3, 1e-2)
    for bad, message in (([0.0], "finite values > 0"), ([float("nan")], "finite values > 0"),
                         ([1e-3, 1e-3], "twice")):
        with pytest.raises(ValueError, match=message):
            check_grid(bad, "--lrs")


def test_macs_read_in_units_a_person_reads():
    from analysis.reporting import macs_text

    assert macs_text(7.168e-06) == "7.17 kMACs"  # a GAP head: 512 x 14 MACs, not 7.168e-06 G
    assert macs_text(0.001453) == "1.45 MMACs"
    assert macs_text(1.82) == "1.82 GMACs" and macs_text(None) == ""
