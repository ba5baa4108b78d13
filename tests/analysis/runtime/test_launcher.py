"""Cluster launch options, what Slurm's queue says (fake commands on PATH, see conftest), and the
run-directory lock taking over from a Slurm job that has left the queue."""

from __future__ import annotations

import argparse
import fcntl
import getpass
import json
import os

import pytest

from analysis.runtime import (
    RunInUseError,
    SlurmOptions,
    add_launcher_options,
    cancel_slurm_jobs,
    lock_run_dir,
    make_executor,
    parse_mem,
    parse_time,
    refuse_slurm_flags,
    require_submitit,
    slurm_end_states,
    slurm_options_from_args,
    slurm_queue,
    submitit_glue,
)


@pytest.mark.parametrize("text,minutes", [
    ("90", 90), ("45:30", 46), ("1:30:00", 90), ("4:00:00", 240), ("0:00:01", 1),
    ("2-00:00:00", 2880), ("1-12", 2160), ("1-0:30", 1470),
])
def test_slurm_times_read_as_slurm_reads_them(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "abc", "1:2:3:4", "0", "0:00:00", "-5", "1h"])
def test_a_bad_slurm_time_says_what_is_expected(text):
    with pytest.raises(ValueError, match="--slurm-time expects|at least one minute"):
        parse_time(text)


def test_memory_sizes():
    assert [parse_mem(t) for t in ("16G", "500m", "2048", "1TB", " 8 g")] == \
        ["16G", "500M", "2048M", "1T", "8G"]
    for bad in ("0G", "1.5G", "lots", "16GiB"):
        with pytest.raises(ValueError, match="--slurm-mem expects"):
            parse_mem(bad)


def _args(*argv: str, study: bool = True) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = argparse.ArgumentParser()
    add_launcher_options(p, study=study)
    return p, p.parse_args(list(argv))


def test_study_flags_become_per_run_options():
    _, args = _args("--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-account", "proj",
                    "--slurm-time", "2:00:00", "--slurm-mem", "32g", "--slurm-gpus-per-run", "2",
                    "--slurm-cpus-per-run", "8", "--slurm-array-parallelism", "5",
                    "--slurm-option", "qos=high", "--slurm-option", "mail-type=END",
                    "--slurm-setup", "module load cuda", "--slurm-setup", " ")
    opts = slurm_options_from_args(args)
    assert (opts.partition, opts.account, opts.time_min, opts.mem) == ("gpu", "proj", 120, "32G")
    assert (opts.nodes, opts.tasks_per_node, opts.gpus_per_node, opts.cpus_per_task) == (1, 1, 2, 8)
    assert opts.array_parallelism == 5 and opts.setup == ("module load cuda",)
    assert opts.options == {"qos": "high", "mail_type": "END"}


def test_finetune_flags_become_one_job_of_nodes_by_processes():
    _, args = _args("--launcher", "slurm", "--slurm-nodes", "2", "--slurm-gpus-per-node", "4",
                    study=False)
    opts = slurm_options_from_args(args)
    assert (opts.nodes, opts.gpus_per_node, opts.tasks_per_node) == (2, 4, 4)
    _, args = _args("--launcher", "submitit-local", "--slurm-gpus-per-node", "0",
                    "--slurm-tasks-per-node", "2", study=False)
    opts = slurm_options_from_args(args)
    assert (opts.nodes, opts.gpus_per_node, opts.tasks_per_node) == (1, 0, 2)
    _, args = _args("--launcher", "slurm", "--slurm-gpus-per-node", "0", study=False)
    assert slurm_options_from_args(args).tasks_per_node == 1  # a CPU job: one process


@pytest.mark.parametrize("option,way", [
    ("partition=gpu", "use --slurm-partition"), ("time=10", "use --slurm-time"),
    ("array=0-3", "use --slurm-array-parallelism"), ("output=x.log", "headswap sets it itself"),
    ("cpus-per-task=4", "the CPU flags"),
])
def test_slurm_options_that_our_flags_own_are_refused(option, way):
    _, args = _args("--launcher", "slurm", "--slurm-option", option)
    with pytest.raises(ValueError, match=way):
        slurm_options_from_args(args)


def test_slurm_flags_without_a_cluster_launcher_are_refused():
    p, args = _args("--slurm-partition", "gpu", "--slurm-time", "10")
    with pytest.raises(ValueError, match="--slurm-partition, --slurm-time applies to --launcher"):
        refuse_slurm_flags(p, args)
    p, args = _args("--launcher", "slurm", "--slurm-partition", "gpu")
    refuse_slurm_flags(p, args)  # fine with a cluster launcher


def test_without_submitit_the_message_names_the_extra(monkeypatch):
    monkeypatch.setattr(submitit_glue, "has_submitit", False)
    with pytest.raises(ValueError, match=r"needs submitit, the optional extra 'cluster': pip "
                                         r"install 'headswap\[cluster\]'"):
        require_submitit("slurm")


def test_slurm_launcher_outside_a_cluster_says_where_to_run(tmp_path, fake_slurm):
    fake_slurm.remove("srun")
    with pytest.raises(ValueError, match="needs Slurm's srun and sbatch on PATH"):
        make_executor("slurm", tmp_path, SlurmOptions())
    with pytest.raises(ValueError, match="runs on this one machine"):
        make_executor("submitit-local", tmp_path, SlurmOptions(nodes=2))


def test_queue_lists_array_tasks_under_both_ids(fake_slurm):
    fake_slurm.set_queue({"1000_0": "RUNNING", "1000_1": "PENDING", "1002": "COMPLETING"},
                         ids={"1000_0": "1001"})
    assert slurm_queue() == {"1000_0": "RUNNING", "1001": "RUNNING", "1000_1": "PENDING",
                             "1002": "COMPLETING"}
    assert fake_slurm.calls("squeue")[-1] == ["-h", "-r", "-u", getpass.getuser(), "-o",
                                              "%i|%A|%T"]
    assert slurm_queue("alice") is not None and fake_slurm.calls("squeue")[-1][3] == "alice"
    (fake_slurm.state / "squeue_fails").touch()
    assert slurm_queue() is None  # cannot tell
    fake_slurm.remove("squeue")
    assert slurm_queue() is None


def test_end_states_and_cancel(fake_slurm):
    fake_slurm.set_accounting({"1000_3": "FAILED", "1004": "CANCELLED by 42"})
    assert slurm_end_states(["1004", "1000_3", "1004"]) == {"1000_3": "FAILED",
                                                           "1004": "CANCELLED"}
    assert fake_slurm.calls("sacct")[-1][-1] == "1000_3,1004"
    assert slurm_end_states([]) == {} and len(fake_slurm.calls("sacct")) == 1
    assert cancel_slurm_jobs(["1000_1", "1000_0"]) is None
    assert fake_slurm.calls("scancel") == [["1000_0", "1000_1"]]
    fake_slurm.remove("scancel")
    assert "scancel is not on PATH" in str(cancel_slurm_jobs(["1"]))


def _held_by(run_dir, owner: dict) -> int:
    """Hold ``run_dir``'s lock through another open file (as a stray process would), recording
    ``owner``; returns the descriptor (closing it lets go)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps(owner).encode())
    return fd


NODE7 = {"host": "node7", "user": "alice", "pid": 4242, "started": "2030-01-01",
         "slurm_job_id": "777", "slurm_restart": 0}


def test_a_lock_whose_slurm_job_left_the_queue_is_taken_over(tmp_path, fake_slurm):
    run_dir = tmp_path / "run"
    fd = _held_by(run_dir, NODE7)
    try:
        fake_slurm.set_queue({"500": "RUNNING"})  # job 777 is not there any more
        with lock_run_dir(run_dir):
            owner = json.loads((run_dir / ".lock").read_text())
            assert owner["pid"] == os.getpid() and owner["host"] != "node7"
        assert fake_slurm.calls("squeue")[-1][2:4] == ["-u", "alice"]  # the owner's jobs
    finally:
        os.close(fd)


@pytest.mark.parametrize("queue", [{"777": "RUNNING"}, {"777": "PENDING"}, None])
def test_a_lock_of_a_live_slurm_job_or_an_unknown_one_is_respected(tmp_path, fake_slurm, queue):
    run_dir = tmp_path / "run"
    fd = _held_by(run_dir, NODE7)
    try:
        if queue is None:
            fake_slurm.remove("squeue")  # cannot tell: the owner counts as there
        else:
            fake_slurm.set_queue(queue)
        with pytest.raises(RunInUseError, match=r"pid 4242 on node7 .*\(Slurm job 777\)"):
            with lock_run_dir(run_dir):
                pass
        assert json.loads((run_dir / ".lock").read_text())["pid"] == 4242
    finally:
        os.close(fd)


def test_a_requeued_job_takes_over_its_own_earlier_lock(tmp_path, fake_slurm, monkeypatch):
    fake_slurm.remove("squeue")  # no need to ask: Slurm runs one incarnation of a job at a time
    run_dir = tmp_path / "run"
    fd = _held_by(run_dir, NODE7)
    monkeypatch.setenv("SLURM_JOB_ID", "777")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    try:
        with lock_run_dir(run_dir):
            owner = json.loads((run_dir / ".lock").read_text())
            assert (owner["slurm_job_id"], owner["slurm_restart"]) == ("777", 1)
        monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # the same incarnation: still in use
        fd2 = _held_by(tmp_path / "other", NODE7)
        try:
            with pytest.raises(RunInUseError):
                with lock_run_dir(tmp_path / "other"):
                    pass
        finally:
            os.close(fd2)
    finally:
        os.close(fd)
