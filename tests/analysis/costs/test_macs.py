"""count_flops: reference figures, head MACs by hand, extra handles, and the two counters agree.

All figures are MACs (one fused multiply-add = 1).
"""

from __future__ import annotations

import functools

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

import surgery
from analysis import FLOP_COUNTERS, count_flops
from analysis.costs import FVCORE_EXTRA_HANDLES

COUNTERS = sorted(FLOP_COUNTERS)


def _model(name: str, counter: str, **kwargs) -> nn.Module:
    """timm model on the meta device for the torch counter, on CPU for fvcore."""
    with torch.device("meta" if counter == "torch" else "cpu"):
        return timm.create_model(name, **kwargs)


def _swapped(name: str, head: str, counter: str, **kwargs) -> nn.Module:
    with torch.device("meta" if counter == "torch" else "cpu"):
        return surgery.swap_head(name, head=head, num_classes=10, **kwargs)


class _Fn(nn.Module):
    """Wrap a function as a module, to count a single operator."""

    def __init__(self, fn, *modules: nn.Module):
        super().__init__()
        self.fn = fn
        self.inner = nn.ModuleList(modules)  # registered, so jit tracing sees their weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


# --- reference values (issue 3): within 1% --------------------------------------------------

@pytest.mark.parametrize("counter", COUNTERS)
def test_resnet18_reference(counter: str) -> None:
    macs = count_flops(_model("resnet18", counter), (3, 224, 224), counter=counter)
    assert macs["total"] / 1e9 == pytest.approx(1.82, rel=0.01)
    assert macs["head"] is None and macs["backbone"] is None  # not a swapped model


def test_resnet50_reference_torch() -> None:
    macs = count_flops(_model("resnet50", "torch"), counter="torch")
    assert macs["total"] / 1e9 == pytest.approx(4.1, rel=0.01)


@pytest.mark.slow
def test_resnet50_reference_fvcore() -> None:
    assert count_flops(_model("resnet50", "fvcore"))["total"] / 1e9 == pytest.approx(4.1, rel=0.01)


def test_vit_base_reference_torch() -> None:
    macs = count_flops(_model("vit_base_patch16_224", "torch"), counter="torch")
    assert macs["total"] / 1e9 == pytest.approx(17.56, rel=0.01)


@pytest.mark.slow
@pytest.mark.smoke
def test_vit_base_attention_handle_fvcore(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("vit_base_patch16_224", "fvcore")
    with_handle = count_flops(model)
    assert with_handle["total"] / 1e9 == pytest.approx(17.56, rel=0.01)
    assert "scaled_dot_product_attention" not in with_handle["uncounted"]
    # 12 blocks x 12 heads x 197^2 x (64 + 64)
    assert with_handle["by_category"]["attention"] == 12 * 12 * 197 * 197 * 128
    monkeypatch.delitem(FVCORE_EXTRA_HANDLES, "aten::scaled_dot_product_attention")
    without = count_flops(model)
    assert without["total"] / 1e9 == pytest.approx(16.87, rel=0.01)
    assert without["uncounted"]["scaled_dot_product_attention"] == 12  # reported, not dropped


# --- heads by hand -----------------------------------------------------------------------------

# resnet18 at 64 px: 512 channels on a 2x2 grid, 10 classes
C, P, K = 512, 2 * 2, 10
HEAD_MACS = {
    "gap": C * P + C * K,            # one per input element to pool, then the Linear
    "gmp": C * P + C * K,            # max pooling costs the same as average pooling
    "gapmp": 2 * C * P + 2 * C * K,
    "flatten": C * P * K,
    "nin": C * K * P + K * P,        # 1x1 conv at every position, then average K maps
    "original": C * P + C * K,       # timm's adaptive avg pool + fc
}


@functools.cache
def _features_macs(name: str, counter: str, size: int, **kwargs) -> int:
    """MACs of timm's own ``forward_features`` on a fresh model: the backbone counted alone,
    as a plain module (no head, no split), so it is an independent reference for ``backbone``."""
    model = _model(name, counter, **kwargs)
    return count_flops(_Fn(model.forward_features, model), (3, size, size), counter=counter)["total"]


@pytest.mark.parametrize("counter", COUNTERS)
@pytest.mark.parametrize("head", sorted(HEAD_MACS))
def test_head_by_hand_and_backbone_counted_alone(head: str, counter: str) -> None:
    """head == the hand formula, backbone == the backbone counted on its own, so their sum
    equals the total only if the split neither drops nor double-counts anything."""
    model = _swapped("resnet18", head, counter, input_size=64)
    macs = count_flops(model, (3, 64, 64), counter=counter)
    backbone = _features_macs("resnet18", counter, 64)
    assert macs["head"] == HEAD_MACS[head]
    assert macs["backbone"] == backbone
    assert macs["total"] == backbone + HEAD_MACS[head]


# resnet18 at 128 px: a 4x4 grid (16 positions), the finest pyramid level fits
P16 = 16
NEW_HEAD_MACS = {
    # x^p at every position, the mean, the root of each channel, then the Linear
    "gem": C * P16 + C * P16 + C + C * K,
    "gem:hidden=64": 2 * C * P16 + C + C * 64 + 64 * K,
    # q on the one query, the query folded into the keys (K_h^T q_h), the values and proj on
    # the pooled features: 4 C^2; the query against the key bias: C; each head's scores and
    # weighted sum over the P positions: 2 H P C (8 heads for 512 channels by default)
    "attn": 4 * C * C + C + 2 * 8 * P16 * C + C * K,
    "attn:num_heads=2": 4 * C * C + C + 2 * 2 * P16 * C + C * K,
    # levels 1, 2, 4 on 4x4: every level reads the 16 cells once; 21 bins of C features
    "spp": 3 * P16 * C + 21 * C * K,
    "spp:pool=avg": 3 * P16 * C + 21 * C * K,
}


@pytest.mark.parametrize("counter", COUNTERS)
@pytest.mark.parametrize("head", sorted(NEW_HEAD_MACS))
def test_new_head_macs_by_hand(head: str, counter: str) -> None:
    model = _swapped("resnet18", head, counter, input_size=128)
    macs = count_flops(model, (3, 128, 128), counter=counter)
    assert macs["head"] == NEW_HEAD_MACS[head]
    assert macs["backbone"] + macs["head"] == macs["total"]


@pytest.mark.parametrize("counter", COUNTERS)
def test_spp_macs_on_overlapping_bins_by_hand(counter: str) -> None:
    """7x7 grid (224 px): level 2 bins [0, 4) and [3, 7) a side (4 + 4 rows and columns, 64
    cells read), level 4 bins of 2, 3, 3, 2 (10 x 10 = 100 cells), level 1 the 49 cells."""
    model = _swapped("resnet18", "spp", counter)
    macs = count_flops(model, (3, 224, 224), counter=counter)
    assert macs["head"] == (49 + 64 + 100) * C + 21 * C * K


@pytest.mark.parametrize("counter", COUNTERS)
def test_token_head_macs_are_the_linear_layers_only(counter: str) -> None:
    for head, expected in (("token", 192 * K), ("token:hidden=64", 192 * 64 + 64 * K)):
        model = _swapped("vit_tiny_patch16_224", head, counter, img_size=64, depth=1)
        assert count_flops(model, (3, 64, 64), counter=counter)["head"] == expected


@pytest.mark.parametrize("counter", COUNTERS)
def test_total_equals_one_pass_over_the_whole_model(counter: str) -> None:
    """The split count's total equals the whole forward counted in one pass as a plain module."""
    model = _swapped("resnet18", "flatten", counter, input_size=64)
    macs = count_flops(model, (3, 64, 64), counter=counter)
    whole = count_flops(_Fn(model.forward, model), (3, 64, 64), counter=counter)
    assert whole["head"] is None  # counted as a plain module: no split
    assert macs["total"] == whole["total"] == _features_macs("resnet18", counter, 64) + C * P * K


@pytest.mark.parametrize("counter", COUNTERS)
def test_token_heads_gap_equals_gmp(counter: str) -> None:
    """ViT at 64 px: 16 patch tokens (class token excluded) x 192 channels."""
    backbone = _features_macs("vit_tiny_patch16_224", counter, 64, img_size=64)
    for head in ("gap", "gmp"):
        model = _swapped("vit_tiny_patch16_224", head, counter, img_size=64, input_size=64)
        macs = count_flops(model, (3, 64, 64), counter=counter)
        assert macs["head"] == 16 * 192 + 192 * 10
        assert macs["backbone"] == backbone


# --- extra handles against hand computations ------------------------------------------------

@pytest.mark.parametrize("counter", COUNTERS)
def test_attention_handle_by_hand(counter: str) -> None:
    b, h, lq, lk, e, ev = 2, 4, 10, 12, 8, 6
    k = torch.randn(b, h, lk, e)
    v = torch.randn(b, h, lk, ev)

    def attend(x: torch.Tensor) -> torch.Tensor:
        q = x.reshape(b, h, lq, e)
        return F.scaled_dot_product_attention(q, k.to(x.device), v.to(x.device))

    macs = count_flops(_Fn(attend), (1, b * h * lq, e), counter=counter, batch_size=1)
    assert macs["total"] == b * h * lq * lk * (e + ev)  # Q K^T and (softmax) V


@pytest.mark.parametrize("counter", COUNTERS)
def test_lstm_and_same_padding_conv(counter: str) -> None:
    lstm = nn.LSTM(8, 16)
    macs = count_flops(_Fn(lambda x: lstm(x[0])[0], lstm), (5, 2, 8),
                       counter=counter)
    assert macs["total"] == 5 * 2 * (4 * 16 * 8 + 4 * 16 * 16)  # T*B*(|W_ih| + |W_hh|)
    conv = nn.Conv2d(3, 8, 3, padding="same")
    assert count_flops(conv, (3, 16, 16), counter=counter)["total"] == 8 * 3 * 9 * 16 * 16


@pytest.mark.parametrize("counter", COUNTERS)
def test_pooling_one_mac_per_input_element(counter: str) -> None:
    shape = (3, 8, 8)
    for fn in (lambda x: x.mean((2, 3)), lambda x: x.amax((2, 3)), lambda x: F.max_pool2d(x, 2),
               lambda x: F.avg_pool2d(x, 2), lambda x: F.adaptive_max_pool2d(x, 1)):
        assert count_flops(_Fn(fn), shape, batch_size=2, counter=counter)["total"] == 2 * 3 * 64


@pytest.mark.parametrize("counter", COUNTERS)
def test_uncounted_ops_are_reported(counter: str) -> None:
    macs = count_flops(_Fn(lambda x: torch.cumsum(x, 1)), (3, 4, 4), counter=counter)
    assert macs["total"] == 0
    assert macs["uncounted"] == {"cumsum": 1}


# --- the two counters agree -------------------------------------------------------------------

CORE = ("conv", "matmul", "attention", "rnn")
SLICE = [  # (name, timm kwargs, input size): CNNs and token models, small inputs
    ("resnet18", {}, 64),
    ("mobilenetv3_small_050", {}, 64),
    ("convnext_atto", {}, 64),
    ("vit_tiny_patch16_224", {"img_size": 64}, 64),
    ("deit_tiny_distilled_patch16_224", {"img_size": 64}, 64),
]


def _agree(name: str, kwargs: dict, size: int) -> None:
    figures = {c: count_flops(_model(name, c, **kwargs), (3, size, size), counter=c)
               for c in COUNTERS}
    fv, th = figures["fvcore"], figures["torch"]
    core_fv = sum(fv["by_category"].get(k, 0) for k in CORE)
    core_th = sum(th["by_category"].get(k, 0) for k in CORE)
    assert core_th == pytest.approx(core_fv, rel=0.01)
    assert th["total"] == pytest.approx(fv["total"], rel=0.03)


@pytest.mark.parametrize("name,kwargs,size", SLICE, ids=[s[0] for s in SLICE])
def test_counters_agree(name: str, kwargs: dict, size: int) -> None:
    _agree(name, kwargs, size)


WIDE = ["efficientnet_b0", "regnetx_002", "densenet121", "vgg11", "swin_tiny_patch4_window7_224",
        "maxvit_tiny_tf_224", "levit_128s", "efficientformer_l1", "beit_base_patch16_224",
        "eva02_tiny_patch14_224", "sequencer2d_s", "convmixer_768_32", "coatnet_0_rw_224",
        "mvitv2_tiny", "volo_d1_224", "cait_xxs24_224", "pit_ti_224", "tnt_s_patch16_224"]


@pytest.mark.slow
@pytest.mark.parametrize("name", WIDE)
def test_counters_agree_wide(name: str) -> None:
    size = timm.get_pretrained_cfg(name).input_size[-1]
    _agree(name, {}, size)


# --- bad input --------------------------------------------------------------------------------

def test_bad_input() -> None:
    model = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="unknown counter 'ptflops'; choose from fvcore, torch"):
        count_flops(model, counter="ptflops")
    with pytest.raises(ValueError, match="input_size"):
        count_flops(model, (224, 224))
    with pytest.raises(ValueError, match="batch_size"):
        count_flops(model, batch_size=0)
    with torch.device("meta"):
        meta = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="counter='torch'"):
        count_flops(meta, counter="fvcore")


@pytest.mark.parametrize("counter", COUNTERS)
def test_training_mode_restored_and_weights_untouched(counter: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (3, 8, 8), counter=counter)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
