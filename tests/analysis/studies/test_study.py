"""analysis.studies: the grid, shards, resume, collect (with a stand-in trainer), and one real tiny
study on synthetic data that writes every promised file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import analysis.studies as study
from analysis.studies import StudySpec, parse_shard, runner, select_shard
from surgery import parse_head

BASE = {"dataset": "synthetic", "epochs": 1, "batch_size": 16}


def _spec(**kw) -> StudySpec:
    args = {"models": ("test_resnet",), "heads": (parse_head("gap"), parse_head("gmp")),
            "seeds": (0, 1), "train_sizes": (None,), "base": dict(BASE)}
    args.update(kw)
    return StudySpec(**args)


def _fake_acc(head: str, seed: int) -> float:
    return 0.5 + 0.01 * seed + (0.1 if head == "gap" else 0.0)


@pytest.fixture
def fake_runs(monkeypatch):
    """Replace training with a stand-in that writes a hand-made run and records the call."""
    calls: list[str] = []

    def fake_run_job(job: dict) -> dict:
        cfg = job["config"]
        run_dir = Path(cfg["out"]) / cfg["name"]
        run_dir.mkdir(parents=True, exist_ok=True)
        acc = _fake_acc(cfg["head"], cfg["seed"])
        summary = {"model": cfg["model"], "head": cfg["head"], "hidden": list(cfg["hidden"]),
                   "dropout": cfg["dropout"], "train_size": cfg["train_size"] or 100,
                   "seed": cfg["seed"], "test_acc": acc, "train_acc": 0.9, "img_size": 16,
                   "head_params": 7, "params": 70, "time_s": 1.0}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        (run_dir / "metrics.jsonl").write_text(json.dumps(
            {"epoch": 1, "train_acc": 0.9, "val_acc": acc}) + "\n")
        (run_dir / "robustness.json").write_text(json.dumps(
            [{"img_size": 16, "status": "ok", "test_acc": acc}]))
        calls.append(cfg["name"])
        return summary

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    return calls


def test_heads_are_surgery_specs_whose_options_reach_runs_and_labels():
    spec = _spec(heads=(parse_head("gem:p=2:learn_p=0"), parse_head("spp:levels=1x2"),
                        parse_head("flatten:hidden=256:dropout=0.5")))
    combos = study.combinations(spec)[:3]
    assert [c.head.label for c in combos] == ["gem-p2-learn_p0", "spp-levels1x2",
                                              "flatten-h256-d0.5"]
    configs = [c.config(spec, Path("runs")) for c in combos]
    assert [c.head for c in configs] == ["gem:p=2:learn_p=0", "spp:levels=1x2",
                                         "flatten:hidden=256:dropout=0.5"]
    assert [c.name for c in configs] == [
        "test_resnet-gem-p2-learn_p0-synthetic-nall-s0", "test_resnet-spp-levels1x2-synthetic-nall-s0",
        "test_resnet-flatten-h256-d0.5-synthetic-nall-s0"]  # the names runs had before specs
    stored = spec.to_dict()
    assert stored["head_specs"] == ["gem:p=2:learn_p=0", "spp:levels=1x2",
                                    "flatten:hidden=256:dropout=0.5"]
    assert StudySpec.from_dict(stored).heads == spec.heads


def test_study_files_written_before_head_options_still_load():
    old = _spec().to_dict() | {"head_specs": [{"head": "gap", "hidden": [], "dropout": 0.0},
                                              {"head": "flatten", "hidden": [256], "dropout": 0.5}]}
    heads = StudySpec.from_dict(old).heads
    assert [str(h) for h in heads] == ["gap", "flatten:hidden=256:dropout=0.5"]


def test_grid_order_and_every_shard_split_is_a_partition():
    spec = _spec(models=("test_resnet", "resnet18"), train_sizes=(100, 200), seeds=(0, 1, 2))
    combos = study.combinations(spec)
    assert len(combos) == 2 * 2 * 3 * 2
    assert [c.head.label for c in combos[:4]] == ["gap", "gmp", "gap", "gmp"]  # heads innermost
    assert [c.seed for c in combos[:4]] == [0, 0, 1, 1]
    for n in (1, 2, 3, 5, 30):
        parts = [select_shard(combos, (i, n)) for i in range(n)]
        flat = [c for p in parts for c in p]
        assert sorted(flat, key=combos.index) == combos and len(flat) == len(set(flat))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shards_are_refused(text):
    with pytest.raises(ValueError, match="I/N"):
        parse_shard(text)


def test_duplicate_heads_and_unknown_models_are_refused():
    with pytest.raises(ValueError, match="listed twice"):
        _spec(heads=(parse_head("gap"), parse_head("gap"))).check()
    with pytest.raises(ValueError, match="unknown model 'resnet81'"):  # the second model too
        _spec(models=("test_resnet", "resnet81"), seeds=(0, 1, 2)).check()


@pytest.mark.parametrize("kw, match", [
    (dict(seeds=(0, 1, 0)), "seed 0 is listed twice in --seeds"),
    (dict(train_sizes=(100, 200, 100)), "train size 100 is listed twice in --train-sizes"),
    (dict(train_sizes=(None, None)), "train size all is listed twice"),
    (dict(models=("test_resnet", "test_resnet")), "model test_resnet is listed twice"),
    (dict(robust_sizes=(32, 0)), "--robust-sizes must be whole numbers of pixels >= 1"),
    (dict(robust_images=-1), "--robust-images must be >= 1"),
    (dict(base={**BASE, "label_smoothing": 1.5}), "--label-smoothing must be"),
])
def test_duplicate_seeds_sizes_and_models_and_bad_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        _spec(**kw).check()


def test_resume_does_not_rerun_finished_runs(tmp_path, fake_runs):
    spec = _spec()
    first = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert len(fake_runs) == 4 and sorted(first["ran"]) == sorted(fake_runs)
    again = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert len(fake_runs) == 4 and again["ran"] == [] and len(again["skipped"]) == 4
    victim = fake_runs[1]
    (tmp_path / "runs" / victim / "summary.json").unlink()  # as if killed before the end
    third = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert third["ran"] == [victim] and fake_runs[-1] == victim


def test_a_directory_holding_other_settings_is_refused(tmp_path, fake_runs):
    study.run_study(_spec(), tmp_path, jobs=0, progress=False)
    with pytest.raises(ValueError, match="epochs 1 -> 3"):
        study.run_study(_spec(base=dict(BASE, epochs=3)), tmp_path, jobs=0, progress=False)
    # more seeds with the same settings extend the study and reuse its runs
    more = study.run_study(_spec(seeds=(0, 1, 2)), tmp_path, jobs=0, progress=False)
    assert len(more["ran"]) == 2 and len(more["skipped"]) == 4


def test_a_head_lr_reaches_only_its_head_and_belongs_to_the_study(tmp_path, fake_runs):
    spec = _spec(heads=(parse_head("gap"), parse_head("flatten:hidden=64:dropout=0.5")),
                 head_lr={"flatten-h64-d0.5": 1e-4})
    spec.check()
    lrs = {c.head.label: c.config(spec, Path("runs")).lr for c in study.combinations(spec)}
    assert lrs == {"gap": BASE.get("lr", 1e-3), "flatten-h64-d0.5": 1e-4}
    assert StudySpec.from_dict(spec.to_dict()).head_lr == spec.head_lr
    study.run_study(spec, tmp_path, jobs=0, progress=False)
    with pytest.raises(ValueError, match="head_lr"):  # other rates: other runs, another study
        study.run_study(_spec(heads=spec.heads), tmp_path, jobs=0, progress=False)
    with pytest.raises(ValueError, match="--head-lr names gmp, which is not among"):
        _spec(head_lr={"gmp": 1e-4}, heads=(parse_head("gap"),)).check()
    with pytest.raises(ValueError, match="must be > 0"):
        _spec(head_lr={"gap": 0.0}).check()


def test_how_data_is_decoded_never_makes_a_study_another_one(tmp_path, fake_runs):
    study.run_study(_spec(base=dict(BASE, decode_workers=1)), tmp_path, jobs=0, progress=False)
    again = study.run_study(_spec(base=dict(BASE, decode_workers=2, data_cache_dir="elsewhere")),
                            tmp_path, jobs=0, progress=False)
    assert len(again["skipped"]) == 4 and not again["ran"]


def test_a_study_from_before_resize_squashed_its_image_files():
    from analysis.studies.collect import settings_mismatch

    old = {"base": {"dataset": "imagefolder", "epochs": 1}}
    new = {"base": {"dataset": "imagefolder", "epochs": 1, "resize": "shorter-crop"}}
    assert settings_mismatch(old, new) == ["resize 'squash' -> 'shorter-crop'"]
    assert settings_mismatch(old, {"base": dict(new["base"], resize="squash")}) == []
    fashion = {"base": {"dataset": "fashion-mnist"}}   # no image files: the policy means nothing
    assert settings_mismatch(fashion, {"base": dict(fashion["base"], resize="pad")}) == []


def test_shards_then_collect_merge_into_one_summary(tmp_path, fake_runs):
    spec = _spec(seeds=(0, 1, 2))
    a = study.run_study(spec, tmp_path / "a", jobs=0, shard=(0, 2), progress=False)
    b = study.run_study(spec, tmp_path / "b", jobs=0, shard=(1, 2), progress=False)
    assert len(a["ran"]) == 3 and len(b["ran"]) == 3 and not set(a["ran"]) & set(b["ran"])
    merged = study.collect([tmp_path / "a", tmp_path / "b"], tmp_path / "all")
    assert merged["records"] == 6 and merged["missing"] == []
    rows = json.loads((tmp_path / "all" / "summary.json").read_text())["rows"]
    by_head = {r["head"]: r for r in rows}
    assert by_head["gap"]["seeds"] == 3
    assert by_head["gap"]["test_acc_mean"] == pytest.approx(0.61)  # 0.6 + mean(0, .01, .02)
    assert by_head["gmp"]["test_acc_mean"] == pytest.approx(0.51)
    assert by_head["gap"]["test_acc_std"] == pytest.approx(0.01)
    with open(tmp_path / "all" / "comparisons.csv") as f:
        comps = {r["metric"]: r for r in csv.DictReader(f)}
    assert comps["test_acc"]["head"] == "gmp" and comps["test_acc"]["wins"] == "0"
    assert float(comps["test_acc"]["diff_mean"]) == pytest.approx(-0.1)  # on every seed
    half = study.collect([tmp_path / "a"], tmp_path / "half")
    assert len(half["missing"]) == 3 and set(half["missing"]) == set(b["ran"])
    assert "Missing runs (3)" in (tmp_path / "half" / "summary.md").read_text()


def test_collect_refuses_different_studies_and_non_studies(tmp_path, fake_runs):
    study.run_study(_spec(), tmp_path / "a", jobs=0, progress=False)
    study.run_study(_spec(base=dict(BASE, epochs=2)), tmp_path / "b", jobs=0, progress=False)
    with pytest.raises(ValueError, match="different study"):
        study.collect([tmp_path / "a", tmp_path / "b"], tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="not a study directory"):
        study.collect([tmp_path / "nothing"], tmp_path / "c")


TINY_DATA = {"num_classes": 4, "n_train": 64, "n_test": 32, "image_size": 16, "channels": 1}
PROMISED = ("study.json", "summary.md", "summary.csv", "summary.json", "runs.csv",
            "comparisons.csv", "robustness.csv", "robustness.json", "acc_vs_head_params.png",
            "gap_vs_train_size.png", "learning_curves.png")


@pytest.mark.slow
@pytest.mark.smoke
def test_tiny_real_study_writes_every_file_and_resumes(tmp_path, monkeypatch):
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("flatten")), (0, 1), (None,),
                     {"dataset": "synthetic", "data_options": TINY_DATA, "val_size": 16,
                      "epochs": 1, "batch_size": 16, "img_size": 48, "lr": 0.01},
                     robust_sizes=(32, 48, 96), robust_images=None)
    result = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert len(result["ran"]) == 4 and result["failed"] == []
    for name in PROMISED:
        assert (tmp_path / name).stat().st_size > 0, name
    for name in ("acc_vs_head_params.png", "gap_vs_train_size.png", "learning_curves.png"):
        # each plot decodes and draws both heads, in tab10's first two colours
        rgb = np.asarray(Image.open(tmp_path / name).convert("RGB"), dtype=int)
        for colour in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):
            assert (np.abs(rgb - colour).max(2) <= 10).sum() > 20, (name, colour)
    rows = {r["head"]: r for r in json.loads((tmp_path / "summary.json").read_text())["rows"]}
    assert rows["gap"]["seeds"] == rows["flatten"]["seeds"] == 2
    # test_resnet: 96 channels, a 2x2 grid at 48 px, 4 classes: GAP C*K+K, Flatten 4C*K+K
    assert rows["gap"]["head_params"] == 96 * 4 + 4
    assert rows["flatten"]["head_params"] == 96 * 4 * 4 + 4
    assert rows["gap"]["train_test_gap_mean"] == pytest.approx(
        rows["gap"]["train_acc_mean"] - rows["gap"]["test_acc_mean"])
    robust = {(r["head"], r["img_size"]): r
              for r in json.loads((tmp_path / "robustness.json").read_text())}
    assert robust[("gap", 96)]["ok"] == 2 and robust[("gap", 32)]["ok"] == 2
    assert robust[("flatten", 48)]["ok"] == 2  # its own size
    assert robust[("flatten", 96)]["refused"] == 2
    assert "built for a 2x2 grid" in robust[("flatten", 96)]["reason"]
    assert len((tmp_path / "runs.csv").read_text().splitlines()) == 1 + 4
    # resuming the finished study trains nothing
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("re-ran a run"))
    again = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert again["ran"] == [] and len(again["skipped"]) == 4


@pytest.mark.slow
def test_tiny_study_with_shifts_keeps_best_only(tmp_path):
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("flatten")), (0,), (None,),
                     {"dataset": "synthetic", "data_options": TINY_DATA, "val_size": 16,
                      "epochs": 1, "batch_size": 16, "img_size": 32, "lr": 0.01},
                     robust_sizes=(32,), robust_images=None, shifts=(0, 4), shift_images=16)
    result = study.run_study(spec, tmp_path, jobs=0, progress=False)
    assert len(result["ran"]) == 2 and result["failed"] == []
    for run_dir in (tmp_path / "runs").iterdir():
        assert (run_dir / "best.pt").is_file() and not (run_dir / "last.pt").exists()
        rows = json.loads((run_dir / "shifts.json").read_text())
        assert [r["shift"] for r in rows] == [0, 4] and rows[0]["images"] == 16
        assert rows[1]["directions"] == 4
        assert json.loads((run_dir / "summary.json").read_text())["checkpoint_mb"] > 0
    shifted = list(csv.DictReader((tmp_path / "shifts.csv").open()))
    assert {(r["head"], r["shift"]) for r in shifted} == {("gap", "0"), ("gap", "4"),
                                                          ("flatten", "0"), ("flatten", "4")}
    assert (tmp_path / "acc_vs_shift.png").stat().st_size > 0
    assert "## Shift robustness" in (tmp_path / "summary.md").read_text()
