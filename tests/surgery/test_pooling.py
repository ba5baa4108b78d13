"""GeM, attention, class-token and pyramid pooling against hand computations and timm's own heads."""

from __future__ import annotations

import copy
import math
import re

import pytest
import timm
import torch
import torch.nn.functional as F

from surgery import build_head, swap_head
from surgery.layout import FeatureInfo
from surgery.pooling import AttentionPool, GeMPool, PyramidPool, default_num_heads


def nchw(c: int = 2, h: int = 2, w: int = 2) -> FeatureInfo:
    return FeatureInfo(c, "NCHW", (h, w), 0, (h * 32, w * 32), (1, c, h, w))


def nlc(c: int, grid: tuple[int, ...], prefix: int = 1, cls: bool = True) -> FeatureInfo:
    n = math.prod(grid) + prefix
    return FeatureInfo(c, "NLC", grid, prefix, (64, 64), (1, n, c), class_token=cls)


# ---------------------------------------------------------------------------------------- GeM

X_POS = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]], [[0.5, 0.5], [1.0, 2.0]]]])  # (1, 2, 2, 2)


def test_gem_with_p_1_is_the_mean_of_non_negative_features():
    pool = GeMPool(nchw(), p=1.0)
    # channel means by hand: (1 + 2 + 3 + 6) / 4 = 3, (0.5 + 0.5 + 1 + 2) / 4 = 1
    torch.testing.assert_close(pool(X_POS), torch.tensor([[3.0, 1.0]]))
    gem, gap = build_head("gem", nchw(), 3, p=1), build_head("gap", nchw(), 3)
    gem.fc.load_state_dict(gap.fc.state_dict())
    torch.testing.assert_close(gem(X_POS), gap(X_POS))


def test_gem_approaches_the_maximum_as_p_grows():
    x = torch.tensor([0.25, 0.5, 1.0, 0.5]).reshape(1, 1, 2, 2)
    gaps = []
    for p in (1, 4, 16, 64, 256):
        by_hand = ((0.25 ** p + 2 * 0.5 ** p + 1.0) / 4) ** (1 / p)
        got = GeMPool(nchw(1), p=float(p))(x).item()
        assert got == pytest.approx(by_hand, rel=1e-5)
        gaps.append(1.0 - got)  # the maximum is 1
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))
    assert gaps[-1] < 0.006  # 0.25^(1/256) = 0.99460: within 0.6% of gmp


def test_gem_p_gets_the_hand_computed_gradient():
    x = torch.tensor([1.0, 4.0]).reshape(1, 1, 1, 2)
    pool = GeMPool(nchw(1, 1, 2), p=1.0)
    pool(x).sum().backward()
    # f(p) = M^(1/p), M = (1 + 4^p) / 2: df/dp = f * (M' / (p M) - ln M / p^2) at p = 1
    m, dm = 2.5, 4 * math.log(4) / 2
    assert pool.p.grad.item() == pytest.approx(2.5 * (dm / m - math.log(m)), rel=1e-5)


def test_gem_frozen_p_is_a_buffer_in_the_state_dict():
    head = build_head("gem", nchw(), 3, p=2.5, learn_p=False)
    assert "pool.p" in head.state_dict() and head.state_dict()["pool.p"].item() == 2.5
    assert all(name != "pool.p" for name, _ in head.named_parameters())
    learned = build_head("gem", nchw(), 3)
    assert dict(learned.named_parameters())["pool.p"].item() == 3.0


def test_gem_counts_negative_features_as_eps():
    x = torch.tensor([-1.0, -2.0, 4.0, 0.0]).reshape(1, 1, 2, 2)
    pool = GeMPool(nchw(1), p=1.0, eps=1e-6)
    assert pool(x).item() == pytest.approx((4.0 + 3e-6) / 4, rel=1e-6)


def test_gem_on_tokens_skips_prefix_tokens():
    info = nlc(2, (2, 2), prefix=1)
    tokens = X_POS.flatten(2).transpose(1, 2)  # (1, 4, 2)
    x = torch.cat([torch.full((1, 1, 2), 100.0), tokens], dim=1)
    torch.testing.assert_close(GeMPool(info, p=1.0)(x), torch.tensor([[3.0, 1.0]]))


# ---------------------------------------------------------------------------------- attention


def test_attention_with_zero_query_and_key_projections_is_gap_then_v_and_proj():
    pool = AttentionPool(nchw(8, 3, 2), num_heads=2)
    with torch.no_grad():
        for layer in (pool.q, pool.k):
            layer.weight.zero_()
            layer.bias.zero_()
    x = torch.randn(3, 8, 3, 2)
    mean = x.mean((2, 3))
    expected = F.linear(F.linear(mean, pool.v.weight, pool.v.bias), pool.proj.weight, pool.proj.bias)
    torch.testing.assert_close(pool(x), expected)


def test_attention_weights_on_a_hand_computed_example():
    pool = AttentionPool(FeatureInfo(2, "NCL", (2,), 0, (32, 64), (1, 2, 2)), num_heads=1)
    with torch.no_grad():
        for layer in (pool.q, pool.k, pool.v, pool.proj):
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
        pool.query.copy_(torch.tensor([[[math.log(3) * math.sqrt(2), 0.0]]]))
    x = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (B, C, L): positions (1, 0) and (0, 0)
    # scores ln 3 and 0: softmax weights 3/4 and 1/4 -> 0.75 * (1, 0) + 0.25 * (0, 0)
    torch.testing.assert_close(pool(x), torch.tensor([[0.75, 0.0]]))


def test_attention_parameters_by_hand():
    head = build_head("attn", nchw(c=64), num_classes=10)
    count = sum(p.numel() for p in head.parameters())
    assert count == (4 * 64 * 64 + 5 * 64) + (64 * 10 + 10)  # query + q, k, v, proj + fc


@pytest.mark.parametrize("channels, heads", [(512, 8), (768, 12), (96, 1), (1280, 20), (200, 2),
                                             (40, 1)])
def test_default_num_heads_is_the_largest_divisor_up_to_channels_over_64(channels, heads):
    assert default_num_heads(channels) == heads


def test_attention_refuses_heads_that_do_not_divide_the_channels():
    with pytest.raises(ValueError, match=r"num_heads=3 does not divide the 64 feature channels"):
        build_head("attn", nchw(c=64), 3, num_heads=3)


# -------------------------------------------------------------------------------- class token


def _with_timm_fc(ours, timm_model):
    ours.head.fc.load_state_dict(timm_model.get_classifier().state_dict())
    return ours.eval()


def test_token_head_is_timms_own_token_head():
    timm_model = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1, num_classes=5)
    ours = _with_timm_fc(swap_head(copy.deepcopy(timm_model), head="token", num_classes=5),
                         timm_model.eval())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))


def test_token_head_keeps_the_norm_applied_after_pooling():
    # global average models normalise after pooling (fc_norm); their own head with the class
    # token is fc_norm(x[:, 0]), and the token head moves fc_norm over from the backbone
    timm_model = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1, num_classes=5,
                                   global_pool="avg", fc_norm=True)
    with torch.no_grad():
        timm_model.fc_norm.weight.uniform_(0.5, 1.5)
    ours = swap_head(copy.deepcopy(timm_model), head="token", num_classes=5)
    assert all(r.name != "fc_norm" for r in ours.removed)
    timm_model.reset_classifier(5, global_pool="token")
    ours = _with_timm_fc(ours, timm_model.eval())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))


def test_token_head_on_pit_reads_the_class_token_of_forward_features():
    timm_model = timm.create_model("pit_ti_224", img_size=64, num_classes=4)
    ours = _with_timm_fc(swap_head(copy.deepcopy(timm_model), head="token", num_classes=4),
                         timm_model.eval())
    assert ours.features.source == "forward_features" and ours.features.class_token
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))


def test_token_head_finds_a_per_stage_class_token():
    # CoaT-Lite names its last stage's class token cls_token4; its own head reads x[:, 0]
    timm_model = timm.create_model("coat_lite_tiny", img_size=64, num_classes=4)
    ours = _with_timm_fc(swap_head(copy.deepcopy(timm_model), head="token", num_classes=4,
                                   input_size=64), timm_model.eval())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), timm_model(x))


def test_token_head_ignores_every_other_token():
    head = build_head("token", nlc(4, (2, 2), prefix=2), 3).eval()
    x = torch.randn(2, 6, 4)
    y = x.clone()
    y[:, 1:] = 1e6  # distillation and patch tokens
    torch.testing.assert_close(head(y), head(x))
    torch.testing.assert_close(head(x), head.fc(x[:, 0]))


@pytest.mark.parametrize("name, kwargs, why", [
    ("resnet18", {}, "its features are NCHW maps"),
    ("vit_little_patch16_reg4_gap_256", dict(img_size=64, depth=1),
     "its 4 prefix tokens (register or distillation) without a cls_token"),
    ("naflexvit_base_patch16_gap", dict(img_size=64, depth=1), "its 4 prefix tokens"),
])
def test_token_head_is_refused_without_a_class_token(name, kwargs, why):
    with pytest.raises(ValueError, match=rf"{name} has no class token \({re.escape(why)}.*the "
                                         r"pooling heads do \(gap, gmp, gapmp, flatten, nin, gem, attn, spp\)"):
        swap_head(name, head="token", num_classes=3, **kwargs)


# ------------------------------------------------------------------------ spatial pyramid pool


def test_spp_on_a_hand_computed_grid():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)  # rows 0 1 2 / 3 4 5 / 6 7 8
    pool = PyramidPool(nchw(1, 3, 3), levels=(1, 2))
    # level 1: max 8; level 2 (bins [0, 2) and [1, 3) a side): 4, 5, 7, 8
    torch.testing.assert_close(pool(x), torch.tensor([[8.0, 4.0, 5.0, 7.0, 8.0]]))
    avg = PyramidPool(nchw(1, 3, 3), levels=(2,), pool="avg")
    torch.testing.assert_close(avg(x), torch.tensor([[2.0, 3.0, 5.0, 6.0]]))


def test_spp_level_1_is_gmp():
    x = torch.randn(2, 4, 5, 3)
    spp = build_head("spp", nchw(4, 5, 3), 6, levels=(1,))
    gmp = build_head("gmp", nchw(4, 5, 3), 6)
    spp.fc.load_state_dict(gmp.fc.state_dict())
    torch.testing.assert_close(spp(x), gmp(x))


@pytest.mark.parametrize("pool, reference", [("max", F.adaptive_max_pool2d),
                                             ("avg", F.adaptive_avg_pool2d)])
@pytest.mark.parametrize("size", [(7, 7), (7, 5), (4, 9), (13, 6)])
def test_spp_bins_match_adaptive_pooling_per_level(pool, reference, size):
    x = torch.randn(2, 3, *size)
    spp = PyramidPool(nchw(3, *size), levels=(1, 2, 4), pool=pool)
    expected = torch.cat([reference(x, n).flatten(1) for n in (1, 2, 4)], dim=1)
    assert spp.out_features == 3 * 21
    torch.testing.assert_close(spp(x), expected)


def test_spp_takes_nhwc_and_token_layouts_through_the_same_handling():
    x = torch.randn(2, 3, 4, 6)
    ref = PyramidPool(nchw(3, 4, 6))(x)
    nhwc = FeatureInfo(3, "NHWC", (4, 6), 0, (128, 192), (1, 4, 6, 3))
    torch.testing.assert_close(PyramidPool(nhwc)(x.permute(0, 2, 3, 1)), ref)
    tokens = torch.cat([torch.full((2, 1, 3), 1e6), x.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(PyramidPool(nlc(3, (4, 6)))(tokens), ref)
    ncl = FeatureInfo(3, "NCL", (4, 6), 0, (128, 192), (1, 3, 24))
    torch.testing.assert_close(PyramidPool(ncl)(x.flatten(2)), ref)
    # another input size: the token grid keeps the aspect ratio it was built with (4x6 -> 6x9)
    big = torch.randn(1, 3, 6, 9)
    big_tokens = torch.cat([torch.zeros(1, 1, 3), big.flatten(2).transpose(1, 2)], dim=1)
    torch.testing.assert_close(PyramidPool(nlc(3, (4, 6)))(big_tokens), PyramidPool(nchw(3, 6, 9))(big))


def test_spp_on_tokens_without_a_rectangle_cuts_the_sequence():
    x = torch.randn(2, 3, 17)  # 17 tokens form no grid: 1, 4 and 16 bins along the sequence
    pool = PyramidPool(FeatureInfo(3, "NCL", (17,), 0, (64, 64), (1, 3, 17)))
    expected = torch.cat([F.adaptive_max_pool1d(x, n * n).flatten(1) for n in (1, 2, 4)], dim=1)
    torch.testing.assert_close(pool(x), expected)


def test_spp_refuses_a_grid_smaller_than_its_finest_level():
    with pytest.raises(ValueError, match=r"spp:levels=1x2x4 needs a feature grid of at least 4x4 "
                                         r"cells, got 3x3 at input 96x96; use a larger input"):
        build_head("spp", nchw(4, 3, 3), 2)
    model = swap_head("resnet18", head="spp", num_classes=2, input_size=128)  # 4x4: fine
    with pytest.raises(ValueError, match=r"got 2x2 \(input 64x64\); use a larger input size or "
                                         r"coarser levels \(e.g. spp:levels=1x2\)"):
        model(torch.randn(1, 3, 64, 64))


def _onnx_session(head, x, dynamo):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import io
    import warnings

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            dims = {0: torch.export.Dim("B"), 2: torch.export.Dim("H", min=4),
                    3: torch.export.Dim("W", min=4)}
            program = torch.onnx.export(head, (x,), dynamo=True, dynamic_shapes=(dims,))
            program.save(buffer)
        else:
            torch.onnx.export(head, (x,), buffer, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "B", 2: "H", 3: "W"}})
    return ort.InferenceSession(buffer.getvalue())


@pytest.mark.parametrize("dynamo", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_spp_exports_to_onnx_with_dynamic_sizes(dynamo):
    head = build_head("spp", nchw(8, 7, 7), 5).eval()
    session = _onnx_session(head, torch.randn(2, 8, 7, 7), dynamo)
    for shape in [(2, 8, 7, 7), (3, 8, 9, 5), (1, 8, 12, 13)]:
        x = torch.randn(shape)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), head(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("grid, levels", [(7, (1, 2, 4)), (4, (1, 2, 4)), (5, (1, 3))])
def test_pyramid_kernels_give_the_bins_the_explicit_slices_give(pool, grid, levels):
    """Eager (adaptive pooling, one kernel per level) equals the traced path (explicit slices,
    what ONNX export and the MAC counters see), also on post-ReLU features full of ties."""
    from surgery.pooling import PyramidPool
    info = FeatureInfo(channels=16, layout="NCHW", grid=(grid, grid), num_prefix_tokens=0,
                       input_size=(grid * 32, grid * 32), shape=(1, 16, grid, grid))
    head = PyramidPool(info, levels, pool)
    x = torch.randn(3, info.channels, grid, grid).relu()
    eager = head(x)
    traced = torch.jit.trace(head, x)(x)  # the explicit bins
    assert torch.equal(eager, traced) if pool == "max" else torch.allclose(eager, traced, atol=1e-6)
