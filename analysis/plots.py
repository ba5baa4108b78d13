"""The study plots, one function each, written as PNG (atomically, via analysis.rundir).

- test accuracy against head parameters (log scale): is a larger head worth it?
- generalisation gap against training-set size: which head overfits small data?
- learning curves of the heads overlaid: validation (solid) and train (dashed) accuracy per epoch,
  mean over seeds, one panel per model x train size.

Each takes rows from analysis.aggregate (or run records) and returns the path written, or None
when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .rundir import atomic_write_bytes

__all__ = ["plot_acc_vs_head_params", "plot_gap_vs_train_size", "plot_learning_curves"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    cmap = _plt().get_cmap("tab10")
    return {lab: cmap(i % 10) for i, lab in enumerate(dict.fromkeys(labels))}


def _pct(v: float | None) -> float:
    return float("nan") if v is None else 100.0 * v


def plot_acc_vs_head_params(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Test accuracy (%, mean ± std over seeds) against head parameters, per head and train size."""
    rows = [r for r in rows if r.get("head_params") and r.get("test_acc_mean") is not None]
    if not rows:
        return None
    plt = _plt()
    colours = _colours([r["head"] for r in rows])
    sizes = list(dict.fromkeys(r["train_size"] for r in rows))
    markers = "osD^v<>p*h"
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for r in (r for r in rows if r["model"] == model):
            ax.errorbar(r["head_params"], _pct(r["test_acc_mean"]),
                        yerr=_pct(r["test_acc_std"] or 0.0), color=colours[r["head"]],
                        marker=markers[sizes.index(r["train_size"]) % len(markers)], capsize=3,
                        linestyle="none", label=f"{r['head']}, n={r['train_size']}")
        ax.set(xscale="log", xlabel="head parameters", ylabel="test accuracy (%)", title=model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_gap_vs_train_size(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Generalisation gap (train - test accuracy, points; mean ± std) against train size."""
    rows = [r for r in rows if r.get("gap_mean") is not None and r.get("train_size")]
    if not rows:
        return None
    plt = _plt()
    colours = _colours([r["head"] for r in rows])
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for head in colours:
            pts = sorted((r["train_size"], _pct(r["gap_mean"]), _pct(r["gap_std"] or 0.0))
                         for r in rows if r["model"] == model and r["head"] == head)
            if pts:
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colours[head],
                            label=head)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set(xscale="log", xlabel="training images", ylabel="gap: train - test accuracy (points)",
               title=model)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def _mean_curve(histories: Sequence[Sequence[Mapping[str, Any]]], key: str
                ) -> tuple[list[int], list[float]]:
    by_epoch: dict[int, list[float]] = {}
    for hist in histories:
        for row in hist:
            if row.get(key) is not None:
                by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = sorted(by_epoch)
    return epochs, [100.0 * sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]


def plot_learning_curves(records: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Validation (solid) and train (dashed) accuracy per epoch, heads overlaid, mean over seeds."""
    records = [r for r in records if r.get("history")]
    if not records:
        return None
    plt = _plt()
    labels = [str(r.get("head_label") or r.get("head")) for r in records]
    colours = _colours(labels)
    panels = list(dict.fromkeys((r["model"], r["train_size"]) for r in records))
    cols = min(3, len(panels))
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, (model, size) in zip(axes.flat, panels, strict=False):
        for head in colours:
            hists = [r["history"] for r, lab in zip(records, labels, strict=True)
                     if lab == head and r["model"] == model and r["train_size"] == size]
            if not hists:
                continue
            for key, style in (("val_acc", "-"), ("train_acc", "--")):
                ep, acc = _mean_curve(hists, key)
                ax.plot(ep, acc, style, marker="o", markersize=3, color=colours[head],
                        label=head if key == "val_acc" else None)
        ax.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{model}, n={size}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, title="solid: val, dashed: train", title_fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)
