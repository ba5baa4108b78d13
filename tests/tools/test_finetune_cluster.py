"""tools/finetune.py --launcher slurm: one fine-tune as one multi-node job (Slurm's commands are
scripts on PATH, see conftest.fake_slurm); a resume is checked before it is submitted."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import finetune  # noqa: E402
from _cli import run  # noqa: E402

TINY = ["test_resnet", "--dataset", "synthetic", "--data-option", "num_classes=4",
        "--data-option", "n_train=96", "--data-option", "n_test=32", "--data-option",
        "image_size=16", "--val-size", "32", "--epochs", "1", "--batch-size", "8", "--no-progress"]


def test_a_multi_node_fine_tune_is_one_job_of_nodes_by_gpus(tmp_path, fake_slurm, capsys):
    argv = [*TINY, "--out", str(tmp_path), "--name", "r", "--launcher", "slurm",
            "--slurm-partition", "gpu", "--slurm-nodes", "2", "--slurm-gpus-per-node", "4",
            "--slurm-cpus-per-task", "8", "--slurm-time", "12:00:00", "--no-wait"]
    assert finetune.main(argv) == 0
    said = capsys.readouterr().out
    assert f"submitted slurm job 1000: 2 node(s) x 4 process(es) for {tmp_path / 'r'}" in said
    assert f"logs in {tmp_path / 'r.logs'}" in said
    assert (f"--resume {tmp_path / 'r'} --launcher slurm --slurm-nodes 2 --slurm-gpus-per-node 4"
            in said)  # the same number of processes
    (script,) = fake_slurm.scripts()
    lines = script.splitlines()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=720", "#SBATCH --partition=gpu",
                 f"#SBATCH --output={tmp_path}/r.logs/%j_0_log.out"):
        assert line in lines, line
    assert "--array" not in script and not (tmp_path / "r").exists()  # nothing written yet


def test_a_resume_with_other_options_is_refused_before_it_is_queued(tmp_path, fake_slurm,
                                                                    capsys):
    assert finetune.main([*TINY, "--out", str(tmp_path), "--name", "r"]) == 0
    capsys.readouterr()
    argv = ["--resume", str(tmp_path / "r"), "--lr", "0.5", "--launcher", "slurm", "--no-wait"]
    assert run(lambda: finetune.main(argv)) == 2
    assert "with other options (lr " in capsys.readouterr().err and fake_slurm.scripts() == []
    argv = ["--resume", str(tmp_path / "r"), "--launcher", "slurm", "--slurm-gpus-per-node", "0",
            "--no-wait"]
    assert finetune.main(argv) == 0
    assert "1 node(s) x 1 process(es)" in capsys.readouterr().out
    assert len(fake_slurm.scripts()) == 1 and "--gpus-per-node" not in fake_slurm.scripts()[0]


def test_launcher_errors_are_one_line(tmp_path, capsys):
    for argv, message in (
            ([*TINY, "--slurm-nodes", "2"], "--slurm-nodes applies to --launcher slurm"),
            ([*TINY, "--no-wait"], "--no-wait applies to --launcher slurm or submitit-local"),
            ([*TINY, "--launcher", "submitit-local", "--slurm-nodes", "2"],
             "runs on this one machine")):
        assert run(lambda argv=argv: finetune.main([*argv, "--out", str(tmp_path)])) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
