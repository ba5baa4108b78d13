"""Which job runs which run of a study (jobs.json) and the state each run is in, for jobs that
are local processes (submitit's local executor): alive only while the recorded process is one of
ours, cancelled with its children."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from analysis.studies import cancel_study, read_jobs, study_status
from analysis.studies.jobs import record_jobs, run_states


def _local_job(tag: str, sigint: object = signal.SIG_DFL) -> subprocess.Popen:
    """A stand-in for a local job's controller: a shell (its command line names ``tag``) with a
    child process, both with ``sigint`` as their SIGINT disposition."""
    return subprocess.Popen(["/bin/sh", "-c", f"sleep 60; true  # {tag}"],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def test_local_jobs_are_running_while_their_process_is_ours(tmp_path):
    ours, other = _local_job("submitit"), _local_job("something else")
    try:
        record_jobs(tmp_path, "submitit-local", {"a": str(ours.pid), "b": str(other.pid)},
                    {"a": "logs/a.log", "b": "logs/b.log"})
        book = read_jobs(tmp_path)
        book["runs"]["c"] = dict(book["runs"]["a"], host="elsewhere")  # another machine's job
        (tmp_path / "jobs.json").write_text(json.dumps(book))
        states = run_states(tmp_path, ["a", "b", "c", "d"])
        assert {n: s.state for n, s in states.items()} == {
            "a": "running", "b": "failed", "c": "failed", "d": "not submitted"}
        assert states["a"].where == socket.gethostname() and states["a"].live
        assert states["b"].message == "the job ended without finishing the run"
        assert len(read_jobs(tmp_path)["arrays"]) == 1
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()
    assert run_states(tmp_path, ["a"])["a"].state == "failed"  # its process has ended


def test_runs_of_a_local_study_are_running_interrupted_or_not_started(tmp_path):
    from analysis.runtime import lock_run_dir

    runs = tmp_path / "runs"
    (runs / "cut").mkdir(parents=True)
    (runs / "cut" / "metrics.jsonl").write_text("{}\n")  # an interrupted run's first epoch
    (runs / "dead").mkdir()
    (runs / "dead" / ".lock").write_text(json.dumps(  # a lock file left by a killed process
        {"host": socket.gethostname(), "pid": 2**22 + 17}))
    with lock_run_dir(runs / "live"):
        states = run_states(tmp_path, ["live", "cut", "dead", "new"])
        assert {n: s.state for n, s in states.items()} == {
            "live": "running", "cut": "interrupted", "dead": "not started", "new": "not started"}
        assert states["live"].where == socket.gethostname()
        assert "again to resume" in states["cut"].message


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["interrupted",
                                                                          "ignores-sigint"])
def test_cancel_interrupts_a_local_job_and_its_children(tmp_path, monkeypatch, sigint):
    from analysis.studies import cluster

    job = _local_job("submitit", sigint)
    try:
        record_jobs(tmp_path, "submitit-local", {"r": str(job.pid)}, {"r": "logs/r.log"})
        monkeypatch.setattr(cluster, "_study_names", lambda out: ["r"])
        assert [s.state for s in study_status(tmp_path)] == ["running"]
        children = Path(f"/proc/{job.pid}/task/{job.pid}/children")
        for _ in range(100):  # until the shell has started its child
            if children.read_text().split():
                break
            time.sleep(0.05)
        (child,) = map(int, children.read_text().split())
        t0 = time.monotonic()
        assert [s.name for s in cancel_study(tmp_path)] == ["r"]
        seconds = time.monotonic() - t0
        if sigint == signal.SIG_DFL:  # SIGINT stops it at once
            assert job.wait(timeout=10) == -signal.SIGINT and seconds < 4
        else:  # killed after the grace period
            assert job.wait(timeout=10) == -signal.SIGKILL and seconds >= 5
        for _ in range(100):
            if not Path(f"/proc/{child}").exists() or \
                    Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z":
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the job's child {child} still runs")
        assert [s.state for s in study_status(tmp_path)] == ["cancelled"]  # not "failed"
        assert cancel_study(tmp_path) == []  # nothing live any more
    finally:
        job.kill()
        job.wait()


def test_a_finished_run_says_where_it_ran(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    for name, data in (("summary.json", {}), ("robustness.json", []),
                       ("placement.json", {"host": "node9", "job": "77_1"})):
        (run_dir / name).write_text(json.dumps(data))
    (state,) = run_states(Path(tmp_path), ["r"]).values()
    assert (state.state, state.where, state.job, state.live) == ("finished", "node9", "77_1", False)
