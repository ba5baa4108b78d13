"""analysis.saliency and tools/cam.py: maps have the input's size, average to the logit, and exist
only for heads with global average pooling right before a linear layer."""

from __future__ import annotations

import warnings

import pytest
import torch

import surgery
from analysis.saliency import cam_support, class_activation_maps, draw_cams


def _model(head: str, name: str = "test_resnet", **kw) -> surgery.HeadSwapped:
    extra = {"img_size": 32} if name == "test_vit" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = surgery.swap_head(name, head=head, num_classes=5, input_size=kw.pop("size", 64),
                                  **kw, **extra)
    return model.eval()


@pytest.mark.parametrize("name,head,size", [
    ("test_resnet", "gap", 64), ("test_resnet", "nin", 64), ("test_resnet", "gap", 96),
    ("test_vit", "gap", 32), ("test_vit", "nin", 32)])
def test_maps_have_the_input_size_and_average_to_the_logit(name, head, size):
    model = _model(head, name, size=size)
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        logits = model(x)  # the model's own forward, not the CAM code
    cam = class_activation_maps(model, x)
    assert cam.maps.shape == (3, 5, size, size)
    assert cam.grid_maps.shape[-2:] == tuple(model.features.grid)
    pred = logits.argmax(1)
    rows = torch.arange(3)
    for maps in (cam.grid_maps, cam.maps):  # exact on the grid, kept by the resize
        avg = maps[rows, pred].mean((1, 2)) + cam.offset[pred]
        torch.testing.assert_close(avg, logits[rows, pred], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cam.logits, logits)


def test_gap_map_is_the_weighted_sum_of_feature_channels():
    model = _model("gap")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)  # (B, C, h, w)
    w = model.head.fc.weight
    by_hand = (w[2][None, :, None, None] * feats).sum(1)  # class 2, Zhou et al. eq. (1)
    cam = class_activation_maps(model, x)
    torch.testing.assert_close(cam.grid_maps[:, 2], by_hand, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cam.offset, model.head.fc.bias)


def test_nin_offset_is_zero_since_the_bias_is_in_the_map():
    cam = class_activation_maps(_model("nin"), torch.randn(1, 3, 64, 64))
    assert torch.count_nonzero(cam.offset) == 0


@pytest.mark.parametrize("head,kw,why", [
    ("gmp", {}, "pools with 'max'"), ("flatten", {}, "pools with 'flatten'"),
    ("gapmp", {}, "pools with 'avgmax'"), ("gap", {"hidden": (8,)}, "hidden layers")])
def test_heads_without_a_cam_are_refused_with_the_reason(head, kw, why):
    model = _model(head, **kw)
    assert why in cam_support(model)
    with pytest.raises(ValueError, match="Zhou et al. 2016"):
        class_activation_maps(model, torch.randn(1, 3, 64, 64))


def test_dropout_alone_keeps_the_cam():
    assert cam_support(_model("gap", dropout=0.5)) is None


def test_draw_cams_writes_a_png_grid(tmp_path):
    images = torch.randint(0, 255, (3, 1, 16, 16), dtype=torch.uint8)
    maps = torch.rand(3, 4, 4)  # a smaller map is resized to the image
    path = draw_cams(images, maps, ["a", "b", "c"], tmp_path / "cam.png", cols=2)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cam_tool_on_a_trained_run(tmp_path, capsys):
    import cam as cam_tool
    from _cli import run

    from analysis.training import TrainConfig, train

    opts = {"num_classes": 3, "n_train": 48, "n_test": 24, "image_size": 16, "channels": 1}
    for head in ("gap", "flatten"):
        train(TrainConfig(model="test_resnet", head=head, dataset="synthetic", data_options=opts,
                          val_size=12, epochs=1, batch_size=16, img_size=64, out=str(tmp_path),
                          name=head, progress=False))
    out = tmp_path / "cam.png"
    assert cam_tool.main([str(tmp_path / "gap"), "--images", "6", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and "feature grid 2x2" in capsys.readouterr().out
    code = run(lambda: cam_tool.main([str(tmp_path / "flatten"), "--out", str(out)]))
    assert code == 2 and "global average pooling" in capsys.readouterr().err
    code = run(lambda: cam_tool.main([str(tmp_path / "nothing"), "--out", str(out)]))
    assert code == 2 and "not a finished run directory" in capsys.readouterr().err
