"""Shift robustness: a trained model evaluated on test images moved by a few pixels.

A global-pooling head sums or maxes over positions, so it cannot tell where in the grid a
feature was: moving the object changes little (the backbone's borders aside). Flatten+Dense has
one weight per position and class, so what it learned is tied to where things were. Shifts are
in pixels of the stored images (28 px for Fashion-MNIST), before the resize to the input size,
with zero fill and the same image size, on a fixed stratified test subset. Each image moves in
one of the four directions (right, left, down, up: image i takes direction i mod 4), so every
direction is a quarter of the images and a shift costs one pass over the subset, not four.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import surgery
from surgery import read_json

from ..data import BatchTransform, DataSplits, stratified_indices
from ..machine import resolve_device
from ..training import TrainConfig, evaluate, load_run_data
from .frozen import frozen_scorer

__all__ = ["DIRECTIONS", "SHIFT_FILE", "evaluate_run_shifts", "evaluate_shifts", "shift_images"]

SHIFT_FILE = "shifts.json"
# (dx, dy) unit steps: right, left, down, up
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def shift_images(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """``x`` (``(N, C, H, W)``) moved ``dx`` pixels right and ``dy`` down (negative: left, up),
    the uncovered border filled with zeros, the size unchanged."""
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


Scorer = Callable[[torch.Tensor, torch.Tensor, str], tuple[float, float]]


def evaluate_shifts(score: Scorer, x: torch.Tensor, y: torch.Tensor,
                    shifts: Sequence[int]) -> list[dict[str, Any]]:
    """One row per shift (pixels): ``test_acc`` / ``test_loss`` over all the images, image i
    moved in direction i mod 4 of :data:`DIRECTIONS` (shift 0: unmoved), and ``by_direction``
    accuracies (each on its quarter). ``score(images, labels, view)`` returns (loss, accuracy);
    ``view`` names the shifted images (``right4``), for callers that reuse their features."""
    rows = []
    which = torch.arange(len(y)) % len(DIRECTIONS)
    for s in shifts:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ValueError(f"--shifts are whole numbers of pixels >= 0, got {s!r}")
        groups = ({"none": ((0, 0), torch.ones(len(y), dtype=torch.bool))} if s == 0 else
                  {name: (d, which == k) for k, (name, d) in enumerate(DIRECTIONS.items())})
        per = {name: (score(shift_images(x[sel], d[0] * s, d[1] * s), y[sel], f"{name}{s}"),
                      int(sel.sum())) for name, (d, sel) in groups.items() if sel.any()}
        n = sum(count for _, count in per.values())
        rows.append({"shift": int(s), "images": n, "directions": len(per),
                     "test_acc": sum(r[1] * count for r, count in per.values()) / n,
                     "test_loss": sum(r[0] * count for r, count in per.values()) / n,
                     "by_direction": {k: r[1] for k, (r, _) in per.items()}})
    return rows


def model_scorer(model: nn.Module, transform: BatchTransform, batch_size: int) -> Scorer:
    """A :data:`Scorer` that runs ``model`` (eval mode) on the transformed images."""
    def score(images: torch.Tensor, labels: torch.Tensor, view: str) -> tuple[float, float]:
        return evaluate(model, images, labels, transform, batch_size)
    return score


def evaluate_run_shifts(run_dir: str | Path, shifts: Sequence[int], max_images: int | None = 2000,
                        data: DataSplits | None = None, device: str = "auto",
                        checkpoint: str = "best.pt") -> list[dict[str, Any]]:
    """Evaluate a run directory's checkpoint on its test split shifted by each of ``shifts``
    pixels, on a stratified subset of ``max_images`` (seed 0: the same images for every run),
    at the input size, channels and normalisation the run trained with. A linear probe's
    backbone features of each shifted view are extracted once per process (frozen)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / checkpoint).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a finished run directory (needs "
                                f"config.json and {checkpoint})")
    meta = read_json(run_dir / "config.json")
    cfg, res = TrainConfig.from_dict(meta["config"]), meta["resolved"]
    data = data if data is not None else load_run_data(cfg)
    x, y = data.test_x, data.test_y
    if max_images is not None and max_images < len(y):
        idx = stratified_indices(y, max_images, seed=0)
        x, y = x[idx], y[idx]
    dev = resolve_device(device)
    model = surgery.load(run_dir / checkpoint, map_location=dev)
    transform = BatchTransform(int(res["img_size"]), int(res["in_chans"]), res["mean"],
                               res["std"], device=dev, augment=False)
    batch = cfg.eval_batch_size or 2 * cfg.batch_size
    # a linear probe's backbone is the study's: its features of each view are extracted once
    scorer = (frozen_scorer(model, transform, batch) if cfg.regime == "linear-probe"
              else model_scorer(model, transform, batch))
    pixels = x if isinstance(x, torch.Tensor) else x[torch.arange(len(y))]  # decoded on disk
    return evaluate_shifts(scorer, pixels, y, shifts)
