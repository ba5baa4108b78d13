"""swap_head on real timm families: every head kind, two input sizes, forward and backward."""

from __future__ import annotations

import copy

import pytest
import timm
import torch

from surgery import HEADS, load_backbone, swap_head

from .families import FAMILIES, FAST, SIZES, input_size

POOLING_HEADS = [h for h in HEADS if h != "original"]
# families whose timm model holds a class token (cls_token): the ones the token head applies to
CLASS_TOKEN = ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224", "pit_ti_224")
# the small test sizes give 2x2 to 6x6 grids: pyramid pooling at levels 1 and 2
SPECS = {h: "spp:levels=1x2" if h == "spp" else h for h in HEADS}


def _cases(names):
    return [(n, h, s) for n in names for h in HEADS for s in SIZES
            if h != "token" or n in CLASS_TOKEN]


def _marks(name):
    return [] if name in FAST else [pytest.mark.slow]


ALL_CASES = [pytest.param(n, h, s, marks=_marks(n), id=f"{n}-{h}-{s}")
             for n, h, s in _cases(FAMILIES)]


def _build(name, head, size, **kw):
    return swap_head(name, head=SPECS.get(head, head), num_classes=3,
                     input_size=input_size(name, size), **FAMILIES[name](size), **kw)


@pytest.mark.parametrize("name, head, size", ALL_CASES)
def test_forward_backward(name, head, size):
    model = _build(name, head, size)
    s = input_size(name, size)
    out = model(torch.randn(2, 3, s, s))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    head_grads = [p.grad for p in model.head_parameters()]
    assert head_grads and all(g is not None and g.abs().sum() > 0 for g in head_grads)
    backbone = list(model.backbone_parameters())
    with_grad = [p for p in backbone if p.grad is not None]
    # gradients reach every backbone parameter; where the features are a list (crossvit's two
    # branches), the head reads the last item, and the other branch's final layers get none
    if model.features.from_sequence:
        assert len(with_grad) >= 0.9 * len(backbone)
    else:
        assert len(with_grad) == len(backbone)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in FAMILIES])
def test_backbone_weights_are_untouched(name):
    kwargs = FAMILIES[name](SIZES[0])
    backbone = load_backbone(name, **kwargs)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = swap_head(backbone, head="gmp", num_classes=3, input_size=input_size(name, SIZES[0]))
    assert model.backbone is backbone
    after = model.backbone.state_dict()
    removed = {k for k in before if not any(k.startswith(r.name + ".") for r in model.removed)}
    assert set(after) == removed  # same keys, minus the classifier
    assert model.removed, "a timm model has a classifier to remove"
    for key, value in after.items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0"])
def test_gap_equals_timms_own_avg_pool_head(name):
    timm_model = timm.create_model(name, num_classes=7).eval()
    ours = swap_head(copy.deepcopy(timm_model), head="gap", num_classes=7).eval()
    ours.head.fc.load_state_dict(timm_model.get_classifier().state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), timm_model(x))


def test_removed_parts_include_what_runs_after_pooling():
    model = swap_head("mobilenetv3_small_050", head="gap", num_classes=3)
    assert {r.name for r in model.removed} == {"conv_head", "classifier"}
    assert model.features.channels == 288  # the pre-pooling width, not conv_head's 1024


# Families where timm's reset_classifier(global_pool='max') refuses or does not pool patch tokens
# only. Each entry: timm options, input size, and the hand-written layout of forward_features.
MAX_FAMILIES = {
    "levit_128s": (dict(img_size=128), 128, ("tokens", 0)),
    "efficientformer_l1": ({}, 224, ("tokens", 0)),
    "beit_base_patch16_224": (dict(img_size=64, depth=2, embed_dim=64, num_heads=2), 64,
                              ("tokens", 1)),
    "mvitv2_tiny": (dict(img_size=64), 64, ("tokens", 0)),
    "volo_d1_224": (dict(img_size=64), 64, ("tokens", 1)),  # cls token, no num_prefix_tokens
    "swin_tiny_patch4_window7_224": (dict(img_size=64, window_size=2, depths=(1, 1, 1, 1)), 64,
                                     ("nhwc", 0)),
    "pit_ti_224": (dict(img_size=64), 64, ("intermediates", 0)),
    "cait_xxs24_224": (dict(img_size=64, depth=2), 64, ("tokens", 1)),
    "deit_tiny_distilled_patch16_224": (dict(img_size=64, depth=2), 64, ("tokens", 2)),
}


def _hand_max(reference, x, layout):
    kind, prefix = layout
    if kind == "intermediates":  # PiT: forward_features keeps only the class token
        return reference.forward_intermediates(x, indices=1, intermediates_only=True)[-1].amax((2, 3))
    feats = reference.forward_features(x)
    if kind == "nhwc":
        return feats.amax((1, 2))
    return feats[:, prefix:].amax(1)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[] if n in ("volo_d1_224", "deit_tiny_distilled_patch16_224", "pit_ti_224")
                 else [pytest.mark.slow]) for n in MAX_FAMILIES])
def test_gmp_takes_the_max_over_patch_tokens(name):
    kwargs, size, layout = MAX_FAMILIES[name]
    backbone = load_backbone(name, **kwargs).eval()
    reference = copy.deepcopy(backbone)
    model = swap_head(backbone, head="gmp", num_classes=4, input_size=size).eval()
    assert model.features.num_prefix_tokens == layout[1]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model.head.fc(_hand_max(reference, x, layout))
        torch.testing.assert_close(model(x), expected)


def test_volo_prefix_is_inferred_without_num_prefix_tokens():
    backbone = load_backbone("volo_d1_224", img_size=64)
    assert not hasattr(backbone, "num_prefix_tokens")
    model = swap_head(backbone, head="gap", num_classes=2, input_size=64)
    assert (model.features.num_prefix_tokens, model.features.grid) == (1, (4, 4))


def test_one_by_one_grid_warns():
    with pytest.warns(UserWarning, match="1x1 .* gap, gmp and flatten are the same"):
        swap_head("resnet18", head="gap", num_classes=2, input_size=32)


def test_original_head_is_timms_head_reset():
    timm_model = timm.create_model("convnext_atto", num_classes=5).eval()
    model = swap_head(copy.deepcopy(timm_model), head="original", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    sd = timm_model.state_dict()
    model.backbone.load_state_dict(sd)
    torch.testing.assert_close(model(x), timm_model(x))
    head_params = sum(p.numel() for p in model.head_parameters())
    assert head_params == 320 * 5 + 5 + 2 * 320  # fc + the head's LayerNorm
    assert sum(p.numel() for p in model.backbone_parameters()) + head_params == \
        sum(p.numel() for p in timm_model.parameters())


def test_channels_first_sequence_backbone_is_detected():
    # EfficientViM returns a list of (B, C, L) maps; num_features is the width of all stages
    backbone = load_backbone("efficientvim_m1")
    reference = copy.deepcopy(backbone).eval()
    model = swap_head(backbone, head="gmp", num_classes=3).eval()
    f = model.features
    assert (f.layout, f.channels, f.grid, f.from_sequence) == ("NCL", 320, (4, 4), True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head.fc(reference.forward_features(x)[-1].amax(2)))


def test_default_input_size_is_the_size_the_model_was_built_for():
    model = swap_head("vit_tiny_patch16_224", head="flatten", num_classes=2, img_size=64, depth=1)
    assert model.features.input_size == (64, 64) and model.features.grid == (4, 4)
    assert swap_head("resnet18", num_classes=2).features.input_size == (224, 224)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("first", ["gap", "original"])
def test_reswap_builds_a_new_model_and_leaves_the_old_one_alone(first):
    old = swap_head("test_resnet", head=first, num_classes=3, input_size=64).eval()
    with torch.no_grad():  # weights that differ from a fresh init
        for p in old.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before, head_type, x = _state(old), type(old.head), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out_before = old(x)
    new = swap_head(old, head="flatten").eval()
    # the old model: same head, same weights, same outputs
    assert type(old.head) is head_type and _state(old).keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in _state(old).items())
    with torch.no_grad():
        torch.testing.assert_close(old(x), out_before, rtol=0, atol=0)
    # the new model: the same backbone name, size, classes and weights, a new head
    assert new.backbone is not old.backbone and new.recipe["backbone"] == "test_resnet"
    assert new.recipe["input_size"] == [64, 64] and new.num_classes == 3
    assert new.recipe["head"] == "flatten" and new.features.grid == old.features.grid
    with torch.no_grad():
        torch.testing.assert_close(new.forward_features(x), old.forward_features(x))
    assert not any(p is q for p in new.parameters() for q in old.parameters())


def test_a_plain_timm_model_still_becomes_the_backbone():
    backbone = load_backbone("test_resnet")
    assert swap_head(backbone, head="gmp", num_classes=2).backbone is backbone


def test_an_int_hidden_is_one_layer():
    model = swap_head("test_resnet", head="gap", num_classes=2, hidden=16)
    assert model.recipe["hidden"] == [16] and model.head.fc.in_features == 16


def test_a_head_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ValueError, match=r"flatten head .* needs [\d,]+ parameters \([\d.]+ GiB\), "
                                         r"more than the .* GiB of cpu memory available"):
        swap_head("test_resnet", head="flatten", num_classes=10, input_size=1_000_000)
