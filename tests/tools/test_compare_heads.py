"""tools/compare_heads.py: flags -> study, user errors, --shard + --collect, child processes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import compare_heads  # noqa: E402
from _cli import run  # noqa: E402

import analysis.studies as study  # noqa: E402
from analysis.studies import runner  # noqa: E402

SYNTH = ["--dataset", "synthetic", "--data-option", "num_classes=3", "--data-option",
         "n_train=48", "--data-option", "n_test=24", "--data-option", "image_size=16",
         "--val-size", "12", "--epochs", "1", "--batch-size", "16", "--no-progress"]


# spelled out, not read from the registries the parser is built from
KNOWN_HEADS = ("gap", "gmp", "gapmp", "flatten", "nin", "gem", "attn", "token", "spp",
               "original")
KNOWN_DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")


def test_help_lists_every_head_kind(capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_heads.main(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--heads", "--seeds", "--train-sizes", "--jobs", "--shard", "--collect",
                 "--robust-sizes", "--test-size", "--out"):
        assert flag in out
    listed = re.search(r"Kinds: ([^.]*)\.", out)
    assert listed is not None and set(KNOWN_HEADS) <= set(listed.group(1).split(", "))


def test_every_known_head_and_data_set_parses_and_a_wrong_data_set_lists_them(capsys):
    parser = compare_heads.build_parser()
    args = parser.parse_args(["resnet18", "--heads", *KNOWN_HEADS, "--out", "x"])
    assert [h.head for h in compare_heads.spec_from_args(args, "cmd").heads] == list(KNOWN_HEADS)
    for name in KNOWN_DATASETS:
        assert parser.parse_args(["resnet18", "--dataset", name, "--out", "x"]).dataset == name
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["resnet18", "--dataset", "nosuch", "--out", "x"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "argument --dataset: invalid choice: 'nosuch'" in err
    assert all(repr(name) in err for name in KNOWN_DATASETS)


def test_flags_become_the_study():
    args = compare_heads.build_parser().parse_args(
        ["resnet18", "mobilenetv3_small_100", "--heads", "gap", "flatten:hidden=256:dropout=0.5",
         "--seeds", "0", "1", "2", "--train-sizes", "1000", "all", "--img-size", "64",
         "--epochs", "3", "--data-option", "n_train=64", "--val-size", "500", "--test-size", "900",
         "--out", "x"])
    spec = compare_heads.spec_from_args(args, "cmd")
    assert spec.models == ("resnet18", "mobilenetv3_small_100")
    assert [h.label for h in spec.heads] == ["gap", "flatten-h256-d0.5"]
    args = compare_heads.build_parser().parse_args(
        ["resnet18", "--heads", "gap", "gem:p=3:learn_p=0", "spp:levels=1x2x4:pool=avg",
         "attn:num_heads=4", "--out", "x"])
    labels = [h.label for h in compare_heads.spec_from_args(args).heads]
    assert labels == ["gap", "gem-learn_p0", "spp-avg", "attn-heads4"]
    assert spec.seeds == (0, 1, 2) and spec.train_sizes == (1000, None)
    assert spec.base["img_size"] == 64 and spec.base["epochs"] == 3
    assert spec.base["val_size"] == 500 and isinstance(spec.base["val_size"], int)
    assert spec.base["data_options"] == {"n_train": 64} and spec.test_size == 900
    assert spec.base["resize"] == "shorter-crop" and "decode_workers" not in spec.base
    for per_run in ("seed", "train_size", "head", "hidden", "dropout", "model", "out"):
        assert per_run not in spec.base
    assert len(study.combinations(spec)) == 2 * 2 * 3 * 2
    assert spec.shifts == () and spec.keep == "best" and "classes" not in spec.base
    args = compare_heads.build_parser().parse_args(
        ["resnet10t", "--classes", "1,5,7,8,9", "--checkpoint", "best.pt", "--shifts", "0", "2",
         "8", "--shift-images", "0", "--keep", "none", "--out", "x"])
    spec = compare_heads.spec_from_args(args)
    assert spec.shifts == (0, 2, 8) and spec.shift_images is None and spec.keep == "none"
    assert spec.base["classes"] == (1, 5, 7, 8, 9) and spec.base["checkpoint"] == "best.pt"
    name = study.combinations(spec)[0].config(spec, Path("runs")).name
    assert name == "resnet10t-gap-fashion-mnist-c1.5.7.8.9-nall-s0"
    args = compare_heads.build_parser().parse_args(
        ["resnet18", "--heads", "gap", "flatten:hidden=4096x4096:dropout=0.5", "gmp", "--head-lr",
         "flatten:hidden=4096x4096:dropout=0.5=1e-4", "gmp=3e-3", "--out", "x"])
    assert compare_heads.spec_from_args(args).head_lr == {"flatten-h4096x4096-d0.5": 1e-4,
                                                          "gmp": 3e-3}


@pytest.mark.parametrize("argv,message", [
    (["resnet18", "--heads", "avgpool", "--out", "x"], "unknown head 'avgpool'"),
    (["resnet18", "--heads", "gem:q=2", "--out", "x"], "head 'gem' has no option 'q'"),
    (["resnet18", "--heads", "spp:pool=min", "--out", "x"], "pool=min"),
    (["resnet18", "--shard", "2/2", "--out", "x"], "0 <= I < N"),
    (["resnet18", "--train-sizes", "0", "--out", "x"], "train sizes"),
    (["resnet18", "--head-lr", "gap", "--out", "x"], "--head-lr expects HEAD=LR"),
    (["resnet18", "--head-lr", "gap=-1", "--out", "x"], "--head-lr expects HEAD=LR"),
])
def test_bad_flags_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        compare_heads.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["resnet18"], "--out STUDY_DIR is required"),
    (["--out", "x"], "give at least one model"),
    (["resnet18", "--collect", "a", "--out", "x"], "give no models"),
    (["--collect", "nowhere", "--out", "x"], "not a study directory"),
    (["test_resnet", "--seeds", "0", "0", *SYNTH, "--jobs", "0", "--out", "x"],
     "seed 0 is listed twice in --seeds"),
    (["test_resnet", "--clip-grad", "-1", *SYNTH, "--jobs", "0", "--out", "x"],
     "--clip-grad must be"),
    (["test_resnet", "--heads", "gap", "--head-lr", "gmp=1e-4", *SYNTH, "--jobs", "0", "--out",
      "x"], "--head-lr names gmp, which is not among the heads"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert run(lambda: compare_heads.main(argv)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _fake_run_job(job: dict) -> dict:
    cfg = job["config"]
    run_dir = Path(cfg["out"]) / cfg["name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = {"model": cfg["model"], "head": cfg["head"], "train_size": 36, "seed": cfg["seed"],
               "test_acc": 0.5 + 0.1 * cfg["seed"], "train_acc": 1.0, "head_params": 1}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "robustness.json").write_text("[]")
    return summary


def test_shards_and_collect_through_the_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run_job", _fake_run_job)
    grid = ["test_resnet", "--heads", "gap", "gmp", "--seeds", "0", "1", *SYNTH, "--jobs", "0"]
    for i in (0, 1):
        assert compare_heads.main([*grid, "--shard", f"{i}/2", "--out", str(tmp_path / f"s{i}")]) == 0
    runs = [sorted(p.name for p in (tmp_path / f"s{i}" / "runs").iterdir()) for i in (0, 1)]
    assert len(runs[0]) == len(runs[1]) == 2 and not set(runs[0]) & set(runs[1])
    capsys.readouterr()
    argv = ["--collect", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "all")]
    assert compare_heads.main(argv) == 0
    rows = json.loads((tmp_path / "all" / "summary.json").read_text())["rows"]
    assert {r["head"]: r["seeds"] for r in rows} == {"gap": 2, "gmp": 2}
    assert rows[0]["test_acc_mean"] == pytest.approx(0.55)  # seeds 0 and 1: 0.5, 0.6
    assert "study report" in capsys.readouterr().out
    assert compare_heads.main(["--collect", str(tmp_path / "s0"), "--out", str(tmp_path / "x")]) == 1
    assert "2 runs missing" in capsys.readouterr().err


@pytest.mark.slow
def test_child_processes_run_and_failures_are_reported(tmp_path, capsys):
    out = tmp_path / "study"
    ok = ["test_resnet", "--heads", "gap", *SYNTH, "--img-size", "64", "--robust-sizes", "64",
          "--jobs", "1", "--threads", "1", "--out", str(out)]
    assert compare_heads.main(ok) == 0
    (run_dir,) = (out / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["peak_mem_mb"] > 0 and (out / "logs" / f"{run_dir.name}.log").is_file()
    capsys.readouterr()
    bad = ["test_resnet", "--heads", "gap", *SYNTH, "--data-option", "n_train=5", "--jobs", "1",
           "--out", str(tmp_path / "bad")]  # 5 images, 12 for validation: fails in the child
    assert compare_heads.main(bad) == 1  # the run fails: the study reports it and goes on
    err = capsys.readouterr().err
    assert "failed: test_resnet-gap-synthetic" in err and "ValueError" in err
    assert "leaves no training data" in err  # the error, as its log ends


def test_a_diverging_run_in_process_is_reported_and_the_study_goes_on(tmp_path, capsys):
    argv = ["test_resnet", "--heads", "gap", "gmp", *SYNTH, "--opt", "sgd", "--momentum", "0",
            "--head-lr", "gmp=1e38", "--jobs", "0", "--robust-sizes", "16", "--out",
            str(tmp_path)]  # a full fine-tune: one run per head, in this process
    code = run(lambda: compare_heads.main(argv))
    captured = capsys.readouterr()
    assert code == 1 and "failed: test_resnet-gmp" in captured.err
    assert "NaN or inf" in captured.err
    assert (tmp_path / "runs" / "test_resnet-gap-synthetic-nall-s0" / "summary.json").is_file()
    assert (tmp_path / "summary.md").is_file()  # the report of what finished
