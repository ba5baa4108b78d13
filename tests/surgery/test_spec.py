"""Head specs: one parser for every ``KIND:key=value`` string, the options each kind declares."""

from __future__ import annotations

import pytest
import torch

from surgery import HEADS, head_label, load, make_spec, parse_head, register_head, save, swap_head


def test_every_kind_declares_its_options_and_every_buildable_kind_takes_the_mlp():
    for name, kind in HEADS.items():
        names = [o.name for o in kind.options]
        if name == "original":
            assert names == []
            continue
        assert names[-2:] == ["hidden", "dropout"], name
        assert all(o.type in ("int", "float", "bool", "ints", "choice") and o.help
                   for o in kind.options)
    assert [o.name for o in HEADS["gem"].options] == ["p", "learn_p", "eps", "hidden", "dropout"]
    assert (HEADS["gem"].option("p").default, HEADS["spp"].option("levels").default) == (3.0, (1, 2, 4))


@pytest.mark.parametrize("text, kind, options, canonical, label", [
    ("gap", "gap", {}, "gap", "gap"),
    ("gem:p=3:learn_p=0", "gem", {"learn_p": False}, "gem:learn_p=0", "gem-learn_p0"),
    ("gem:p=2.5", "gem", {"p": 2.5}, "gem:p=2.5", "gem-p2.5"),
    ("spp:levels=1x2x4:pool=avg", "spp", {"pool": "avg"}, "spp:pool=avg", "spp-avg"),
    ("spp:levels=1x2", "spp", {"levels": (1, 2)}, "spp:levels=1x2", "spp-levels1x2"),
    ("attn:num_heads=4", "attn", {"num_heads": 4}, "attn:num_heads=4", "attn-heads4"),
    ("flatten:hidden=512x256:dropout=0.5", "flatten", {"hidden": (512, 256), "dropout": 0.5},
     "flatten:hidden=512x256:dropout=0.5", "flatten-h512x256-d0.5"),
    ("flatten:dropout=0.5:hidden=256", "flatten", {"hidden": (256,), "dropout": 0.5},
     "flatten:hidden=256:dropout=0.5", "flatten-h256-d0.5"),
    ("nin:h=64x32", "nin", {"hidden": (64, 32)}, "nin:hidden=64x32", "nin-h64x32"),
    ("token:dropout=0.2", "token", {"dropout": 0.2}, "token:dropout=0.2", "token-d0.2"),
])
def test_parse_gives_typed_options_a_canonical_form_and_a_label(text, kind, options, canonical,
                                                                label):
    spec = parse_head(text)
    assert (spec.kind, dict(spec.options)) == (kind, options)
    assert (str(spec), head_label(spec), head_label(text)) == (canonical, label, label)
    assert parse_head(str(spec)) == spec  # the canonical form parses back to the same spec


def test_specs_that_build_the_same_head_are_equal():
    assert parse_head("gem") == parse_head("gem:p=3:learn_p=1:eps=1e-6") == make_spec("gem", p=3)
    assert parse_head("gem:learn_p=true") == parse_head("gem")
    assert parse_head("spp:levels=4").get("levels") == (4,)


@pytest.mark.parametrize("text, match", [
    ("gxp", r"unknown head 'gxp' in 'gxp' \(did you mean gmp or gap\?\); choose from gap, gmp"),
    ("gem:q=3", r"head 'gem' has no option 'q' .*it takes p, learn_p, eps, hidden, dropout"),
    ("gem:p=abc", r"option p=abc in 'gem:p=abc' is not valid; expected a number >= 1"),
    ("gem:learn_p=2", r"learn_p=2 .*expected 0 or 1"),
    ("gem:eps=0", r"eps=0 .*expected a number > 0"),
    ("spp:pool=min", r"pool=min .*expected one of max, avg"),
    ("spp:levels=1x0", r"levels=1x0 .*expected integers separated by x .* >= 1"),
    ("attn:num_heads=2.5", r"num_heads=2.5 .*expected an integer >= 1"),
    ("flatten:dropout=1", r"dropout=1 .*expected a number in \[0, 1\)"),
    ("gap:hidden=1.5", r"hidden=1.5 .*integers separated by x"),
    ("gem:p", r"head option 'p' in 'gem:p' is not key=value"),
    ("gem:p=2:p=3", r"head option p is given twice"),
    ("original:hidden=8", r"head 'original' has no option 'hidden' .*no options"),
    ("", r"a head spec must be a non-empty string"),
])
def test_bad_specs_name_the_bad_part_and_what_was_expected(text, match):
    with pytest.raises(ValueError, match=match):
        parse_head(text)


def test_registering_a_kind_twice_is_refused():
    with pytest.raises(ValueError, match="head kind 'gem' is already registered"):
        register_head("gem", "again")(lambda *a: None)


def test_swap_head_takes_the_spec_and_the_recipe_keeps_it():
    model = swap_head("resnet18", head="gem:p=3:learn_p=0", num_classes=10)
    assert model.head.pool.p.item() == 3.0 and not model.head.pool.learn_p
    assert (model.recipe["head"], model.recipe["head_spec"]) == ("gem", "gem:learn_p=0")
    model = swap_head("resnet18", head="spp:levels=1x2x4", num_classes=10)
    assert model.head.fc.in_features == 512 * 21
    model = swap_head("resnet18", head="attn:num_heads=4", num_classes=10)
    assert model.head.pool.num_heads == 4


@pytest.mark.parametrize("head, kwargs", [
    ("gap:hidden=16", dict(hidden=(16,))),
    ("gap:hidden=16", dict(hidden=())),
    ("gem:dropout=0.1", dict(dropout=0.1)),
])
def test_a_spec_and_an_argument_setting_the_same_option_are_ambiguous(head, kwargs):
    with pytest.raises(ValueError, match=r"set both in the head spec .* ambiguous"):
        swap_head("resnet18", head=head, num_classes=2, **kwargs)


def test_arguments_fill_in_what_the_spec_leaves_out():
    model = swap_head("resnet18", head="gem:p=2", hidden=(16,), dropout=0.5, num_classes=2)
    assert model.recipe["head_spec"] == "gem:p=2:hidden=16:dropout=0.5"
    assert (model.recipe["hidden"], model.recipe["dropout"]) == ([16], 0.5)
    assert model.head.fc.in_features == 16


@pytest.mark.parametrize("name, head, kwargs", [
    ("resnet18", "gem:p=2.5", {}),
    ("resnet18", "gem:learn_p=0:hidden=8", {}),
    ("resnet18", "attn:num_heads=2", {}),
    ("resnet18", "spp:levels=1x2:pool=avg", dict(input_size=64)),
    ("vit_tiny_patch16_224", "token", dict(img_size=64, depth=1)),
    ("vit_tiny_patch16_224", "token", dict(img_size=64, depth=1, global_pool="avg", fc_norm=True)),
])
def test_save_and_load_round_trip_new_heads_exactly(tmp_path, name, head, kwargs):
    model = swap_head(name, head=head, num_classes=3, **kwargs)
    with torch.no_grad():  # as after training: p and every weight moved from the initial values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if hasattr(model.head.pool, "p"):
            model.head.pool.p.add_(0.7)
    model.eval()
    loaded = load(save(model, tmp_path / "m.pt")).eval()
    assert loaded.recipe == model.recipe
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
