"""Class activation maps (Zhou et al. 2016): where in the image the evidence for a class lies.

With global average pooling right before a linear layer the logit of class k is
``b_k + mean_xy sum_c w_kc f_c(x, y)``, so ``M_k = sum_c w_kc f_c`` is a map whose average plus
the bias is the logit: true for a ``gap`` head without hidden layers and for ``nin`` (bias
inside the map, offset zero); other heads are refused with the reason. Maps are resized
bilinearly to the input size, which keeps ``maps[k].mean() + offset[k] == logit[k]`` for input
sizes that are whole multiples of the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..reporting import pyplot, save_figure

__all__ = ["CamResult", "class_activation_maps", "cam_support", "draw_cams", "draw_runs",
           "flat_map_warning"]


@dataclass
class CamResult:
    """``maps`` (B, K, H, W) at the input size, ``grid_maps`` (B, K, h, w) on the feature grid,
    ``logits`` (B, K) from the model's own forward, ``offset`` (K,): what the average of a map
    misses of its logit (the output bias for gap, zero for nin)."""

    maps: torch.Tensor
    grid_maps: torch.Tensor
    logits: torch.Tensor
    offset: torch.Tensor


def cam_support(model: nn.Module) -> str | None:
    """None when ``model`` (a surgery.HeadSwapped) supports CAM, else the reason it does not."""
    from surgery import FeaturePool, NinHead, PoolHead

    head = getattr(model, "head", None)
    info = getattr(model, "features", None)
    if head is None or info is None:
        return "CAM needs a model built by surgery.swap_head (a .head and .features)"
    if info.layout == "NLC" and len(info.grid) != 2:
        return f"the features are {info.grid[0]} tokens without a 2-D grid: no map to draw"
    if isinstance(head, NinHead):
        return None
    if not isinstance(head, PoolHead) or not isinstance(head.pool, FeaturePool) \
            or head.pool.pool != "avg":
        recipe: dict[str, Any] = getattr(model, "recipe", {})
        kind = recipe.get("head_spec", type(head).__name__)
        return (f"CAM needs global average pooling right before the output layer (Zhou et al. "
                f"2016); this head is {kind!r}: use a gap or nin head, or Grad-CAM")
    if any(isinstance(m, nn.Linear) for m in head.pre_logits):
        return ("CAM needs global average pooling right before the output layer (Zhou et al. "
                "2016); this gap head has hidden layers, so the class score is not linear in the "
                "features: use a gap head without --hidden, or nin")
    return None


def _tokens_to_grid(x: torch.Tensor, info: Any) -> torch.Tensor:
    """Patch tokens (B, L, C) as (B, C, h, w): the probed grid, or a square one at other sizes."""
    if len(info.grid) == 2 and info.grid[0] * info.grid[1] == x.shape[1]:
        h, w = info.grid
    else:
        h = w = int(round(x.shape[1] ** 0.5))
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


@torch.no_grad()
def class_activation_maps(model: nn.Module, x: torch.Tensor) -> CamResult:
    """Class activation maps of every class for the batch ``x`` (model input, normalised).

    Raises ValueError (with the reason) for heads that have no CAM; see :func:`cam_support`.
    """
    from surgery import NinHead, feature_grid

    reason = cam_support(model)
    if reason is not None:
        raise ValueError(reason)
    was_training = model.training
    model.eval()
    try:
        swapped: Any = model
        feats = swapped.forward_features(x)
        logits = swapped.forward_head(feats)
        head: Any = model.head
        info: Any = model.features
        if isinstance(head, NinHead):
            maps = head.class_maps(feats)
            if maps.dim() == 3:  # (B, L, K) patch tokens
                maps = _tokens_to_grid(maps, info)
            offset = torch.zeros(maps.shape[1], device=maps.device)
        else:
            f = feature_grid(feats, info)
            maps = torch.einsum("kc,bchw->bkhw", head.fc.weight, f)
            offset = head.fc.bias.detach().clone()
    finally:
        model.train(was_training)
    full = F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return CamResult(full, maps, logits, offset)


def flat_map_warning(result: CamResult) -> str | None:
    """The warning to show when the maps cannot say where: a 1x1 feature grid gives one value per
    map, so every tile is flat (None when the grid has more than one position)."""
    h, w = result.grid_maps.shape[-2:]
    if h * w > 1:
        return None
    H, W = result.maps.shape[-2:]
    return (f"the feature grid is 1x1 at input {H}x{W}: each map is a single value, so the tiles "
            "are flat and show nothing about where the model looks; train at a larger --img-size "
            "(a grid of 2x2 or more) to see it")


def draw_cams(images: torch.Tensor, maps: torch.Tensor, titles: Sequence[str],
              path: str | Path, alpha: float = 0.5, cols: int = 8) -> Path:
    """Images (B, C, H, W; uint8 or 0..1 floats) with one map each (B, H, W) overlaid, as a PNG
    grid. Each map is scaled to its own min..max (jet colours), so compare where, not how much."""
    plt = pyplot()
    imgs = images.detach().float().cpu()
    if imgs.max() > 1.5:
        imgs = imgs / 255.0
    n = len(imgs)
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.35 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        _overlay(ax, imgs[i], maps[i], alpha)
        ax.set_title(titles[i] if i < len(titles) else "", fontsize=7)
    return save_figure(fig, path)


def _overlay(ax: Any, img: torch.Tensor, m: torch.Tensor, alpha: float) -> None:
    """One image (C, H, W in 0..1) with its map scaled to its own range, jet colours; a
    constant map is not drawn: the panel says so instead of showing a blank colour."""
    m = m.detach().float().cpu()
    img = img.permute(1, 2, 0)
    if float(m.max() - m.min()) <= 1e-12 * max(1.0, float(m.abs().max())):
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        what = "zero" if float(m.abs().max()) == 0.0 else "flat"
        ax.text(0.5, 0.5, f"{what} map:\nno where\n(see the log)", transform=ax.transAxes,
                ha="center", va="center", fontsize=7, color="black",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        return
    if tuple(m.shape) != tuple(img.shape[:2]):
        m = F.interpolate(m[None, None], size=img.shape[:2], mode="bilinear",
                          align_corners=False)[0, 0]
    m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-12)
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    ax.imshow(m, cmap="jet", alpha=alpha, vmin=0, vmax=1)


def draw_runs(images: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor, Sequence[str]]],
              path: str | Path, alpha: float = 0.5) -> Path:
    """Several models on the same images, side by side: one row per model (its label, maps
    (B, H, W), one title per image), one column per image, as a PNG."""
    plt = pyplot()
    imgs = images.detach().float().cpu()
    if imgs.max() > 1.5:
        imgs = imgs / 255.0
    n = len(imgs)
    fig, axes = plt.subplots(len(rows), n, figsize=(1.9 * n + 1.2, 2.2 * len(rows)),
                             squeeze=False)
    for r, (label, maps, titles) in enumerate(rows):
        for i in range(n):
            ax = axes[r, i]
            ax.set_xticks([])
            ax.set_yticks([])
            _overlay(ax, imgs[i], maps[i], alpha)
            ax.set_title(titles[i] if i < len(titles) else "", fontsize=7)
        axes[r, 0].set_ylabel(label, fontsize=8)
    return save_figure(fig, path)
