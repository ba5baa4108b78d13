"""The plots, one function each, written as PNG (atomically).

A run's learning curves; for a study, test accuracy against head parameters (is a larger head
worth it?), the train-test gap against training-set size (which head overfits small data?),
the heads' learning curves overlaid (mean over seeds) and test accuracy against the pixel shift
of the test images (which head keeps "where"?); for pick_head, validation accuracy against head
parameters and against the learning rate. Each takes rows from analysis.studies.aggregate (or
run records) and returns the path written, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from surgery import atomic_write_bytes

__all__ = ["figure_format", "plot_acc_vs_head_params", "plot_acc_vs_shift", "plot_curves",
           "plot_gap_vs_train_size", "plot_learning_curves", "plot_pick", "point_labels", "pyplot",
           "save_figure"]


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no screen needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_format(path: str | Path) -> str:
    """The image format a path's suffix names (``.jpg`` -> ``jpg``; PNG without a suffix);
    a suffix matplotlib cannot write is a ValueError listing those it can."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    supported = FigureCanvasAgg.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(f"cannot write a figure as {str(path)!r}: unknown image format "
                         f"'.{suffix}'; use one of {', '.join('.' + s for s in sorted(supported))}")
    return suffix


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (``.png``, ``.jpg``,
    ``.pdf``, ``.svg``, ...; PNG without a suffix), and close it."""
    fmt = figure_format(path)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format=fmt, dpi=dpi)
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    """A colour per label: tab10, or tab20 beyond ten labels (pick_head compares 15 heads)."""
    names = list(dict.fromkeys(labels))
    cmap = pyplot().get_cmap("tab10" if len(names) <= 10 else "tab20")
    return {lab: cmap(i % cmap.N) for i, lab in enumerate(names)}


def _pct(v: float | None) -> float:
    return float("nan") if v is None else 100.0 * v


def _legend_outside(ax: Any, **kwargs: Any) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              **{"fontsize": 7, **kwargs})


def _count_axis(axis: Any) -> None:
    """Tick labels of a count axis in readable units (``10 k``, ``1 M``)."""
    from matplotlib.ticker import EngFormatter

    axis.set_major_formatter(EngFormatter(sep=" "))


def point_labels(points: Sequence[tuple[str, float, float]], y_close: float = 0.5
                 ) -> list[tuple[str, float, float]]:
    """One label per cluster of points at the same x whose y lie within ``y_close`` of each
    other (``gap = nin = original``: heads of the same cost and accuracy), placed at the
    cluster's mean y; every other point keeps its own label."""
    clusters: list[list[tuple[str, float, float]]] = []
    for name, x, y in sorted(points, key=lambda p: (p[1], p[2])):
        last = clusters[-1] if clusters else None
        if last is not None and last[-1][1] == x and abs(y - last[-1][2]) <= y_close:
            last.append((name, x, y))
        else:
            clusters.append([(name, x, y)])
    return [(" = ".join(p[0] for p in c), c[0][1], sum(p[2] for p in c) / len(c))
            for c in clusters]


def plot_acc_vs_head_params(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Test accuracy (%, mean ± std over seeds) against head parameters, per head and train size."""
    rows = [r for r in rows if r.get("head_params") and r.get("test_acc_mean") is not None]
    if not rows:
        return None
    plt = pyplot()
    colours = _colours([r["head"] for r in rows])
    sizes = list(dict.fromkeys(r["train_size"] for r in rows))
    markers = "osD^v<>p*h"
    models = list(dict.fromkeys(r["model"] for r in rows))
    width = 5.5 + 1.6 * (1 + len(rows) // 24)  # room for the legend beside the axes
    fig, axes = plt.subplots(1, len(models), figsize=(width * len(models), 4.4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for r in (r for r in rows if r["model"] == model):
            ax.errorbar(r["head_params"], _pct(r["test_acc_mean"]),
                        yerr=_pct(r["test_acc_std"] or 0.0), color=colours[r["head"]],
                        marker=markers[sizes.index(r["train_size"]) % len(markers)], capsize=3,
                        linestyle="none", label=f"{r['head']}, n={r['train_size']}")
        ax.set(xscale="log", xlabel="head parameters", ylabel="test accuracy (%)", title=model)
        _count_axis(ax.xaxis)
        ax.grid(alpha=0.3)
        _legend_outside(ax, ncols=1 + len(rows) // 24)
    return save_figure(fig, path)


def plot_pick(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
              recommended: str | None = None) -> Path | None:
    """Validation accuracy (%, mean ± std over seeds) against head parameters, one point per
    head, labelled; the recommended head ringed."""
    rows = [r for r in rows if r.get("head_params") and r.get("val_acc_mean") is not None]
    if not rows:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = _colours([r["head"] for r in rows])
    for r in rows:
        x, y = r["head_params"], _pct(r["val_acc_mean"])
        ax.errorbar(x, y, yerr=_pct(r.get("val_acc_std") or 0.0), color=colours[r["head"]],
                    marker="o", capsize=3, linestyle="none")
        if r["head"] == recommended:
            ax.plot(x, y, marker="o", markersize=14, markerfacecolor="none",
                    markeredgecolor="black", linestyle="none", label=f"recommended: {recommended}")
    points = [(r["head"], r["head_params"], _pct(r["val_acc_mean"])) for r in rows]
    for label, x, y in point_labels(points):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set(xscale="log", xlabel="head parameters", ylabel="validation accuracy (%)", title=title)
    _count_axis(ax.xaxis)
    ax.grid(alpha=0.3)
    if recommended is not None:
        _legend_outside(ax, fontsize=8)
    return save_figure(fig, path)


def plot_gap_vs_train_size(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Train-test gap (train - test accuracy, points; mean ± std) against train size."""
    rows = [r for r in rows if r.get("train_test_gap_mean") is not None and r.get("train_size")]
    if not rows:
        return None
    plt = pyplot()
    colours = _colours([r["head"] for r in rows])
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for head in colours:
            pts = sorted((r["train_size"], _pct(r["train_test_gap_mean"]),
                          _pct(r["train_test_gap_std"] or 0.0))
                         for r in rows if r["model"] == model and r["head"] == head)
            if pts:
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colours[head],
                            label=head)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set(xscale="log", xlabel="training images", ylabel="train-test gap (accuracy points)",
               title=model)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return save_figure(fig, path)


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
    plt = pyplot()
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
        _legend_outside(ax, title="solid: val, dashed: train", title_fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return save_figure(fig, path)


def plot_curves(path: str | Path, rows: Sequence[dict[str, Any]], title: str = "") -> Path | None:
    """Loss and accuracy per epoch, train (eval-mode sample) vs validation, as a PNG."""
    if not rows:
        return None
    plt = pyplot()
    ep = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label, ax in (("train_loss", "train", ax1), ("val_loss", "validation", ax1),
                           ("train_acc", "train", ax2), ("val_acc", "validation", ax2)):
        ax.plot(ep, [r[key] for r in rows], marker="o", label=label)
    ax1.set(xlabel="epoch", ylabel="loss (cross-entropy)")
    ax2.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


def plot_acc_vs_shift(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Test accuracy (%, mean ± std over seeds) against the pixel shift of the test images, one
    line per head, one panel per model x train size (rows of aggregate.shift_rows)."""
    rows = [r for r in rows if r.get("test_acc_mean") is not None]
    if not rows:
        return None
    plt = pyplot()
    colours = _colours([r["head"] for r in rows])
    panels = list(dict.fromkeys((r["model"], r["train_size"]) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (model, size) in zip(axes[0], panels, strict=True):
        for head in colours:
            pts = sorted((r["shift"], _pct(r["test_acc_mean"]), _pct(r["test_acc_std"] or 0.0))
                         for r in rows if (r["model"], r["train_size"], r["head"])
                         == (model, size, head))
            if pts:
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colours[head],
                            label=head)
        ax.set(xlabel="shift (pixels of the stored image)", ylabel="test accuracy (%)",
               title=f"{model}, {size} training images")
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    return save_figure(fig, path)



def plot_lr_curves(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
                   chosen: Mapping[str, float] | None = None) -> Path | None:
    """Validation accuracy (%, mean ± std over seeds) against the learning rate, one line per
    head (and weight decay, when several); pruned settings hollow, diverged ones crossed at
    the bottom, each head's chosen rate ringed. The legend sits outside the axes."""
    rows = [r for r in rows if r.get("lr")]
    if not rows:
        return None
    plt = pyplot()
    decays = sorted({r["weight_decay"] for r in rows})
    keys = list(dict.fromkeys((r["head"], r["weight_decay"]) for r in rows))
    colours = _colours([f"{h} wd={wd:g}" if len(decays) > 1 else h for h, wd in keys])
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    floor = min((_pct(r["val_acc_mean"]) for r in rows if r.get("val_acc_mean") is not None),
                default=0.0)
    for (head, wd), name in zip(keys, colours, strict=True):
        pts = sorted((r for r in rows if (r["head"], r["weight_decay"]) == (head, wd)),
                     key=lambda r: r["lr"])
        colour = colours[name]
        done = [r for r in pts if r.get("val_acc_mean") is not None]
        ax.errorbar([r["lr"] for r in done], [_pct(r["val_acc_mean"]) for r in done],
                    yerr=[_pct(r.get("val_acc_std") or 0.0) for r in done], color=colour,
                    marker="o", capsize=2, label=name, linewidth=1, alpha=0.9)
        for r in done:
            if r["status"] == "pruned":
                ax.plot(r["lr"], _pct(r["val_acc_mean"]), marker="o", color="white",
                        markeredgecolor=colour, linestyle="none", zorder=4)
        for r in pts:
            if r["status"] == "diverged":
                ax.plot(r["lr"], floor, marker="x", color=colour, linestyle="none", zorder=4)
        if chosen and head in chosen:
            best = next((r for r in done if r["lr"] == chosen[head]), None)
            if best is not None:
                ax.plot(best["lr"], _pct(best["val_acc_mean"]), marker="o", markersize=11,
                        markerfacecolor="none", markeredgecolor="black", linestyle="none",
                        zorder=5)
    ax.set(xscale="log", xlabel="learning rate (peak)", ylabel="best validation accuracy (%)",
           title=title)
    ax.grid(alpha=0.3)
    _legend_outside(ax, title="hollow: pruned; x: diverged; ringed: chosen", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
