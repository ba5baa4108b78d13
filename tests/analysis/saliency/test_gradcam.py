"""Grad-CAM through captum: the known identity with CAM on gap heads, an independent autograd
computation for the token head, every head kind, and the method choice."""

from __future__ import annotations

import warnings

import pytest
import torch

import surgery
from analysis.saliency import choose_method, class_activation_maps, grad_cam, head_maps

pytest.importorskip("captum")


def _model(head: str, name: str = "test_resnet", size: int = 64, **kw) -> surgery.HeadSwapped:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return surgery.swap_head(name, head=head, num_classes=5, input_size=size, **kw).eval()


@pytest.mark.parametrize("name, kw, size", [("test_resnet", {}, 96),
                                            ("test_vit", {"img_size": 32}, 32)])
def test_gradcam_of_a_gap_head_is_relu_of_cam_over_the_grid_size(name, kw, size):
    model = _model("gap", name, size, **kw)
    x = torch.randn(3, 3, size, size)
    maps, logits, where = grad_cam(model, x)
    cam = class_activation_maps(model, x)
    pred = logits.argmax(1)
    h, w = cam.grid_maps.shape[-2:]
    by_cam = cam.grid_maps[torch.arange(3), pred].relu() / (h * w)  # d logit / d f = w_kc / hw
    assert where == "features" and maps.shape == (3, h, w)
    torch.testing.assert_close(maps, by_cam, atol=1e-6, rtol=1e-5)
    norm = lambda m: m / m.flatten(1).amax(1)[:, None, None]  # noqa: E731
    torch.testing.assert_close(norm(maps), norm(by_cam), atol=1e-5, rtol=1e-4)


def test_token_head_maps_come_from_the_last_blocks_input_as_autograd_says():
    model = _model("token", "vit_tiny_patch16_224", 64, img_size=64, depth=2)
    x = torch.randn(2, 3, 64, 64)
    maps, logits, where = grad_cam(model, x, target=torch.tensor([1, 3]))
    assert where == "input of blocks.1" and maps.shape == (2, 4, 4)
    seen = {}

    def keep(module, args):
        args[0].retain_grad()
        seen["x"] = args[0]

    handle = model.backbone.blocks[1].register_forward_pre_hook(keep)
    try:
        out = model(x)
    finally:
        handle.remove()
    out[[0, 1], [1, 3]].sum().backward()
    acts, grads = seen["x"][:, 1:], seen["x"].grad[:, 1:]  # patch tokens (B, 16, C)
    by_hand = (grads.mean(1, keepdim=True) * acts).sum(2).relu().reshape(2, 4, 4)
    torch.testing.assert_close(maps, by_hand, atol=1e-6, rtol=1e-4)
    assert maps.sum() > 0


@pytest.mark.parametrize("head", ["gmp", "gapmp", "gem", "attn", "spp:levels=1x2", "flatten",
                                  "nin", "gap:hidden=8"])
def test_every_head_gets_a_map_that_depends_on_the_class(head):
    model = _model(head, size=96)
    x = torch.randn(2, 3, 96, 96)
    a = grad_cam(model, x, target=torch.tensor([0, 0]))[0]
    b = grad_cam(model, x, target=torch.tensor([1, 1]))[0]
    assert a.shape == (2, 3, 3) and torch.isfinite(a).all() and (a >= 0).all()
    assert not torch.allclose(a, b)


def test_nhwc_features_are_drawn_on_their_grid():
    model = _model("gem", "swin_tiny_patch4_window7_224", 64, img_size=64, window_size=2,
                   depths=(1, 1, 1, 1))
    result = head_maps(model, torch.randn(2, 3, 64, 64))
    assert result.method == "gradcam" and result.maps.shape == (2, 64, 64)


def test_a_token_head_without_a_patch_grid_is_refused():
    model = _model("token", "pit_ti_224", 64, img_size=64)
    with pytest.raises(ValueError, match="no patch grid, as PiT's"):
        grad_cam(model, torch.randn(1, 3, 64, 64))


def test_method_choice():
    assert choose_method(_model("gap")) == "cam" and choose_method(_model("nin")) == "cam"
    assert choose_method(_model("gmp")) == "gradcam"
    assert choose_method(_model("gap"), "gradcam") == "gradcam"
    with pytest.raises(ValueError, match=r"this head is 'gem'.*--method gradcam draws every head"):
        choose_method(_model("gem"), "cam")
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        choose_method(_model("gap"), "lime")


def test_a_zero_gradcam_map_has_a_signed_alternative_and_is_named():
    """A class whose evidence is negative at every position: Grad-CAM's ReLU leaves a map of
    zeros, which is recognised as flat; gradcam-abs draws the magnitude of the same sum."""
    from analysis.saliency import flat_maps

    model = _model("gap")
    with torch.no_grad():
        model.head.fc.weight[0] = -1.0  # features after the last ReLU are >= 0: CAM_0 <= 0
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, dtype=torch.long)
    zero = head_maps(model, x, "gradcam", target)
    assert torch.all(zero.maps == 0) and flat_maps(zero.maps).all()
    signed = head_maps(model, x, "gradcam-abs", target)
    assert signed.method == "gradcam-abs" and not flat_maps(signed.maps).any()
    cam = class_activation_maps(model, x).grid_maps[:, 0]
    raw, _, _ = grad_cam(model, x, target, relu=False)
    torch.testing.assert_close(raw, cam.abs() / cam[0].numel(), atol=1e-6, rtol=1e-5)
