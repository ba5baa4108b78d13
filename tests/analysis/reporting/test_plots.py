"""Plots a person can read: legends beside the axes, merged labels, readable units."""

from __future__ import annotations

import pytest

from analysis.reporting import plots, readable

HEADS = ["gap", "gmp", "gapmp", "flatten", "flatten-d0.5", "nin", "gem", "attn", "spp"]
SIZES = [50, 250, 1250, 5000]


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions would save, drawn, instead of written."""
    figures = []

    def keep(fig, path, dpi=110):
        fig.tight_layout()
        fig.canvas.draw()
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    return figures


def _study_rows():
    return [{"model": "resnet10t", "head": h, "train_size": n, "head_params": 2565 * (i + 1),
             "test_acc_mean": 0.8 + 0.01 * i, "test_acc_std": 0.01,
             "train_test_gap_mean": 0.1, "train_test_gap_std": 0.01}
            for i, h in enumerate(HEADS) for n in SIZES]


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _legends_clear(fig) -> None:
    renderer = fig.canvas.get_renderer()
    legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the plot has a legend"
    for ax, legend in legends:
        assert not _overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))


@pytest.mark.parametrize("draw", [
    lambda rows: plots.plot_acc_vs_head_params(rows, "a.png"),
    lambda rows: plots.plot_gap_vs_train_size(rows, "g.png"),
    lambda rows: plots.plot_acc_vs_shift(
        [{**r, "shift": s} for r in rows if r["train_size"] == 50 for s in (0, 2, 4, 8)], "s.png"),
    lambda rows: plots.plot_lr_curves(
        [{"head": h, "weight_decay": 0.05, "lr": lr, "val_acc_mean": 0.9, "val_acc_std": 0.01,
          "status": "ok"} for h in HEADS + ["gap-h256", "gmp-h256", "gapmp-h256", "original",
                                            "flatten-h256", "gap-d0.5"]
         for lr in (1e-4, 1e-3, 1e-2)], "lr.png"),
])
def test_a_crowded_legend_sits_beside_the_data(drawn, draw):
    assert draw(_study_rows()) is not None
    _legends_clear(drawn[0])


def test_labels_of_heads_at_the_same_point_are_merged(drawn):
    rows = [{"head": h, "head_params": 2565, "val_acc_mean": 0.80 + d, "val_acc_std": 0.01}
            for h, d in (("gap", 0.0), ("nin", 0.001), ("original", 0.002))]
    rows += [{"head": "gmp", "head_params": 2565, "val_acc_mean": 0.85, "val_acc_std": 0.01},
             {"head": "flatten", "head_params": 125445, "val_acc_mean": 0.88, "val_acc_std": 0.0}]
    plots.plot_pick(rows, "p.png", recommended="gmp")
    ax = drawn[0].axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["flatten", "gap = nin = original", "gmp"]
    _legends_clear(drawn[0])
    ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert any(t.endswith(" k") for t in ticks), ticks


def test_counts_read_in_si_units():
    assert readable(2565) == "2.56 k" and readable(11_181_642) == "11.2 M"
    assert readable(7168, "MACs") == "7.17 kMACs" and readable(512) == "512"
    assert readable(None) == "" and readable(1.82e9) == "1.82 G"
