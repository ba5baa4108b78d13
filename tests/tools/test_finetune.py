"""tools/finetune.py: flags, a tiny run in-process, user errors, and a real kill + --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import finetune  # noqa: E402
from _cli import run  # noqa: E402

from analysis.data import readers as data_mod  # noqa: E402
from analysis.training import run_name  # noqa: E402
from analysis.training.loop import KILL_AFTER_STEPS_ENV  # noqa: E402
from tests.tiny_runs import TINY_ARGS as TINY  # noqa: E402

TIME_KEYS = {"epoch_time_s", "img_per_s", "peak_mem_mb"}


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        finetune.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--head", "--dataset", "--data-dir", "--download", "--train-size", "--val-size",
                 "--img-size", "--epochs", "--opt", "--lr", "--weight-decay", "--warmup-epochs",
                 "--label-smoothing", "--clip-grad", "--regime", "--amp", "--channels-last",
                 "--seed", "--out", "--resume"):
        assert flag in out


# the kinds and data sets users are promised (README), spelled out rather than read from the
# registries the parser is built from
KNOWN_HEADS = ("gap", "gmp", "gapmp", "flatten", "nin", "gem", "attn", "token", "spp", "original")
KNOWN_DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic")


def test_every_known_data_set_parses_and_a_wrong_one_lists_them(capsys):
    parser = finetune.build_parser()
    for value in KNOWN_DATASETS:
        assert parser.parse_args(["resnet18", "--dataset", value]).dataset == value
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["resnet18", "--dataset", "nosuch"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --dataset: invalid choice: 'nosuch'" in err
    for value in KNOWN_DATASETS:
        assert repr(value) in err


def test_every_known_head_parses_and_a_wrong_one_lists_them(capsys):
    parser = finetune.build_parser()
    for value in KNOWN_HEADS:  # a head spec, parsed when the config is built
        cfg = finetune.config_from_args(parser.parse_args(["resnet18", "--head", value]))
        assert cfg.head_spec().kind == value
    assert run(lambda: finetune.main(["resnet18", "--head", "nosuch"])) == 2
    err = capsys.readouterr().err
    assert "unknown head 'nosuch'" in err and len(err.strip().splitlines()) == 1
    assert ", ".join(KNOWN_HEADS[:5]) in err


def test_flags_become_the_config():
    args = finetune.build_parser().parse_args(
        ["resnet18", "--hidden", "32", "16", "--val-size", "0.2", "--train-size", "500",
         "--data-option", "n_train=64", "--data-option", "gray=true", "--opt", "sgd",
         "--no-augment", "--regime", "two-stage", "--no-channels-last"])
    cfg = finetune.config_from_args(args)
    assert cfg.model == "resnet18" and cfg.hidden == (32, 16) and cfg.val_size == 0.2
    assert cfg.train_size == 500 and cfg.optimizer == "sgd" and cfg.augment is False
    assert cfg.data_options == {"n_train": 64, "gray": True} and cfg.regime == "two-stage"
    assert cfg.channels_last is False and cfg.in_chans is None


def test_decoding_flags_become_the_config_and_bad_ones_list_the_choices(capsys):
    parser = finetune.build_parser()
    cfg = finetune.config_from_args(parser.parse_args(
        ["resnet18", "--dataset", "imagefolder", "--resize", "pad", "--decode-workers", "3",
         "--data-cache-dir", "/tmp/c"]))
    assert (cfg.resize, cfg.decode_workers, cfg.data_cache_dir) == ("pad", 3, "/tmp/c")
    assert finetune.config_from_args(parser.parse_args(["resnet18"])).resize == "shorter-crop"
    with pytest.raises(SystemExit):
        parser.parse_args(["resnet18", "--resize", "crop"])
    assert "choose from 'shorter-crop', 'squash', 'pad'" in capsys.readouterr().err


def test_head_spec_options_reach_the_config_and_the_run_name():
    args = finetune.build_parser().parse_args(["resnet18", "--head", "gem:p=2:learn_p=0",
                                               "--dropout", "0.5", "--train-size", "100"])
    cfg = finetune.config_from_args(args)
    assert str(cfg.head_spec()) == "gem:p=2:learn_p=0:dropout=0.5"
    assert run_name(cfg) == "resnet18-gem-p2-learn_p0-d0.5-fashion-mnist-n100-s0"


@pytest.mark.parametrize("argv", [["--head", "gap:hidden=16", "--hidden", "16"],
                                  ["--head", "spp:dropout=0.2", "--dropout", "0"]])
def test_a_spec_and_a_flag_setting_the_same_option_are_refused(argv, capsys):
    assert run(lambda: finetune.main(["resnet18", *argv])) == 2
    assert "ambiguous" in capsys.readouterr().err


def test_tiny_run_in_process(tmp_path, capsys):
    assert finetune.main(TINY + ["--out", str(tmp_path), "--name", "r"]) == 0
    captured = capsys.readouterr()
    assert "epoch   2" in captured.out and "test acc" in captured.out
    # test_resnet at 16 px has a 1x1 final grid: one clean warning line, no source echo
    assert "warning: test_resnet: the final feature grid is 1x1" in captured.err
    assert "swap_head(" not in captured.err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"] == "test_resnet" and summary["epochs"] == 2


@pytest.mark.parametrize("argv, expect", [
    (["resnet18", "--dataset", "fashion-mnist"], "fashion-mnist not found"),
    (TINY + ["--train-size", "1000"], "train-size 1000 is larger than the data"),
    (["test_convnext"] + TINY[1:] + ["--img-size", "4"], "too small for test_convnext"),
    (["--epochs", "1"], "give a model name"),
    (["resnet81"], "unknown model 'resnet81'; closest"),
    (TINY + ["--data-option", "oops"], "KEY=VALUE"),
    (TINY + ["--clip-grad", "-1"], "--clip-grad must be a finite number > 0"),
    (TINY + ["--label-smoothing", "1.5"], "--label-smoothing must be a finite number in [0, 1)"),
    (TINY + ["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (TINY + ["--lr", "inf"], "--lr must be a finite number > 0"),
    (TINY + ["--momentum", "-0.5"], "--momentum must be"),
    (TINY + ["--timm-option", "num_classes=5"], "num_classes is set by headswap itself"),
    (TINY + ["--data-option", "num_classes=1"], "classification needs at least 2"),
    (TINY + ["--skip-bad-images"], "synthetic has no option skip_bad_images"),
])
def test_user_errors_are_one_line_and_exit_2(argv, expect, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HEADSWAP_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path / "none")
    code = run(lambda: finetune.main(argv + ["--out", str(tmp_path), "--data-dir",
                                             str(tmp_path / "nodata")]))
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and expect in errors[0]
    assert not [line for line in err if "Traceback" in line]


def test_skip_bad_images_is_a_data_option_of_the_run():
    args = finetune.build_parser().parse_args(["resnet18", "--dataset", "imagefolder",
                                               "--skip-bad-images"])
    assert finetune.config_from_args(args).data_options == {"skip_bad_images": True}


def _takes_files(directory: str) -> bool:
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize("out, expect", [
    ("file", "is a file, not a directory"),
    ("/sys/headswap-test", "cannot write in '/sys'"),
])
def test_an_out_that_cannot_be_written_is_one_line(out, expect, tmp_path, capsys):
    if out.startswith("/sys") and _takes_files("/sys"):
        pytest.skip("needs a directory that takes no new files")
    (tmp_path / "file").write_text("x")
    target = out if out.startswith("/") else str(tmp_path / out)
    code = run(lambda: finetune.main(TINY + ["--out", target]))
    err = capsys.readouterr().err
    assert code == 2 and expect in err and "Traceback" not in err


def _cli(*args: str, **environ: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", **environ)
    return subprocess.run([sys.executable, str(ROOT / "tools" / "finetune.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.smoke
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    opts = TINY + ["--hidden", "16", "--dropout", "0.5", "--ckpt-steps", "3", "--out", str(tmp_path)]
    assert _cli(*opts, "--name", "full").returncode == 0
    killed = _cli(*opts, "--name", "cut", **{KILL_AFTER_STEPS_ENV: "13"})  # epoch 2, step 5 of 8
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut" / "summary.json").exists()
    resumed = _cli("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr
    rows = {}
    for name in ("full", "cut"):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        rows[name] = [{k: v for k, v in json.loads(x).items() if k not in TIME_KEYS} for x in lines]
    assert rows["full"] == rows["cut"] and len(rows["full"]) == 2
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("full", "cut"))
    assert (a["test_acc"], a["test_loss"]) == (b["test_acc"], b["test_loss"])


@pytest.mark.parametrize("damage, expect, refused", [
    (lambda text: text[: len(text) // 2], "config.json is damaged or cut short", "Unterminated"),
    (lambda text: text.replace('"epochs": 2', '"epochs": -1'), "config.json holds a setting",
     "--epochs"),
])
def test_a_damaged_config_json_names_the_file_and_the_run(damage, expect, refused, tmp_path,
                                                          capsys):
    assert run(lambda: finetune.main([*TINY, "--out", str(tmp_path), "--name", "r"])) == 0
    config = tmp_path / "r" / "config.json"
    (tmp_path / "r" / "summary.json").unlink()  # unfinished: a resume reads its config
    config.write_text(damage(config.read_text()))
    capsys.readouterr()
    code = run(lambda: finetune.main(["--resume", str(tmp_path / "r")]))
    err = capsys.readouterr().err
    assert code == 2 and expect in err and str(tmp_path / "r") in err
    assert refused not in err.split("(")[0]  # the file is named, not a flag or a parser position
    assert err.count("\n") == 1
