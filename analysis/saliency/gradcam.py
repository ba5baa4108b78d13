"""Grad-CAM (Selvaraju et al. 2017) for every head, through captum's ``LayerGradCam``.

Grad-CAM weighs each feature channel by the average gradient of the class score over the grid,
so it works for any head, not only where exact CAM exists (gap, nin); on a gap head without
hidden layers it equals ReLU(CAM_k) / (h w). A small adapter turns features of any layout into
(B, C, h, w) maps for captum and back. For the token head the maps come from the input of the
last block in timm's ``feature_info``, since the class score does not depend on the final patch
tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

try:  # optional: pip install captum (headswap[saliency])
    from captum.attr import LayerGradCam

    has_captum = True
except ImportError:  # pragma: no cover - exercised where captum is missing
    LayerGradCam = None
    has_captum = False

__all__ = ["grad_cam", "gradcam_layer", "has_captum", "upsample"]


class _GridTap(nn.Module):
    """Turns a layer input of any layout into maps (B, C, h, w), passes them through ``tap``
    (the layer captum reads) and back, then calls ``inner`` (Identity, or the wrapped block)."""

    def __init__(self, inner: nn.Module, channels: int, grid: tuple[int, int], layout: str):
        super().__init__()
        self.inner, self.tap = inner, nn.Identity()
        self.channels, self.grid, self.layout = channels, grid, layout

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return self.inner(self._through_maps(x), *args, **kwargs)

    def _through_maps(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        if self.layout == "NCHW":
            return self.tap(x)
        if self.layout == "NHWC":
            return self.tap(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        if self.layout == "NCL":
            return self.tap(x.reshape(x.shape[0], self.channels, h, w)).flatten(2)
        prefix = x.shape[1] - h * w  # NLC: prefix tokens first, then the patch grid
        maps = x[:, prefix:].transpose(1, 2).reshape(x.shape[0], self.channels, h, w)
        patches = self.tap(maps).flatten(2).transpose(1, 2)
        return torch.cat([x[:, :prefix], patches], dim=1)


class _FeaturesThenHead(nn.Module):
    """A swapped model as backbone -> tap on the features -> head (what its forward does)."""

    def __init__(self, model: nn.Module, tap: _GridTap):
        super().__init__()
        self.model, self.features_tap = model, tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        swapped: Any = self.model
        return swapped.forward_head(self.features_tap(swapped.forward_features(x)))


def _block_layout(x: torch.Tensor, channels: int, grid: tuple[int, int]) -> str | None:
    """The layout of a block input that carries the final grid, or None if it does not."""
    h, w = grid
    if x.dim() == 4 and tuple(x.shape[1:]) == (h, w, channels):
        return "NHWC"
    if x.dim() == 4 and tuple(x.shape[1:]) == (channels, h, w):
        return "NCHW"
    if x.dim() == 3 and x.shape[2] == channels and 0 <= x.shape[1] - h * w <= 16:
        return "NLC"
    return None


def _last_block(model: nn.Module) -> tuple[str, nn.Module]:
    backbone = getattr(model, "backbone", model)
    info = getattr(backbone, "feature_info", None) or []
    name = info[-1].get("module") if info else None
    if not name:
        raise ValueError("Grad-CAM for the token head needs the model's last block (timm's "
                         "feature_info lists none for this model)")
    return name, backbone.get_submodule(name)


def _tap_last_block(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, _GridTap]:
    """A copy of ``model`` whose last block's input passes through a grid tap."""
    info: Any = model.features
    name, block = _last_block(model)
    seen: dict[str, Any] = {}
    handle = block.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0] if a else None))
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        handle.remove()
    first = seen.get("x")
    layout = _block_layout(first, info.channels, info.grid) if isinstance(first, torch.Tensor) \
        else None
    if layout is None:
        shape = tuple(first.shape) if isinstance(first, torch.Tensor) else (
            "never called as one module" if first is None else type(first).__name__)
        raise ValueError(f"Grad-CAM for the token head reads the input of the last block "
                         f"({name}); here it is {shape}, not the {info.channels}-channel "
                         f"{'x'.join(map(str, info.grid))} grid of the features")
    twin: Any = copy.deepcopy(model)
    tap = _GridTap(twin.backbone.get_submodule(name), info.channels, tuple(info.grid), layout)
    parent, _, child = name.rpartition(".")
    setattr(twin.backbone.get_submodule(parent) if parent else twin.backbone, child, tap)
    return twin, tap


def gradcam_layer(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, nn.Module, str]:
    """The module captum runs, the layer whose maps it reads, and where that layer is."""
    from surgery import HEADS

    info = getattr(model, "features", None)
    recipe: dict[str, Any] = getattr(model, "recipe", {})
    if info is None or not hasattr(model, "forward_head"):
        raise ValueError("Grad-CAM needs a model built by surgery.swap_head (.features, .head)")
    token = HEADS[recipe["head"]].needs_class_token
    if token and info.num_positions == 0:
        raise ValueError("this token head reads forward_features' class tokens alone (no patch "
                         "grid, as PiT's): no map to draw; the pooling heads of this model have one")
    if len(info.grid) != 2:
        raise ValueError(f"the features are {info.grid[0]} tokens without a 2-D grid: no map")
    if token:
        twin, tap = _tap_last_block(model, x)
        return twin, tap.tap, f"input of {_last_block(model)[0]}"
    tap = _GridTap(nn.Identity(), info.channels, tuple(info.grid), info.layout)
    return _FeaturesThenHead(model, tap), tap.tap, "features"


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None,
             relu: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Grad-CAM maps (B, h, w) on the feature grid for class ``target`` (default: predicted),
    not normalised; also the logits and where the maps come from. ``relu``: Grad-CAM's ReLU
    (positive evidence only); without it, the magnitude of the channel-weighted sum (evidence
    for or against the class), which is not zero where Grad-CAM's is.

    Raises ValueError when captum is missing or the model has no grid to draw on.
    """
    if not has_captum:
        raise ValueError("Grad-CAM needs captum: pip install captum (or headswap[saliency])")
    was_training = model.training
    model.eval()
    try:
        runner, layer, where = gradcam_layer(model, x)
        runner.eval()
        with torch.no_grad():
            logits = runner(x)
        if target is None:
            target = logits.argmax(1)
        forward: Callable[..., torch.Tensor] = runner
        maps = LayerGradCam(forward, layer).attribute(x, target=target.to(x.device),
                                                      relu_attributions=relu)
        if not relu:
            maps = maps.abs()
    finally:
        model.train(was_training)
    return maps[:, 0].detach(), logits, where


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) maps resized bilinearly to the input size (B, H, W)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
