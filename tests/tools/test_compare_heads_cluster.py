"""tools/compare_heads.py on a cluster: a study submitted to (fake) Slurm as one job array and
followed through jobs.json and squeue (fast; Slurm's commands are scripts on PATH, see
conftest.fake_slurm), and the same study through submitit's local executor, trained for real
(slow)."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import compare_heads  # noqa: E402
from _cli import run  # noqa: E402

from analysis.studies import cluster as study_cluster  # noqa: E402
from analysis.studies import read_jobs  # noqa: E402
from analysis.training.loop import KILL_AFTER_STEPS_ENV  # noqa: E402

SYNTH = ["--dataset", "synthetic", "--data-option", "num_classes=3", "--data-option",
         "n_train=48", "--data-option", "n_test=24", "--data-option", "image_size=16",
         "--val-size", "12", "--epochs", "1", "--batch-size", "16", "--no-progress"]
GRID = ["test_resnet", "--heads", "gap", "gmp", "--seeds", "0", "1", *SYNTH]
SLURM = ["--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-account", "proj",
         "--slurm-time", "1:30:00", "--slurm-mem", "16G", "--slurm-cpus-per-run", "4",
         "--slurm-array-parallelism", "2", "--slurm-option", "qos=high", "--slurm-option",
         "mail-type=END", "--slurm-setup", "module load cuda; source ~/env/bin/activate"]


def _finish(out: Path, name: str, host: str, job: str) -> None:
    """What a job leaves when its run is done: summary, robustness and where it ran."""
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    seed = int(name.rsplit("-s", 1)[1])
    summary = {"model": "test_resnet", "head": name.split("-")[1], "train_size": 36, "seed": seed,
               "test_acc": 0.5 + 0.1 * seed, "train_acc": 1.0, "head_params": 1}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "robustness.json").write_text("[]")
    (run_dir / "placement.json").write_text(json.dumps({"host": host, "job": job}))


def _states(text: str) -> dict[str, str]:
    """run name -> state, from --status's table."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| test_resnet")]
    return {r[0]: r[1] for r in rows}


def test_a_slurm_study_is_one_array_followed_until_it_ends(tmp_path, fake_slurm, capsys,
                                                           monkeypatch):
    out = tmp_path / "study"
    cmd = [*GRID, *SLURM, "--out", str(out)]
    assert compare_heads.main([*cmd, "--no-wait"]) == 0
    said = capsys.readouterr().out
    assert "submitted 4 runs (slurm job 1000;" in said and "0 finished before" in said
    (script,) = fake_slurm.scripts()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --partition=gpu", "#SBATCH --account=proj",
                 "#SBATCH --time=90", "#SBATCH --mem=16G", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --qos=high", "#SBATCH --mail-type=END",
                 f"#SBATCH --output={out}/logs/submitit/%A_%a_0_log.out"):
        assert line in script.splitlines(), line
    setup, srun = script.index("module load cuda; source"), script.index("srun ")
    assert setup < srun  # the set-up runs before the job
    book = read_jobs(out)["runs"]
    jobs = {r["job"]: name for name, r in book.items()}
    assert sorted(jobs) == ["1000_0", "1000_1", "1000_2", "1000_3"]
    assert all(r["launcher"] == "slurm" and r["log"] == str(out / "logs" / f"{n}.log")
               for n, r in book.items())

    # one running, one queued, one finished, one failed (FAILED in accounting, its log's end)
    fake_slurm.set_queue({"1000_0": "RUNNING", "1000_1": "PENDING"}, ids={"1000_0": "1004"})
    _finish(out, jobs["1000_2"], "node3", "1000_2")
    failed = jobs["1000_3"]
    (out / "logs").mkdir(exist_ok=True)
    (out / "logs" / f"{failed}.log").write_text("Traceback (most recent call last):\n"
                                                "ValueError: boom\n\n")
    fake_slurm.set_accounting({"1000_3": "FAILED"})
    assert compare_heads.main(["--status", "--out", str(out)]) == 1
    said = capsys.readouterr().out
    assert _states(said) == {jobs["1000_0"]: "running", jobs["1000_1"]: "queued",
                             jobs["1000_2"]: "finished", failed: "failed"}
    assert "the job ended (FAILED) without finishing the run; last line of its log: " \
           "ValueError: boom" in said
    assert "1 running, 1 queued, 1 finished, 1 failed (of 4 runs)" in said

    # the same command again: only the failed run is submitted (a single job, no array)
    assert compare_heads.main([*cmd, "--no-wait"]) == 0
    said = capsys.readouterr().out
    assert "submitted 1 runs (slurm job 1001;" in said
    assert "2 already queued or running, 1 finished before" in said
    assert len(fake_slurm.scripts()) == 2 and "--array" not in fake_slurm.scripts()[1]
    assert read_jobs(out)["runs"][failed]["job"] == "1001"

    fake_slurm.set_queue({"1000_0": "RUNNING", "1000_1": "PENDING", "1001": "PENDING"})
    assert compare_heads.main(["--cancel", "--out", str(out)]) == 0  # the cancel worked
    assert "cancelled the jobs of 3 runs" in capsys.readouterr().out
    assert fake_slurm.calls("scancel") == [["1000_0", "1000_1", "1001"]]

    # waiting: nothing is submitted while all unfinished runs are queued; when they leave the
    # queue the finished ones are summarised and the one that timed out is reported
    def jobs_end(seconds: float) -> None:
        _finish(out, jobs["1000_0"], "node3", "1000_0")
        _finish(out, failed, "node4", "1001")
        fake_slurm.set_queue({})
        fake_slurm.set_accounting({"1000_1": "TIMEOUT"})

    clock = SimpleNamespace(sleep=jobs_end, perf_counter=time.perf_counter, strftime=time.strftime)
    monkeypatch.setattr(study_cluster, "time", clock)  # the study's poll, not subprocess's waits
    assert compare_heads.main(cmd) == 1
    io = capsys.readouterr()
    assert "submitted 0 runs" in io.out and "3 already queued or running" in io.out
    assert "ran 2, failed 1, busy 0" in io.out and len(fake_slurm.scripts()) == 2
    assert f"failed: {jobs['1000_1']}: the job ended (TIMEOUT) without finishing the run" in io.err
    assert str(out / "logs" / f"{jobs['1000_1']}.log") in io.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["study"]["runs"] == 3 and summary["study"]["missing"] == [jobs["1000_1"]]
    assert {(p["host"], p["runs"]) for p in summary["study"]["ran_on"]} == {("node3", 2),
                                                                          ("node4", 1)}
    text = (out / "summary.md").read_text()
    assert "## Where the runs ran" in text and re.search(r"\| node3 +\| +2 \| 1000_\d, 1000_\d", text)
    assert f"Missing runs (1): {jobs['1000_1']}" in text


def test_without_squeue_nothing_is_resubmitted_blindly(tmp_path, fake_slurm, capsys):
    out = tmp_path / "study"
    cmd = [*GRID, "--launcher", "slurm", "--out", str(out)]
    assert compare_heads.main([*cmd, "--no-wait"]) == 0
    capsys.readouterr()
    fake_slurm.remove("squeue")
    assert run(lambda: compare_heads.main([*cmd, "--no-wait"])) == 2
    assert "squeue does not answer here" in capsys.readouterr().err
    assert len(fake_slurm.scripts()) == 1
    assert compare_heads.main(["--status", "--out", str(out)]) == 1
    assert set(_states(capsys.readouterr().out).values()) == {"unknown"}


def test_the_wait_rides_out_a_busy_controller_for_a_while(tmp_path, fake_slurm, capsys,
                                                          monkeypatch):
    out = tmp_path / "study"
    cmd = [*GRID, "--launcher", "slurm", "--out", str(out)]
    submit = study_cluster.submit_study

    def then_squeue_fails(*args, **kwargs):
        submission = submit(*args, **kwargs)
        (fake_slurm.state / "squeue_fails").touch()
        return submission

    monkeypatch.setattr(study_cluster, "submit_study", then_squeue_fails)
    monkeypatch.setattr(compare_heads, "submit_study", then_squeue_fails)
    polls = []

    def recovers(seconds: float) -> None:  # squeue answers again at the 3rd poll: all done
        polls.append(seconds)
        if len(polls) == 2:
            for job, name in {r["job"]: n for n, r in read_jobs(out)["runs"].items()}.items():
                _finish(out, name, "node1", job)
            (fake_slurm.state / "squeue_fails").unlink()

    clock = SimpleNamespace(sleep=recovers, perf_counter=time.perf_counter, strftime=time.strftime)
    monkeypatch.setattr(study_cluster, "time", clock)
    assert compare_heads.main(cmd) == 0
    assert "ran 4, failed 0" in capsys.readouterr().out and polls == [30.0, 30.0]

    polls.clear()
    (out / "summary.json").unlink()
    for run_dir in (out / "runs").iterdir():
        (run_dir / "summary.json").unlink()  # unfinished again, and squeue never answers
    fake_slurm.set_queue({"1000_0": "RUNNING"})
    monkeypatch.setattr(study_cluster, "time", SimpleNamespace(
        sleep=polls.append, perf_counter=time.perf_counter, strftime=time.strftime))
    capsys.readouterr()
    assert run(lambda: compare_heads.main(cmd)) == 2
    io = capsys.readouterr()
    assert "submitted 3 runs (slurm job 1001;" in io.out  # 1000_0 is still running
    assert "squeue did not answer 10 times in a row" in io.err
    assert len(polls) == 9 and not (out / "summary.json").exists()


@pytest.mark.parametrize("argv,message", [
    ([*GRID, "--slurm-partition", "gpu"], "--slurm-partition applies to --launcher slurm"),
    ([*GRID, "--no-wait"], "--no-wait applies to --launcher slurm or submitit-local"),
    ([*GRID, "--launcher", "slurm", "--shard", "0/2"], "drop --shard"),
    ([*GRID, "--launcher", "slurm", "--jobs", "2"], "--jobs and --runs-per-worker say how"),
    ([*GRID, "--launcher", "submitit-local", "--runs-per-worker", "1"], "each run is its own"),
    ([*GRID, "--launcher", "slurm", "--slurm-option", "time=5"], "use --slurm-time"),
    ([*GRID, "--launcher", "slurm", "--slurm-time", "soon"], "--slurm-time expects"),
    (["--status"], "--out STUDY_DIR is required"),
])
def test_cluster_flag_errors_are_one_line_and_exit_2(argv, message, tmp_path, capsys):
    argv = argv if "--status" in argv else [*argv, "--out", str(tmp_path / "s")]
    assert run(lambda: compare_heads.main(argv)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_status_of_a_directory_that_is_no_study(tmp_path, capsys):
    assert run(lambda: compare_heads.main(["--status", "--out", str(tmp_path)])) == 2
    assert "is not a study directory" in capsys.readouterr().err


def test_a_slurm_study_without_submitit_names_the_extra(tmp_path, monkeypatch, capsys):
    from analysis.runtime import submitit_glue

    monkeypatch.setattr(submitit_glue, "has_submitit", False)
    argv = [*GRID, "--launcher", "slurm", "--out", str(tmp_path / "s")]
    assert run(lambda: compare_heads.main(argv)) == 2
    assert "pip install 'headswap[cluster]'" in capsys.readouterr().err


# ---------------------------------------------------------------- submitit's local executor
# the columns of runs.csv that depend on the machine and the moment, not on the training
VOLATILE = {"epoch_time_s", "img_per_s", "peak_mem_mb", "time_s", "run_dir", "host", "job"}
LOCAL = ["test_resnet", "--heads", "gap", "gmp", "--seeds", "0", "1", *SYNTH, "--epochs", "2",
         "--robust-sizes", "16", "--threads", "1"]


def _runs(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "runs.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in VOLATILE} for row in csv.DictReader(f)]


def _metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


@pytest.mark.slow
@pytest.mark.smoke
def test_one_run_through_the_local_executor_is_waited_for_and_summarised(tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["test_resnet", "--heads", "gap", *SYNTH, "--robust-sizes", "16",
            "--launcher", "submitit-local", "--slurm-cpus-per-run", "1", "--out", str(out)]
    assert compare_heads.main(argv) == 0
    said = capsys.readouterr().out
    assert "submitted 1 runs (submitit-local job " in said and "ran 1, failed 0" in said
    (run_dir,) = (out / "runs").iterdir()
    job = read_jobs(out)["runs"][run_dir.name]["job"]
    placement = json.loads((run_dir / "placement.json").read_text())
    assert (placement["scheduler"], placement["job"]) == ("submitit-local", job)
    log = (out / "logs" / f"{run_dir.name}.log").read_text()
    assert log.startswith(f"== {run_dir.name}: job {job} on ")
    assert (out / "logs" / "submitit" / f"{job}_0_log.out").is_file()
    assert json.loads((out / "summary.json").read_text())["study"]["runs"] == 1


@pytest.mark.slow
def test_a_local_executor_study_survives_a_killed_run_and_equals_the_uninterrupted_one(
        tmp_path, monkeypatch, capsys):
    """2 heads x 2 seeds through --launcher submitit-local: submitted with --no-wait, one run
    SIGKILLed mid-way (after 3 of its 4 steps); the same command again waits, reports the killed
    run with its log and summarises the other three; once more it submits only the killed run,
    which resumes, and the study equals one run here without a launcher."""
    ref, out = tmp_path / "ref", tmp_path / "cluster"
    assert compare_heads.main([*LOCAL, "--jobs", "0", "--out", str(ref)]) == 0
    capsys.readouterr()
    cmd = [*LOCAL, "--launcher", "submitit-local", "--out", str(out)]
    victim = "test_resnet-gmp-synthetic-nall-s1"
    monkeypatch.setenv(KILL_AFTER_STEPS_ENV, f"{victim}=3")  # SIGKILLs itself after step 3
    assert compare_heads.main([*cmd, "--no-wait"]) == 0
    monkeypatch.delenv(KILL_AFTER_STEPS_ENV)
    said = capsys.readouterr().out
    assert "submitted 4 runs (submitit-local jobs" in said and "not waiting" in said
    book = read_jobs(out)["runs"]
    assert len(book) == 4 and {r["launcher"] for r in book.values()} == {"submitit-local"}

    assert compare_heads.main(cmd) == 1  # the four are still running: nothing is resubmitted
    io = capsys.readouterr()
    assert "submitted 0 runs" in io.out and "4 already queued or running" in io.out
    assert "ran 3, failed 1, busy 0" in io.out
    assert f"failed: {victim}: the job ended without finishing the run" in io.err
    assert str(out / "logs" / f"{victim}.log") in io.err
    assert json.loads((out / "summary.json").read_text())["study"]["missing"] == [victim]
    cut = out / "runs" / victim
    assert (cut / "last.pt").is_file() and not (cut / "summary.json").exists()

    assert compare_heads.main(["--status", "--out", str(out)]) == 1
    states = _states(capsys.readouterr().out)
    assert states.pop(victim) == "failed" and set(states.values()) == {"finished"}

    assert compare_heads.main(cmd) == 0  # only the killed run again; it resumes
    said = capsys.readouterr().out
    assert "submitted 1 runs" in said and "3 finished before" in said
    assert read_jobs(out)["runs"][victim]["job"] != book[victim]["job"]
    assert (out / "logs" / f"{victim}.log").read_text().count(f"== {victim}: job ") == 2
    assert _runs(out) == _runs(ref) and len(_runs(ref)) == 4
    assert _metrics(cut) == _metrics(ref / "runs" / victim)
    placement = json.loads((cut / "placement.json").read_text())
    assert placement["scheduler"] == "submitit-local"
    assert placement["job"] == read_jobs(out)["runs"][victim]["job"]
    text = (out / "summary.md").read_text()
    assert "## Where the runs ran" in text and "Missing runs" not in text
    assert compare_heads.main(["--status", "--out", str(out)]) == 0


@pytest.mark.slow
def test_the_tasks_of_a_linear_probe_study_share_one_feature_cache(tmp_path, capsys):
    """Two heads on one frozen backbone as two local jobs started at once: one extracts the
    features into STUDY/features under the cache's lock, the other waits and reads them."""
    out = tmp_path / "probe"
    argv = ["test_resnet", "--heads", "gap", "gmp", *SYNTH, "--regime", "linear-probe",
            "--robust-sizes", "16", "--launcher", "submitit-local", "--slurm-cpus-per-run", "1",
            "--out", str(out)]
    assert compare_heads.main(argv) == 0
    assert "ran 2, failed 0" in capsys.readouterr().out
    (cache,) = (out / "features").glob("*.feat")
    logs = [p.read_text() for p in sorted((out / "logs").glob("*.log"))]
    lines = [ln for log in logs for ln in log.splitlines() if ln.startswith("features: ")]
    assert len(lines) == 2 and all(str(cache) in ln for ln in lines)
    assert sum(" extracted in " in ln for ln in lines) == 1
    assert sum(ln.startswith("features: 72 images read") for ln in lines) == 1  # 36+12+24
    for run_dir in (out / "runs").iterdir():  # each run reads the study's file, builds nothing
        info = json.loads((run_dir / "summary.json").read_text())["feature_cache"]
        assert info["used"] and info["path"] == str(cache) and not info["built"], info


@pytest.mark.slow
@pytest.mark.smoke
def test_local_jobs_let_go_of_the_terminal_and_a_cancel_says_cancelled(tmp_path):
    """--no-wait returns with the pipes closed (the local controllers write to the study's
    log, not the caller's terminal); --cancel exits 0 and lists the runs as cancelled, with no
    traceback anywhere but the controllers' log."""
    import subprocess

    out = tmp_path / "s"
    tool = [sys.executable, str(ROOT / "tools" / "compare_heads.py")]
    argv = [*tool, *GRID[:4], *SYNTH, "--epochs", "2000", "--launcher", "submitit-local",
            "--slurm-cpus-per-run", "1", "--no-wait", "--out", str(out)]
    t0 = time.monotonic()
    # communicate() reads to EOF: a controller holding the pipe would block it until its job ends
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 < 100 and "submitted 2 runs" in done.stdout
    cancel = subprocess.run([*tool, "--cancel", "--out", str(out)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    said = cancel.stdout + cancel.stderr
    assert cancel.returncode == 0, said
    assert "cancelled the jobs of 2 runs" in said and "Traceback" not in said
    status = subprocess.run([*tool, "--status", "--out", str(out)], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert set(_states(status.stdout).values()) == {"cancelled"}, status.stdout
    assert "failed" not in status.stdout
    assert (out / "logs" / "submitit" / "controllers.log").is_file()
