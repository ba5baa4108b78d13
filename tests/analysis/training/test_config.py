"""TrainConfig.check: every numeric option has a range, and the error names the flag and value."""

from __future__ import annotations

import math

import pytest

from analysis.training import TrainConfig, train
from analysis.training.config import NUMERIC_RULES, option_flag

NAN, INF = math.nan, math.inf


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model="test_resnet", dataset="synthetic", **kw)


@pytest.mark.parametrize("field, value", [
    ("clip_grad", -1.0), ("clip_grad", 0.0), ("clip_grad", NAN),
    ("label_smoothing", 1.5), ("label_smoothing", 1.0), ("label_smoothing", -0.1),
    ("lr", NAN), ("lr", INF), ("lr", 0.0), ("lr", -0.1),
    ("weight_decay", -0.05), ("weight_decay", NAN), ("momentum", -0.1), ("momentum", 1.0),
    ("momentum", INF), ("min_lr", -1e-5), ("warmup_epochs", -1.0), ("warmup_epochs", INF),
    ("epochs", 0), ("epochs", 1.5), ("batch_size", 0), ("eval_batch_size", 0),
    ("head_epochs", -1), ("backbone_lr_scale", -0.1), ("backbone_lr_scale", NAN),
    ("val_size", 0), ("val_size", -5), ("train_size", 0), ("test_size", 0), ("img_size", 0),
    ("train_eval_size", 0), ("dropout", 1.0), ("in_chans", 0), ("seed", -1), ("ckpt_steps", -1),
    ("ckpt_minutes", -1.0), ("epochs", True), ("lr", "0.1"), ("decode_workers", 0),
])
def test_out_of_range_values_are_refused_naming_the_flag(field, value):
    with pytest.raises(ValueError) as err:
        _cfg(**{field: value}).check()
    message = str(err.value)
    assert message.startswith(option_flag(field) + " must be ")
    assert f"got {value!r}" in message


def test_flags_are_spelt_as_users_type_them():
    assert option_flag("clip_grad") == "--clip-grad" and option_flag("optimizer") == "--opt"
    assert option_flag("label_smoothing") == "--label-smoothing"


def test_values_at_the_edges_of_each_range_pass():
    _cfg(label_smoothing=0.0, clip_grad=1e-3, warmup_epochs=0.0, weight_decay=0.0, momentum=0.0,
         min_lr=1e-3, lr=1e-3, head_epochs=0, backbone_lr_scale=0.0, val_size=0.5, seed=0,
         ckpt_steps=0, ckpt_minutes=0.0, dropout=0.0, hidden=512).check()
    assert set(NUMERIC_RULES) <= {f for f in TrainConfig.__dataclass_fields__}


@pytest.mark.parametrize("kw, match", [
    (dict(min_lr=0.1, lr=0.01), "--min-lr 0.1 is above --lr 0.01"),
    (dict(val_size=2.5), "--val-size must be a whole count"),
    (dict(hidden=(16, 0)), "--hidden widths must be whole numbers >= 1, got 16 0"),
    (dict(timm_options={"num_classes": 5}), "--timm-option num_classes=5: num_classes is set by "
                                            "headswap itself; use --num-classes"),
    (dict(timm_options={"pretrained": True}), "use --pretrained"),
    (dict(data_options={"nope": 1}), "synthetic has no option nope"),
])
def test_relations_and_options_are_checked_before_any_data(kw, match):
    with pytest.raises(ValueError, match=match):
        _cfg(**kw).check()


def test_an_int_hidden_is_one_layer():
    assert _cfg(hidden=512).hidden == (512,)
    assert TrainConfig.from_dict({"hidden": [64, 32]}).hidden == (64, 32)


def test_train_refuses_before_writing_anything(tmp_path):
    tiny = dict(num_classes=2, n_train=16, n_test=8, image_size=16)
    with pytest.raises(ValueError, match="--clip-grad must be a finite number > 0"):
        train(_cfg(clip_grad=-1.0, out=str(tmp_path), name="r", epochs=1, val_size=4,
                   data_options=tiny, progress=False))
    assert not (tmp_path / "r").exists()


def test_every_option_is_declared_once_on_its_field():
    """Flags, ranges, resume rules and the feature-sharing key are read from the fields."""
    import argparse

    from analysis.training import add_training_options
    from analysis.training.config import DECLARED, NOT_FEATURES, RESUME_FREE

    assert set(DECLARED) == set(TrainConfig.__dataclass_fields__)
    parser = argparse.ArgumentParser()
    add_training_options(parser)
    plural = {"timm_option": "timm_options", "data_option": "data_options"}  # repeatable flags
    dests = {plural.get(a.dest, a.dest) for a in parser._actions} - {"help", "skip_bad_images"}
    assert dests == {name for name, d in DECLARED.items() if d.group}
    assert {"progress", "ckpt_steps", "decode_workers"} <= set(RESUME_FREE)
    assert "lr" in NOT_FEATURES and "img_size" not in NOT_FEATURES
    study = argparse.ArgumentParser()
    add_training_options(study, per_run=False)
    assert not {"--seed", "--head", "--train-size", "--out"} & set(study._option_string_actions)
    assert option_flag("progress") == "--no-progress" and option_flag("timm_options") == "--timm-option"
