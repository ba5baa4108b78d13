"""Runs on an image folder: decoded once at --img-size under the run's resize policy, the same
metrics from the memory-mapped cache as from memory, and a run from before --resize resumes as
it ran (squashed, decoded at 64 px)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from analysis.data import ImageArray
from analysis.training import TrainConfig, config_from_record, load_run_data, train
from tests.image_folders import make_folder
from tests.tiny_runs import quiet

METRICS = ("test_acc", "test_loss", "train_loss", "val_loss", "best_val_acc", "train_acc")


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="test_resnet", head="gap", dataset="imagefolder",
                data_dir=str(tmp_path / "imgs"), img_size=16, val_size=6, epochs=1,
                batch_size=8, lr=1e-2, progress=False, out=str(tmp_path / "runs"),
                ckpt_minutes=0, data_cache_dir=str(tmp_path / "cache"), decode_workers=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs", per_class=12)


def _cached(tmp_path) -> list[str]:
    """The decode settings of every cache built: ``SIZEpx-POLICY-MODE``."""
    return sorted(d.name.split("-", 1)[1].rsplit("-", 1)[0]  # FOLDER-...-HASH
                  for d in (tmp_path / "cache").iterdir())


def test_memmap_and_in_memory_data_train_to_the_same_metrics(tmp_path, folder):
    cfg = _cfg(tmp_path, name="mm")
    data = load_run_data(cfg)
    assert isinstance(data.train_x, ImageArray) and data.image_size == (16, 16)
    in_memory = replace(data, train_x=data.train_x[:], val_x=data.val_x[:], test_x=data.test_x[:])
    a = quiet(train, cfg, data=data)
    b = quiet(train, _cfg(tmp_path, name="mem"), data=in_memory)
    assert {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}
    record = json.loads((tmp_path / "runs" / "mm" / "config.json").read_text())
    assert record["config"]["resize"] == "shorter-crop"
    assert record["resolved"]["data"]["image_size"] == [16, 16]
    assert _cached(tmp_path) == ["16px-shorter-crop-RGB"]        # decoded at --img-size, once


def test_a_run_from_before_resize_resumes_squashed_at_the_old_size(tmp_path, folder):
    cfg = _cfg(tmp_path, name="old", epochs=2, resize="pad")

    def stop(row):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet(train, cfg, on_epoch=stop)
    path = tmp_path / "runs" / "old" / "config.json"
    record = json.loads(path.read_text())
    del record["config"]["resize"]                                 # as written before it existed
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="resize 'squash' -> 'pad'"):   # it ran squashed
        train(resume=tmp_path / "runs" / "old", options={"resize": "pad"})
    summary = quiet(train, resume=tmp_path / "runs" / "old",
                     options={"decode_workers": 2, "data_cache_dir": str(tmp_path / "cache")})
    assert summary["epochs"] == 2
    assert _cached(tmp_path) == ["16px-pad-RGB", "64px-squash-RGB"]


def test_config_from_record_fills_in_what_older_runs_did():
    old = config_from_record({"dataset": "imagefolder", "data_options": {"gray": True}})
    assert old.resize == "squash" and old.data_options == {"image_size": 64, "gray": True}
    sized = config_from_record({"dataset": "imagefolder", "data_options": {"image_size": 32}})
    assert sized.data_options == {"image_size": 32}
    fashion = config_from_record({"dataset": "fashion-mnist"})
    assert fashion.resize == "squash" and fashion.data_options == {}
    assert config_from_record({"dataset": "imagefolder", "resize": "pad"}).resize == "pad"


def test_decoding_options_have_one_way_in():
    for key, flag in (("resize", "--resize"), ("cache_dir", "--data-cache-dir"),
                      ("decode_workers", "--decode-workers")):
        with pytest.raises(ValueError, match=f"is set by {flag}; use {flag} instead"):
            TrainConfig(model="test_resnet", dataset="imagefolder",
                        data_options={key: 1}).check()
    with pytest.raises(ValueError, match="unknown resize policy 'crop'; choose --resize from"):
        TrainConfig(model="test_resnet", dataset="imagefolder", resize="crop").check()


def test_a_smaller_decode_size_than_img_size_is_upsampled_with_a_warning(tmp_path, folder):
    cfg = _cfg(tmp_path, data_options={"image_size": 8})
    with pytest.warns(UserWarning, match="decoded at 8 px .* upsampled to --img-size 16"):
        data = load_run_data(cfg)
    assert data.image_size == (8, 8)


def test_a_cached_linear_probe_on_an_image_folder_equals_the_uncached_one(tmp_path, folder):
    from analysis.features import clear_memory

    clear_memory()
    probe = dict(regime="linear-probe", feature_cache_dtype="float32", epochs=2, img_size=32)
    off = quiet(train, _cfg(tmp_path, name="off", feature_cache="off", **probe))
    on = quiet(train, _cfg(tmp_path, name="on", **probe))
    assert on["feature_cache"]["used"] and not off["feature_cache"]["used"]
    for k in ("test_acc", "best_val_acc"):
        assert on[k] == pytest.approx(off[k], abs=1e-6), k
    assert on["test_loss"] == pytest.approx(off["test_loss"], rel=1e-4)
