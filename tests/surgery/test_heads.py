"""Head semantics on hand-made tensors: each pooling against an independent computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import surgery
from surgery import HEADS, build_head
from surgery.heads import GridMismatchError
from surgery.layout import FeatureInfo
from surgery.pooling import no_class_token_reason


def nchw(c: int = 4, h: int = 3, w: int = 2) -> FeatureInfo:
    return FeatureInfo(c, "NCHW", (h, w), 0, (h * 32, w * 32), (1, c, h, w))


def nlc(c: int = 4, grid: tuple[int, int] = (2, 3), prefix: int = 1) -> FeatureInfo:
    n = grid[0] * grid[1] + prefix
    return FeatureInfo(c, "NLC", grid, prefix, (grid[0] * 16, grid[1] * 16), (1, n, c))


def _linear(features: torch.Tensor, fc: torch.nn.Module) -> torch.Tensor:
    """The output layer by hand: features @ W^T + b with the head's own weights."""
    return features @ fc.weight.T + fc.bias


def test_registry_has_the_promised_kinds():
    assert {"gap", "gmp", "gapmp", "flatten", "nin", "original"} <= set(HEADS)


def test_gmp_on_a_hand_computed_map():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[-1.0, -4.0], [-0.5, -3.0]]]])  # (1, 2, 2, 2)
    head = build_head("gmp", nchw(2, 2, 2), num_classes=1)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 10.0]]))
        head.fc.bias.zero_()
    # max of channel 0 is 3, of channel 1 is -0.5: 1*3 + 10*(-0.5) = -2
    assert head(x).item() == pytest.approx(-2.0)


def test_gap_on_a_hand_computed_map():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 0.5]], [[-1.0, -4.0], [-0.5, -3.0]]]])
    head = build_head("gap", nchw(2, 2, 2), num_classes=1)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 10.0]]))
        head.fc.bias.fill_(1.0)
    # means 0.625 and -2.125: 0.625 - 21.25 + 1 = -19.625
    assert head(x).item() == pytest.approx(-19.625)


@pytest.mark.parametrize("kind, pool", [("gap", F.adaptive_avg_pool2d), ("gmp", F.adaptive_max_pool2d)])
def test_pooling_heads_match_torch_pooling(kind, pool):
    x = torch.randn(3, 4, 3, 2)
    head = build_head(kind, nchw(), num_classes=5)
    torch.testing.assert_close(head(x), _linear(pool(x, 1).flatten(1), head.fc))


def test_gapmp_concatenates_mean_then_max():
    x = torch.randn(2, 4, 3, 2)
    head = build_head("gapmp", nchw(), num_classes=5)
    assert head.fc.in_features == 8
    feats = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
    torch.testing.assert_close(head(x), _linear(feats, head.fc))


def test_flatten_equals_fc_of_flattened_features():
    x = torch.randn(2, 4, 3, 2)
    head = build_head("flatten", nchw(), num_classes=5)
    assert head.fc.in_features == 4 * 3 * 2
    torch.testing.assert_close(head(x), _linear(x.flatten(1), head.fc))


def test_flatten_refuses_another_grid_and_says_why():
    head = build_head("flatten", nchw(4, 3, 2), num_classes=5)
    with pytest.raises(GridMismatchError, match=r"built for a 3x2 grid .*got 4x4.*pooling heads"):
        head(torch.randn(1, 4, 4, 4))


def test_nhwc_pooling_pools_over_height_and_width():
    x = torch.randn(2, 4, 3, 2)
    info_nhwc = FeatureInfo(4, "NHWC", (3, 2), 0, (96, 64), (1, 3, 2, 4))
    mean, amax = x.mean((2, 3)), x.amax((2, 3))
    for kind, pooled in (("gap", mean), ("gmp", amax), ("gapmp", torch.cat([mean, amax], 1))):
        head = build_head(kind, info_nhwc, 5)
        torch.testing.assert_close(head(x.permute(0, 2, 3, 1)), _linear(pooled, head.fc))


@pytest.mark.parametrize("kind", ["gap", "gmp", "gapmp", "nin"])
def test_token_pooling_ignores_prefix_tokens(kind):
    info = nlc(prefix=2)
    head = build_head(kind, info, num_classes=3).eval()
    x = torch.randn(2, 2 + 6, 4)
    y = x.clone()
    y[:, :2] = 1e6  # class / distillation tokens: must not matter
    torch.testing.assert_close(head(y), head(x))
    patches = x[:, 2:]
    by_hand = {
        "gap": lambda: _linear(patches.mean(1), head.fc),
        "gmp": lambda: _linear(patches.amax(1), head.fc),
        "gapmp": lambda: _linear(torch.cat([patches.mean(1), patches.amax(1)], 1), head.fc),
        "nin": lambda: _linear(patches, head.fc).mean(1),  # per token, then average
    }
    torch.testing.assert_close(head(x), by_hand[kind]())


def test_token_flatten_uses_patch_tokens_only():
    info = nlc(prefix=1)
    head = build_head("flatten", info, num_classes=3)
    x = torch.randn(2, 7, 4)
    assert head.fc.in_features == 6 * 4
    torch.testing.assert_close(head(x), _linear(x[:, 1:].flatten(1), head.fc))


def test_nin_is_1x1_conv_then_average():
    x = torch.randn(2, 4, 3, 2)
    head = build_head("nin", nchw(), num_classes=5)
    w, b = head.fc.weight[:, :, 0, 0], head.fc.bias  # (K, C, 1, 1) -> (K, C)
    maps = torch.einsum("kc,bchw->bkhw", w, x) + b[None, :, None, None]
    torch.testing.assert_close(head.class_maps(x), maps)
    torch.testing.assert_close(head(x), maps.mean((2, 3)))


def test_nin_param_count_equals_gap():
    info = nchw(c=512)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(build_head("nin", info, 10)) == count(build_head("gap", info, 10)) == 512 * 10 + 10


def test_hidden_and_dropout_build_an_mlp():
    head = build_head("gap", nchw(c=8), num_classes=3, hidden=(16, 6), dropout=0.5)
    linears = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8, 16), (16, 6), (6, 3)]
    assert sum(isinstance(m, torch.nn.Dropout) for m in head.modules()) == 2
    x = torch.randn(2, 8, 2, 2)
    l1, l2, fc = linears
    by_hand = _linear(_linear(_linear(x.mean((2, 3)), l1).relu(), l2).relu(), fc)
    torch.testing.assert_close(head.eval()(x), by_hand)  # dropout is the identity in eval
    assert not torch.allclose(head.train()(x), by_hand)  # and active in training


@pytest.mark.parametrize("kwargs, match", [
    (dict(head="gxp"), "unknown head 'gxp'; choose from gap, gmp"),
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
    (dict(hidden=(0,)), "hidden sizes must be positive"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\)"),
])
def test_bad_head_options(kwargs, match):
    args = dict(head="gap", info=nchw(), num_classes=3) | kwargs
    with pytest.raises(ValueError, match=match):
        build_head(args.pop("head"), **args)


def test_channels_first_sequences_pool_over_the_last_dim():
    info = FeatureInfo(4, "NCL", (2, 3), 0, (64, 96), (1, 4, 6))
    x = torch.randn(2, 4, 6)
    for kind, ref in (("gap", x.mean(2)), ("gmp", x.amax(2)), ("flatten", x.flatten(1))):
        head = build_head(kind, info, num_classes=3)
        torch.testing.assert_close(head(x), _linear(ref, head.fc))
    nin = build_head("nin", info, num_classes=3)
    torch.testing.assert_close(nin(x), _linear(x.transpose(1, 2), nin.fc).mean(1))


def test_messages_name_every_registered_head_kind(monkeypatch):
    """Head lists in messages come from the registry: a kind registered later is named too, a
    class-token head or ``original`` is not offered to a model without a class token."""
    from surgery import registry

    monkeypatch.setattr(registry, "HEADS", dict(registry.HEADS))
    fixed = surgery.HeadKind("fixed_grid", "test", surgery.HEADS["flatten"].build, False)
    registry.add_head_kind(fixed)
    assert surgery.head_names().endswith(", spp, fixed_grid")
    assert "fixed_grid" not in surgery.head_names(any_input_size=True)
    err = GridMismatchError((3, 2), (4, 4), (96, 64))
    assert str(err).endswith("pooling heads (gap, gmp, gapmp, nin, gem, attn, spp) take any size")
    said = no_class_token_reason(nchw(), "resnet")
    assert said.endswith("heads do (gap, gmp, gapmp, flatten, nin, gem, attn, spp, fixed_grid)")
