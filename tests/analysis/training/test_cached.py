"""Frozen-backbone runs on cached features: the same result as running the backbone every step."""

from __future__ import annotations

import json

import pytest
import torch

import surgery
from analysis.features import clear_memory
from analysis.training import TrainConfig, model_costs, train
from tests.tiny_runs import quiet, tiny_config

TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}


def tiny(tmp_path, **kw) -> TrainConfig:
    """4 generated classes, 64 train / 32 val images at 48 px (a 2x2 grid on test_resnet),
    linear probe, float32 cache."""
    base = dict(data_options=dict(num_classes=4, n_train=96, n_test=32, image_size=48),
                epochs=2, warmup_epochs=0.5, regime="linear-probe", feature_cache_dtype="float32")
    return tiny_config(tmp_path, **{**base, **kw})


def _rows(run_dir):
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rows]


def _pair(tmp_path, **kw):
    clear_memory()
    off = quiet(train, tiny(tmp_path, name="off", feature_cache="off", **kw))
    on = quiet(train, tiny(tmp_path, name="on", **kw))
    return off, on


@pytest.mark.parametrize("model, head", [
    ("test_resnet", "gap:hidden=16:dropout=0.5"),  # a CNN, dropout draws on the global RNG
    ("test_resnet", "original"),
    ("test_vit", "gap"),                           # a token model (class token left out)
    ("test_vit", "original"),
])
def test_cached_linear_probe_equals_uncached(tmp_path, model, head):
    kind, *opts = head.split(":")
    kw = dict(model=model, head=kind)
    for o in opts:
        k, v = o.split("=")
        kw[k] = (int(v),) if k == "hidden" else float(v)
    off, on = _pair(tmp_path, **kw)
    assert off["feature_cache"]["used"] is False and on["feature_cache"]["used"] is True
    a, b = _rows(tmp_path / "off"), _rows(tmp_path / "on")
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), k
    assert on["test_acc"] == off["test_acc"]
    assert on["test_loss"] == pytest.approx(off["test_loss"], rel=1e-5)
    ma = surgery.load(tmp_path / "off" / "best.pt")
    mb = surgery.load(tmp_path / "on" / "best.pt")  # the final best.pt is a whole model
    for k, v in ma.state_dict().items():  # within 1e-5 of each tensor's scale
        if v.is_floating_point():
            assert float((mb.state_dict()[k] - v).abs().max()) <= 1e-5 * float(v.abs().max()), k
    x = torch.randn(4, 3, 48, 48)
    with torch.no_grad():
        la, lb = ma.eval()(x), mb.eval()(x)
    assert float((la - lb).abs().max()) <= 1e-5 * float(la.abs().max())
    for key in ("params", "head_params", "gmacs", "head_gmacs"):  # costs counted another way
        assert on[key] == pytest.approx(off[key], rel=1e-9), key


def test_float16_cache_stays_close(tmp_path):
    off, on = _pair(tmp_path, feature_cache_dtype="float16")
    assert on["test_loss"] == pytest.approx(off["test_loss"], rel=2e-2)


def test_cached_run_writes_the_head_only_until_the_end(tmp_path):
    clear_memory()
    cfg = tiny(tmp_path, name="r", epochs=3)
    seen = []

    def watch(row):
        payload = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
        seen.append((payload["format"], set(payload)))

    quiet(train, cfg, on_epoch=watch)
    assert all(fmt == "headswap-head" and "state_dict" not in keys for fmt, keys in seen)
    with pytest.raises(ValueError, match="head and a training state only.*best.pt"):
        surgery.load(tmp_path / "r" / "last.pt")
    model = surgery.load(tmp_path / "r" / "best.pt")
    assert isinstance(model, surgery.HeadSwapped)
    assert (tmp_path / "r" / "curves.png").is_file()


def test_resumed_cached_run_equals_uninterrupted(tmp_path):
    clear_memory()
    full = quiet(train, tiny(tmp_path, name="full", epochs=3, ckpt_steps=3,
                              hidden=(16,), dropout=0.5))

    class Stop(Exception):
        pass

    def stop(ctx):
        if ctx["global_step"] == 12:
            raise Stop

    with pytest.raises(Stop):
        quiet(train, tiny(tmp_path, name="cut", epochs=3, ckpt_steps=3, hidden=(16,),
                           dropout=0.5), on_step=stop)
    clear_memory()  # a new process: the cache is extracted again
    resumed = quiet(train, resume=tmp_path / "cut")
    assert _rows(tmp_path / "full") == _rows(tmp_path / "cut")
    assert resumed["test_loss"] == full["test_loss"]


def test_two_stage_head_epochs_on_the_cache_equal_uncached(tmp_path):
    off, on = _pair(tmp_path, regime="two-stage", head_epochs=1, epochs=2)
    assert on["feature_cache"]["used"] and not off["feature_cache"]["used"]
    a, b = _rows(tmp_path / "off"), _rows(tmp_path / "on")
    for ra, rb in zip(a, b, strict=True):
        for k in ra:
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-6), k


def test_views_are_fixed_per_image_and_sampled_per_epoch(tmp_path):
    clear_memory()
    s = quiet(train, tiny(tmp_path, name="v", feature_cache_views=3))
    info = s["feature_cache"]
    assert info["views"] == 3 and info["views_cache"]["images"] == 64
    with pytest.raises(ValueError, match="--feature-cache-views.*linear-probe or two-stage"):
        train(tiny(tmp_path, name="w", feature_cache_views=2, regime="full"))


def test_frozen_runs_do_not_augment_and_explicit_augment_falls_back(tmp_path):
    assert TrainConfig(regime="linear-probe").augments(0) is False
    assert TrainConfig(regime="two-stage", head_epochs=1).augments(1) is True
    clear_memory()
    with pytest.warns(UserWarning, match="feature cache not used: --augment"):
        s = train(tiny(tmp_path, name="a", augment=True, epochs=1))
    assert s["feature_cache"]["used"] is False


def test_frozen_random_backbone_normalises_with_pool_statistics(tmp_path):
    clear_memory()
    recs = []
    for seed in (0, 1):
        quiet(train, tiny(tmp_path, name=f"s{seed}", seed=seed, epochs=1, train_size=40))
        recs.append(json.loads((tmp_path / f"s{seed}" / "config.json").read_text()))
    assert recs[0]["resolved"]["mean"] == recs[1]["resolved"]["mean"]  # not the subset's


def test_cached_costs_match_the_whole_model_count():
    m = quiet(surgery.swap_head, "test_resnet", head="flatten", num_classes=4, input_size=32)
    want = model_costs(m, (3, 32, 32))
    from analysis.features import CacheKey
    from analysis.training import head_costs

    key = CacheKey("test_resnet", "w", "forward_features", "s", "d", 32, (0.5,), (0.2,), 3)
    got = head_costs(m, (3, 32, 32), key, tuple(m.features.shape[1:]))
    assert got == pytest.approx(want)


def test_resume_loads_the_backbone_file_again_and_refuses_changed_weights(tmp_path):
    import timm

    clear_memory()
    weights = tmp_path / "w.pth"
    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet").state_dict(), weights)

    class Stop(Exception):
        pass

    def stop(ctx):
        if ctx["global_step"] == 9:
            raise Stop

    full = quiet(train, tiny(tmp_path, name="full", checkpoint=str(weights), epochs=2))
    for name in ("c", "same"):
        with pytest.raises(Stop):
            quiet(train, tiny(tmp_path, name=name, checkpoint=str(weights), epochs=2),
                  on_step=stop)
    clear_memory()  # a new process: the backbone comes from the checkpoint file again
    resumed = quiet(train, resume=tmp_path / "same")  # the head-only last.pt has no backbone
    assert resumed["test_loss"] == full["test_loss"]
    assert _rows(tmp_path / "same") == _rows(tmp_path / "full")
    torch.manual_seed(2)
    torch.save(timm.create_model("test_resnet").state_dict(), weights)  # other weights, same file
    clear_memory()
    with pytest.raises(ValueError, match="other weights than the interrupted run"):
        quiet(train, resume=tmp_path / "c")


# a run's own on-disk cache (RUN/features) belongs to the run, like its files

DISK = 0.00005  # GiB (52 KiB): above one batch of test_resnet's features, below the whole cache


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_no_cache(tmp_path):
    clear_memory()

    def boom(ctx):
        if ctx["global_step"] == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        quiet(train, tiny(tmp_path, name="d", feature_cache_mem_gb=DISK), on_step=boom)
    assert not (tmp_path / "d").exists()
    s = quiet(train, tiny(tmp_path, name="d", feature_cache_mem_gb=DISK))  # the name is free
    assert s["feature_cache"]["storage"] == "disk" and s["feature_cache"]["built"]
    assert len(list((tmp_path / "d" / "features").glob("*.feat"))) == 1


def test_overwrite_replaces_the_old_runs_cache_once_the_new_run_trains(tmp_path):
    clear_memory()
    old = quiet(train, tiny(tmp_path, name="o", feature_cache_mem_gb=DISK))
    old_file = old["feature_cache"]["path"]
    clear_memory()
    with pytest.raises(ValueError):  # fails before training: the old run stays whole
        quiet(train, tiny(tmp_path, name="o", feature_cache_mem_gb=DISK, overwrite=True,
                           img_size=40, label_smoothing=1.5))
    assert (tmp_path / "o" / "summary.json").is_file()
    assert old_file in [str(p) for p in (tmp_path / "o" / "features").glob("*.feat")]
    new = quiet(train, tiny(tmp_path, name="o", feature_cache_mem_gb=DISK, overwrite=True,
                             img_size=40))  # other features: another cache file
    files = [str(p) for p in (tmp_path / "o" / "features").glob("*.feat")]
    assert files == [new["feature_cache"]["path"]] and old_file not in files
