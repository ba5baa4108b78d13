"""tools/pick_head.py: the shared options, the JSON contract, files written, user errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import compare_heads  # noqa: E402
import finetune  # noqa: E402
import pick_head  # noqa: E402
from _cli import run  # noqa: E402

from analysis.features import clear_memory  # noqa: E402

TINY = ["test_resnet", "--dataset", "synthetic", "--data-option", "num_classes=3",
        "--data-option", "n_train=120", "--data-option", "n_test=24", "--data-option",
        "image_size=32", "--train-size", "48", "--val-size", "16", "--seeds", "0", "1",
        "--epochs", "1", "--batch-size", "16", "--test-size", "12", "--min-steps", "20",
        "--no-progress"]


def _dests(parser) -> set[str]:
    return {a.dest for a in parser._actions}


def _launcher_dests() -> set[str]:
    """The cluster launcher's options (compare_heads and finetune run on Slurm; pick_head not)."""
    import argparse

    from analysis.runtime import add_launcher_options

    dests = {"no_wait"}
    for study in (True, False):
        p = argparse.ArgumentParser()
        add_launcher_options(p, study=study)
        dests |= _dests(p)
    return dests


def test_the_fine_tuning_options_are_the_same_in_every_tool():
    shared = _dests(compare_heads.build_parser()) & _dests(finetune.build_parser())
    assert {"feature_cache", "feature_cache_views", "feature_cache_mem_gb", "feature_cache_dir",
            "feature_cache_dtype", "regime", "checkpoint", "timm_option", "test_size",
            "pool_size", "resize", "decode_workers", "data_cache_dir"} <= shared
    assert {"launcher", "slurm_time", "slurm_setup"} <= shared
    assert shared - {"help"} - _launcher_dests() <= _dests(pick_head.build_parser())
    args = pick_head.build_parser().parse_args(["resnet18"])
    assert (args.regime, args.epochs, args.test_size) == ("linear-probe", 10, 2000)


def test_json_output_has_exactly_the_promised_keys_and_files(tmp_path, capsys):
    clear_memory()
    code = run(lambda: pick_head.main([*TINY, "--heads", "gap", "gmp", "--out", str(tmp_path),
                                       "--format", "json"]))
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out) == ["backbone", "dataset", "train_size", "seeds", "rows", "recommended",
                         "reason", "lrs", "sweep"]
    assert [list(r) for r in out["rows"]] == [["head", "val_acc_mean", "val_acc_std",
                                               "gap_acc_mean", "head_params", "head_gmacs",
                                               "any_size", "lr"]] * 2
    grid = [1e-4, 0.0003162, 1e-3, 0.003162, 0.01, 0.03162, 0.1]
    assert [lr for lr in out["lrs"] if lr in grid] == grid
    assert set(out["lrs"]) - set(grid) <= {0.3163, 3.162e-5}  # one step beyond an edge, once
    assert {(m["head"], m["lr"], m["seed"]) for m in out["sweep"]} >= {
        (h, lr, s) for h in ("gap", "gmp") for lr in grid for s in (0, 1)}
    assert all(set(m) == {"head", "lr", "weight_decay", "seed", "val_acc", "status"}
               for m in out["sweep"])
    assert all(r["lr"] in out["lrs"] for r in out["rows"])
    assert out["seeds"] == [0, 1] and out["train_size"] == 48
    assert out["recommended"] in {"gap", "gmp"}
    for name in ("pick.md", "pick.csv", "pick.json", "pick.png", "sweep.csv", "lr.png"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "pick.json").read_text()) == out
    assert "Recommended:" in (tmp_path / "pick.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["resnet18", "--heads", "nope"], "unknown head 'nope'"),
    (["resnet18", "--feature-cache", "sometimes"], "invalid choice"),
])
def test_bad_flags_exit_2_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        pick_head.main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["resnet18", "--train-size", "0"], "train-size must be at least 1"),
    (["resnet81", "--dataset", "synthetic"], "unknown model 'resnet81'"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    code = run(lambda: pick_head.main([*argv, "--out", str(tmp_path)]))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") <= 2


def test_a_diverging_grid_point_is_recorded_and_the_command_goes_on(tmp_path, capsys):
    clear_memory()
    argv = [*TINY, "--heads", "gap", "--opt", "sgd", "--lrs", "1e-2", "1e38", "--prune-at",
            "--out", str(tmp_path), "--format", "json"]
    assert run(lambda: pick_head.main(argv)) == 0
    out = json.loads(capsys.readouterr().out)
    status = {(m["lr"], m["seed"]): m["status"] for m in out["sweep"]}
    assert status[(1e38, 0)] == status[(1e38, 1)] == "diverged"
    assert out["rows"][0]["lr"] == 1e-2 and out["recommended"] == "gap"
    assert "diverged" in (tmp_path / "sweep.csv").read_text()


def test_a_best_at_the_grid_edge_is_extended_once_and_flagged(tmp_path, capsys):
    clear_memory()
    argv = [*TINY, "--heads", "gap", "--lrs", "1e-7", "1e-6", "--prune-at", "--out",
            str(tmp_path), "--format", "json"]  # both far too small: the best is the larger
    assert run(lambda: pick_head.main(argv)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lrs"] in ([1e-8, 1e-7, 1e-6], [1e-7, 1e-6, 1e-5])  # one step beyond, once
    md = (tmp_path / "pick.md").read_text()
    if out["rows"][0]["lr"] in (out["lrs"][0], out["lrs"][-1]):
        assert "end of the grid (extended once)" in md
    assert f"{out['rows'][0]['lr']:.3g}: " in md  # the chosen rate with its accuracy


def test_train_size_defaults_to_what_the_data_holds(tmp_path, capsys):
    clear_memory()
    argv = [a for a in TINY if a not in ("--train-size", "48")]
    argv += ["--heads", "gap", "--lrs", "1e-2", "--out", str(tmp_path), "--format", "json"]
    assert run(lambda: pick_head.main(argv)) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["train_size"] == 120 - 16  # the synthetic training split minus validation


def test_a_train_size_the_data_cannot_hold_names_the_option(tmp_path, capsys):
    argv = [*[a if a != "48" else "1000" for a in TINY], "--out", str(tmp_path)]
    code = run(lambda: pick_head.main(argv))
    err = capsys.readouterr().err
    assert code == 2 and "--train-size 1000" in err and "has 120" in err
    assert "pool-size" not in err


def test_pretrained_weights_out_of_reach_leave_nothing_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "pick"
    argv = ["resnet18", "--pretrained", *TINY[1:], "--heads", "gap", "--out", str(out)]
    code = run(lambda: pick_head.main(argv))
    err = capsys.readouterr().err
    assert code == 2 and "HF_HUB_OFFLINE" in err
    assert not (out / "study.json").exists()


def _folder_with_an_empty_class(root):
    from PIL import Image

    for k, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (20, 20), (40 * k + 3 * i, 90, 200 - 9 * i)).save(
                root / cls / f"{i}.png")
    (root / "c").mkdir()  # a class folder without images


def test_an_empty_class_folder_is_named_not_trained(tmp_path, capsys):
    _folder_with_an_empty_class(tmp_path / "imgs")
    argv = ["test_resnet", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "imgs"),
            "--data-cache-dir", str(tmp_path / "cache"), "--img-size", "16", "--heads", "gap",
            "--lrs", "1e-2", "--seeds", "0", "--min-steps", "5", "--no-progress",
            "--out", str(tmp_path / "pick")]
    code = run(lambda: pick_head.main(argv))
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "imgs" / "c") in err and "no images" in err
    assert "skip_empty_classes=true" in err
    code = run(lambda: pick_head.main([*argv, "--data-option", "skip_empty_classes=true",
                                       "--format", "json"]))
    captured = capsys.readouterr()
    assert code == 0 and "left out 1 class folder(s) without images" in captured.err
    assert str(tmp_path / "imgs" / "c") in captured.err
    run_dir = next((tmp_path / "pick" / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["num_classes"] == 2 and config["resolved"]["classes"] == ["a", "b"]
