"""Input-size robustness: a trained model evaluated at smaller and larger inputs than it saw.

Pooling heads (gap, gmp, gapmp, nin) reduce whatever grid the backbone hands them, so they run at
any size; how well they do is the question. A Flatten head was built for one grid: at a size whose
grid differs it refuses (surgery raises ValueError), and that refusal is recorded with its reason
rather than as a failure. At a size that happens to give the same grid (48 and 64 px both give
2x2 at stride 32) Flatten runs, and is evaluated like the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import surgery
from surgery import one_line, read_json

from ..data import BatchTransform, DataSplits, Images, stratified_indices, take
from ..machine import resolve_device
from ..training import config_from_record, evaluate, load_run_data
from .frozen import frozen_scorer

__all__ = ["default_sizes", "evaluate_sizes", "evaluate_run", "DEFAULT_FACTORS"]

DEFAULT_FACTORS = (0.5, 0.75, 1.0, 1.25, 1.5)


def default_sizes(trained: int, factors: Sequence[float] = DEFAULT_FACTORS,
                  multiple: int = 8) -> list[int]:
    """Input sizes (px) around ``trained``: each factor times it, rounded to ``multiple``."""
    sizes = {max(multiple, int(round(trained * f / multiple)) * multiple) for f in factors}
    return sorted(sizes | {trained})


def evaluate_sizes(model: nn.Module, x: Images, y: torch.Tensor, sizes: Sequence[int],
                   in_chans: int, mean: Sequence[float], std: Sequence[float],
                   device: torch.device | str = "cpu", batch_size: int = 256,
                   frozen: bool = False) -> list[dict[str, Any]]:
    """Test loss and accuracy of ``model`` on uint8 images ``x`` resized to each of ``sizes``.

    Returns one row per size: ``img_size``, ``status`` (``ok``, ``refused``: the head rejects
    this size, ``failed``: the backbone cannot run at it) and ``test_acc`` / ``test_loss`` or
    ``reason``. ``frozen``: the backbone is one a study shares (a linear probe), so each size's
    features are extracted once per process (analysis.studies.frozen).
    """
    device = resolve_device(device)
    model.to(device).eval()
    rows = []
    for px in sizes:
        transform = BatchTransform(int(px), in_chans, mean, std, device=device, augment=False)
        row: dict[str, Any] = {"img_size": int(px), "images": len(y)}
        try:
            if frozen:
                loss, acc = frozen_scorer(model, transform, batch_size)(x, y, f"size{px}")
            else:
                loss, acc = evaluate(model, x, y, transform, batch_size)
            row.update(status="ok", test_acc=acc, test_loss=loss)
        except ValueError as err:  # the head refuses (Flatten: grid mismatch)
            row.update(status="refused", reason=str(err))
        except RuntimeError as err:  # the backbone cannot run (input smaller than a kernel)
            row.update(status="failed", reason=one_line(err, with_type=False))
        rows.append(row)
    return rows


def evaluate_run(run_dir: str | Path, sizes: Sequence[int] | None = None,
                 max_images: int | None = 2000, data: DataSplits | None = None,
                 device: str = "auto", checkpoint: str = "best.pt") -> list[dict[str, Any]]:
    """Evaluate a run directory's checkpoint on its test split at each of ``sizes``.

    ``sizes`` defaults to :func:`default_sizes` of the size it was trained at; ``max_images``
    takes a stratified subset of the test split (None: all of it) to bound the cost; ``data``
    skips reading the data set again when the caller holds it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / checkpoint).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a finished run directory (needs "
                                f"config.json and {checkpoint})")
    meta = read_json(run_dir / "config.json")
    cfg, res = config_from_record(meta["config"]), meta["resolved"]
    if data is None:
        data = load_run_data(cfg)
    x, y = data.test_x, data.test_y
    if max_images is not None and max_images < len(y):
        idx = stratified_indices(y, max_images, seed=0)
        x, y = take(x, idx), y[idx]
    dev = resolve_device(device)
    model = surgery.load(run_dir / checkpoint, map_location=dev)
    sizes = list(sizes) if sizes else default_sizes(int(res["img_size"]))
    return evaluate_sizes(model, x, y, sizes, int(res["in_chans"]), res["mean"], res["std"], dev,
                          batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
                          frozen=cfg.regime == "linear-probe")
