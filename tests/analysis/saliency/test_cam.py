"""analysis.saliency and tools/cam.py: maps have the input's size, average to the logit, and exist
only for heads with global average pooling right before a linear layer; the drawing puts each map
over its own image, in a grid."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import surgery
from analysis.saliency import cam_support, class_activation_maps, draw_cams, flat_map_warning


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
    ("gmp", {}, "this head is 'gmp'"), ("flatten", {}, "this head is 'flatten'"),
    ("spp:levels=1x2:pool=avg", {}, "this head is 'spp:levels=1x2:pool=avg'"),
    ("gem:p=1", {}, "this head is 'gem:p=1'"),
    ("gapmp", {}, "this head is 'gapmp'"), ("gap", {"hidden": (8,)}, "hidden layers")])
def test_heads_without_a_cam_are_refused_with_the_reason(head, kw, why):
    model = _model(head, **kw)
    assert why in cam_support(model)
    with pytest.raises(ValueError, match="Zhou et al. 2016"):
        class_activation_maps(model, torch.randn(1, 3, 64, 64))


def test_dropout_alone_keeps_the_cam():
    assert cam_support(_model("gap", dropout=0.5)) is None


def test_flat_map_warning_only_for_a_one_by_one_grid():
    assert flat_map_warning(class_activation_maps(_model("gap"), torch.randn(1, 3, 64, 64))) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cam = class_activation_maps(_model("gap", size=16), torch.randn(1, 3, 16, 16))
    assert "1x1 at input 16x16" in flat_map_warning(cam)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D mask."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _panels(path) -> tuple[np.ndarray, list[list[tuple[slice, slice] | None]]]:
    """Decode a PNG; find the grid of coloured panels (the map overlay) on the white page.

    Returns the RGB pixels (floats) and, per grid row and column, the panel's pixel box or None
    where the cell is empty. Titles are black text, the page white, the images gray: only the
    jet overlay is coloured.
    """
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    coloured = rgb.max(2) - rgb.min(2) > 30
    rows, cols = _runs(coloured.any(1)), _runs(coloured.any(0))
    grid = [[(slice(*r), slice(*c)) if coloured[slice(*r), slice(*c)].any() else None
             for c in cols] for r in rows]
    return rgb, grid


def test_draw_cams_draws_each_map_over_its_image_in_a_grid(tmp_path):
    images = torch.full((3, 1, 16, 16), 128, dtype=torch.uint8)  # gray: only the maps differ
    # smaller than the images (resized to them), each on its own scale (scaled to its min..max)
    maps = torch.tensor([5.0, -3.0, 0.0])[:, None, None].repeat(1, 4, 4)
    maps[0, :, :2] = 7.0  # high on the left
    maps[1, :2, :] = -1.0  # high at the top
    maps[2, :, 2:] = 0.01  # high on the right
    path = draw_cams(images, maps, ["a", "b", "c"], tmp_path / "cam.png", cols=2)
    rgb, grid = _panels(path)
    assert len(grid) == 2 and all(len(row) == 2 for row in grid)  # 3 images, 2 columns
    panels = [cell for row in grid for cell in row]
    assert panels[3] is None and None not in panels[:3]  # row-major, the last cell empty
    for panel, (hi, lo) in zip(panels, [("left", "right"), ("top", "bottom"), ("right", "left")],
                               strict=False):
        px = rgb[panel]
        h, w = px.shape[0] // 2, px.shape[1] // 2
        half = {"left": px[:, :w], "right": px[:, w:], "top": px[:h], "bottom": px[h:]}
        red = {k: (v[..., 0] - v[..., 2]).mean() for k, v in half.items()}  # jet: high red, low blue
        assert red[hi] > red[lo] + 50


def test_cam_tool_on_a_trained_run(tmp_path, capsys):
    import cam as cam_tool
    from _cli import run

    from analysis.training import TrainConfig, train

    opts = {"num_classes": 3, "n_train": 48, "n_test": 24, "image_size": 16, "channels": 1}
    for head, size in (("gap", 64), ("flatten", 64), ("gap", 16)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            train(TrainConfig(model="test_resnet", head=head, dataset="synthetic",
                              data_options=opts, val_size=12, epochs=1, batch_size=16,
                              img_size=size, out=str(tmp_path), name=f"{head}{size}",
                              progress=False))
    out = tmp_path / "cam.png"
    assert cam_tool.main([str(tmp_path / "gap64"), "--images", "6", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "gap64: cam maps" in captured.out and "warning" not in captured.err
    _, grid = _panels(out)
    assert len(grid) == 1 and len(grid[0]) == 6 and None not in grid[0]  # 6 images, one row
    both = [str(tmp_path / "gap64"), str(tmp_path / "flatten64")]
    assert cam_tool.main([*both, "--images", "4", "--out", str(out)]) == 0  # side by side
    text = capsys.readouterr().out
    assert "4 images x 2 run(s)" in text and "flatten64: gradcam maps from the features" in text
    _, grid = _panels(out)
    assert len(grid) == 2 and all(len(row) == 4 and None not in row for row in grid)  # 2 runs
    # the format the suffix names, or a refusal before any work
    jpg = tmp_path / "cam.jpg"
    assert cam_tool.main([str(tmp_path / "gap64"), "--images", "2", "--out", str(jpg)]) == 0
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG's start-of-image marker
    code = run(lambda: cam_tool.main([str(tmp_path / "gap64"), "--out", str(tmp_path / "c.xyz")]))
    assert code == 2 and "unknown image format '.xyz'; use one of" in capsys.readouterr().err
    # a 1x1 grid: flat tiles, said in one warning line
    assert cam_tool.main([str(tmp_path / "gap16"), "--images", "2", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: gap16: the feature grid is 1x1 at input 16 px")
    assert err.count("\n") == 1
    code = run(lambda: cam_tool.main([str(tmp_path / "flatten64"), "--method", "cam",
                                      "--out", str(out)]))
    assert code == 2 and "global average pooling" in capsys.readouterr().err
    train(TrainConfig(model="test_resnet", head="gap", dataset="synthetic", data_options=opts,
                      val_size=12, epochs=1, batch_size=16, img_size=96, out=str(tmp_path),
                      name="big", progress=False))
    code = run(lambda: cam_tool.main([str(tmp_path / "gap64"), str(tmp_path / "big"),
                                      "--out", str(out)]))
    assert code == 2 and "take different inputs (img_size 96 vs 64)" in capsys.readouterr().err
    code = run(lambda: cam_tool.main([str(tmp_path / "nothing"), "--out", str(out)]))
    assert code == 2 and "not a finished run directory" in capsys.readouterr().err


def test_side_by_side_runs_must_share_the_resize_policy_only_for_image_files():
    import cam as cam_tool

    def runs(*cfgs):
        res = {"img_size": 32, "in_chans": 3}
        return [(Path(f"r{i}"), None, c, res) for i, c in enumerate(cfgs)]

    folder = {"dataset": "imagefolder", "data_dir": "photos"}
    with pytest.raises(ValueError, match=r"different data \(resize 'pad' vs 'squash'\)"):
        cam_tool._check_same_inputs(runs(folder, dict(folder, resize="pad")))  # old: squashed
    cam_tool._check_same_inputs(runs(folder, dict(folder, resize="squash")))
    fashion = {"dataset": "fashion-mnist"}                  # no image files: the policy is moot
    cam_tool._check_same_inputs(runs(fashion, dict(fashion, resize="shorter-crop")))


def test_a_constant_map_is_said_in_its_panel_not_drawn_blank(monkeypatch, tmp_path):
    """draw_runs on a zero map: the panel shows the image and says the map is zero."""
    from analysis.saliency import cam as cam_mod

    texts = []

    def keep(fig, path, dpi=110):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        return Path(path)

    monkeypatch.setattr(cam_mod, "save_figure", keep)
    images = torch.full((2, 1, 16, 16), 128, dtype=torch.uint8)
    maps = torch.zeros(2, 16, 16)
    maps[1, :, :8] = 1.0
    cam_mod.draw_runs(images, [("flatten", maps, ["a", "b"])], tmp_path / "x.png")
    assert len(texts) == 1 and texts[0].startswith("zero map")
