"""Shared reporting pieces: tables (tabulate, CSV, JSON), plots (matplotlib, PNG) and progress
bars (tqdm on a terminal, plain lines in a file).

Functions here take plain rows (dicts) and return text or write a file; nothing here computes a
figure, so every table and plot of the toolkit formats the same way.
"""

from .plots import (
    figure_format,
    plot_acc_vs_head_params,
    plot_acc_vs_shift,
    plot_curves,
    plot_gap_vs_train_size,
    plot_learning_curves,
    plot_lr_curves,
    plot_pick,
    pyplot,
    save_figure,
)
from .progress import LineProgress, progress_bar
from .tables import (
    TABLE_FORMATS,
    columns_of,
    flatten_row,
    format_table,
    macs_text,
    readable,
    to_csv,
    to_json,
)

__all__ = ["TABLE_FORMATS", "LineProgress", "columns_of", "figure_format", "flatten_row",
           "format_table", "macs_text", "readable", "plot_acc_vs_head_params", "plot_acc_vs_shift", "plot_curves",
           "plot_gap_vs_train_size", "plot_learning_curves", "plot_lr_curves", "plot_pick", "progress_bar", "pyplot",
           "save_figure", "to_csv", "to_json"]
