"""Training harness on a tiny timm model and generated data: learning, files, resume, regimes."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import surgery
from analysis.costs import count_flops
from analysis.training import NonFiniteLossError, TrainConfig, lr_factor, train
from tests.tiny_runs import quiet, tiny_config

TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}
# per-epoch columns the README promises (gap_acc and gap_loss are a contract)
METRIC_KEYS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "gap_acc",
               "gap_loss", "epoch_time_s", "img_per_s", "peak_mem_mb")
SUMMARY_KEYS = {"model", "head", "dataset", "epochs", "test_acc", "best_val_acc", "train_acc",
                "val_acc", "gap_acc", "gap_loss", "params", "gmacs", "time_s", "img_per_s",
                "peak_mem_mb"}


def tiny(tmp_path, **kw) -> TrainConfig:
    """The shared tiny run over two epochs with a half-epoch warm-up."""
    return tiny_config(tmp_path, **{"epochs": 2, "warmup_epochs": 0.5, **kw})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny(tmp, name="r")
    return quiet(train, cfg), tmp / "r"


def test_gap_head_learns_separable_task(run):
    summary, _ = run
    assert summary["test_acc"] >= 0.6 and summary["best_val_acc"] >= 0.6  # chance is 0.25


def test_run_directory_has_promised_files_and_columns(run):
    summary, d = run
    for f in ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt",
              "last.pt", "curves.png"):
        assert (d / f).is_file(), f
    # curves.png decodes, and both panels (loss, accuracy) show a train and a validation line in
    # matplotlib's first two cycle colours
    rgb = np.asarray(Image.open(d / "curves.png").convert("RGB"), dtype=int)
    for panel in np.array_split(rgb, 2, axis=1):
        for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
            assert (np.abs(panel - colour).max(2) <= 10).sum() > 100
    with open(d / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    # both files carry every promised column, with the same numbers
    for row, r in zip(rows, lines, strict=True):
        assert {k: float(row[k]) for k in METRIC_KEYS} == pytest.approx({k: r[k] for k in METRIC_KEYS})
        assert 0 <= r["train_acc"] <= 1 and 0 <= r["val_acc"] <= 1
        assert r["gap_acc"] == pytest.approx(r["train_acc"] - r["val_acc"])
        assert r["gap_loss"] == pytest.approx(r["val_loss"] - r["train_loss"])
    on_disk = json.loads((d / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(on_disk) and on_disk["test_acc"] == summary["test_acc"]
    assert 0 <= on_disk["test_acc"] <= 1 and on_disk["epochs"] == 2
    # costs against independent counts: timm's own test_resnet without its classifier, plus the
    # GAP head by hand (C channels on the 1x1 grid test_resnet has at 16 px, K = 4 classes)
    bare = timm.create_model("test_resnet", num_classes=0, global_pool="")  # forward_features
    c, k = bare.num_features, 4
    assert on_disk["head_params"] == c * k + k
    assert on_disk["params"] == sum(p.numel() for p in bare.parameters()) + c * k + k
    assert on_disk["head_gmacs"] * 1e9 == pytest.approx(c * 1 + c * k)  # pool, then Linear
    backbone = count_flops(bare, (3, 16, 16))["total"]
    assert on_disk["gmacs"] * 1e9 == pytest.approx(backbone + c * 1 + c * k)
    best = max(lines, key=lambda r: r["val_acc"])
    assert on_disk["best_val_acc"] == best["val_acc"] and on_disk["gap_acc"] == best["gap_acc"]


def test_best_checkpoint_reproduces_test_accuracy(run):
    from analysis.data import BatchTransform, load_dataset
    from analysis.training import evaluate

    summary, d = run
    cfg = json.loads((d / "config.json").read_text())
    data = load_dataset("synthetic", val_size=32, **cfg["config"]["data_options"])
    r = cfg["resolved"]
    t = BatchTransform(16, r["in_chans"], r["mean"], r["std"])
    loss, acc = evaluate(surgery.load(d / "best.pt"), data.test_x, data.test_y, t, 16)
    assert acc == summary["test_acc"] and loss == pytest.approx(summary["test_loss"])


def test_checkpoints_carry_a_checksum_that_resume_verifies(run, tmp_path):
    from analysis.training import read_checkpoint

    _, d = run
    for name in ("best.pt", "last.pt"):
        assert torch.load(d / name, weights_only=True)["checksum"].startswith("crc32:")
    damaged = tmp_path / "last.pt"
    raw = bytearray((d / "last.pt").read_bytes())
    weight = read_checkpoint(d / "last.pt")["state_dict"]["head.fc.weight"].numpy().tobytes()
    at = bytes(raw).find(weight)
    assert at > 0
    raw[at + 3] ^= 0x01
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="last.pt' is damaged"):
        read_checkpoint(damaged)


class _Stop(Exception):
    pass


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    # dropout in the head makes the result depend on the restored RNG state as well
    kw = dict(hidden=(16,), dropout=0.5, ckpt_steps=3)
    full = quiet(train, tiny(tmp_path, name="full", **kw))

    def stop(ctx):
        if ctx["global_step"] == 12:  # epoch 2, step 5 of 8: the last checkpoint is at step 3
            raise _Stop

    with pytest.raises(_Stop):
        quiet(train, tiny(tmp_path, name="cut", **kw), on_step=stop)
    assert not (tmp_path / "cut" / "summary.json").exists()
    state = surgery.read_model_file(tmp_path / "cut" / "last.pt")["extra"]
    assert (state["epoch"], state["step"]) == (1, 3)
    resumed = quiet(train, resume=tmp_path / "cut")
    a = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in a]
    assert strip == [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in b]
    assert resumed["test_acc"] == full["test_acc"] and resumed["test_loss"] == full["test_loss"]
    wa = surgery.read_model_file(tmp_path / "full" / "last.pt")["state_dict"]
    wb = surgery.read_model_file(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _init_backbone(cfg: TrainConfig) -> dict[str, torch.Tensor]:
    torch.manual_seed(cfg.seed)
    m = quiet(surgery.swap_head, cfg.model, head=cfg.head, num_classes=4, input_size=16)
    return {k: v.clone() for k, v in m.backbone.state_dict().items()}


@pytest.mark.parametrize("cache", ["off", "auto"])
def test_linear_probe_leaves_backbone_and_its_statistics_unchanged(tmp_path, cache):
    cfg = tiny(tmp_path, regime="linear-probe", epochs=1, feature_cache=cache)
    init = _init_backbone(cfg)
    quiet(train, cfg)
    trained = surgery.load(next(tmp_path.glob("*/best.pt")))
    after = trained.backbone.state_dict()
    assert any("running_mean" in k for k in after)  # BatchNorm buffers are part of the check
    assert all(torch.equal(init[k], after[k]) for k in init)
    if cache == "auto":
        return
    torch.manual_seed(cfg.seed)
    full = tiny(tmp_path, name="full", epochs=1)
    quiet(train, full)
    moved = surgery.load(tmp_path / "full" / "best.pt").backbone.state_dict()
    assert not all(torch.equal(init[k], moved[k]) for k in init)  # the check can fail


def test_two_stage_trains_head_first_then_backbone_at_lower_lr(tmp_path):
    cfg = tiny(tmp_path, regime="two-stage", head_epochs=1, backbone_lr_scale=0.1)
    init = _init_backbone(cfg)
    seen: dict[int, dict] = {}

    def watch(ctx):
        if ctx["step"] == 7:
            bb = {k: v.clone() for k, v in ctx["model"].backbone.state_dict().items()}
            lrs = {g["name"]: g["lr"] for g in ctx["optimizer"].param_groups}
            seen[ctx["epoch"]] = {"bb": bb, "lrs": lrs}

    quiet(train, cfg, on_step=watch)
    assert all(torch.equal(init[k], seen[0]["bb"][k]) for k in init)
    assert not all(torch.equal(init[k], seen[1]["bb"][k]) for k in init)
    lrs = seen[1]["lrs"]
    assert lrs["backbone"] == pytest.approx(0.1 * lrs["head"]) and lrs["head"] > 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    def poison(ctx):
        if ctx["epoch"] == 1 and ctx["step"] == 2:
            with torch.no_grad():
                next(ctx["model"].head_parameters()).fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"NaN or inf.*last\.pt"):
        quiet(train, tiny(tmp_path, name="nan", ckpt_steps=1), on_step=poison)
    payload = surgery.read_model_file(tmp_path / "nan" / "last.pt")
    assert (payload["extra"]["epoch"], payload["extra"]["step"]) == (1, 2)  # before the poison
    assert all(torch.isfinite(v).all() for v in payload["state_dict"].values()
               if v.is_floating_point())
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_lr_schedule_warmup_then_cosine_by_hand():
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # half way through the cosine
    assert lr_factor(100, 100, 10, floor=0.1) == pytest.approx(0.1)
    assert lr_factor(40, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 3)))


def test_bad_input_gets_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="img-size 4 is too small for test_convnext"):
        quiet(train, tiny(tmp_path, model="test_convnext", img_size=4))
    with pytest.raises(ValueError, match="unknown data set 'nope'.*fashion-mnist"):
        train(tiny(tmp_path, dataset="nope", name="x"))
    with pytest.raises(ValueError, match="unknown regime"):
        train(tiny(tmp_path, regime="frozen"))
    with pytest.raises(ValueError, match="train-size 1000 is larger than the data"):
        train(tiny(tmp_path, train_size=1000, name="y"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="--resume"):
        train(tiny(tmp_path, name="taken"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        train(resume=tmp_path / "nowhere")


def test_one_by_one_grid_warns(tmp_path):
    with pytest.warns(UserWarning, match="1x1"):
        train(tiny(tmp_path, epochs=1, val_size=8,
                   data_options=dict(num_classes=2, n_train=24, n_test=8, image_size=16)))


def test_package_exports_a_callable_train(tmp_path):
    import analysis
    from analysis import TrainConfig as Config
    from analysis import train as train_fn

    assert Config is TrainConfig and callable(train_fn) and callable(analysis.train)
    summary = quiet(train_fn, tiny(tmp_path, epochs=1, val_size=8,
                                    data_options=dict(num_classes=2, n_train=24, n_test=8,
                                                      image_size=16)))
    assert summary["epochs"] == 1
