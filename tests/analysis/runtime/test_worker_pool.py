"""The study's worker pool: workers run many jobs, a crash or an error costs one job, and the
workers die with the process that started them (SIGKILL or Ctrl-C)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from analysis.runtime import Job, WorkerPool, process_alive

ROOT = Path(__file__).resolve().parents[3]
TARGET = "tests.analysis.runtime.pool_jobs:dispatch"
POOL_PY = ROOT / "analysis" / "runtime" / "worker_pool.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _job(tmp_path: Path, i: int, do: str, **extra) -> Job:
    return Job(f"{do}{i}", {"i": i, "do": do, **extra}, tmp_path / f"{do}{i}.log")


def test_workers_are_reused_and_a_crash_or_an_error_costs_one_job(tmp_path):
    plan = ["ok", "fail", "crash", "ok", "busy", "ok"]
    jobs = [_job(tmp_path, i, do) for i, do in enumerate(plan)]
    with WorkerPool(1, TARGET, ENV) as pool:
        results = {r.name: r for r in pool.run(jobs)}
    assert [results[j.name].status for j in jobs] == ["ok", "failed", "failed", "ok", "busy", "ok"]
    assert results["fail1"].message.startswith("ValueError: bad value 1")
    assert "Traceback" in (tmp_path / "fail1.log").read_text()
    crash = results["crash2"].message
    assert "killed by SIGKILL" in crash and "job 2" in crash  # the last line of its log
    first, second = results["ok0"].pid, results["ok3"].pid
    assert results["fail1"].pid == first  # an exception does not cost the worker
    assert second != first and pool.started == 2  # the crashed one was replaced
    assert results["busy4"].pid == results["ok5"].pid == second  # and the new one reused
    assert (tmp_path / "ok3.log").read_text() == f"pid {second} job 3\n"  # each job its own log
    assert all(r.seconds >= 0 for r in results.values())


def test_a_worker_is_replaced_after_max_jobs(tmp_path):
    jobs = [_job(tmp_path, i, "ok") for i in range(3)]
    with WorkerPool(1, TARGET, ENV, max_jobs=2) as pool:
        pids = [r.pid for r in pool.run(jobs)]
    assert pids[0] == pids[1] != pids[2] and pool.started == 2


_PARENT = textwrap.dedent("""
    import runpy, sys
    from pathlib import Path
    pool = runpy.run_path(sys.argv[1])
    tmp = Path(sys.argv[2])
    job = pool["Job"]("sleep0", {"i": 0, "do": "sleep", "pidfile": str(tmp / "pid")},
                      tmp / "sleep0.log")
    with pool["WorkerPool"](1, sys.argv[3]) as workers:
        workers.run([job])
""")


def _start_parent(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A parent process running a pool with one long job; returns it and its worker's pid."""
    err = tmp_path / "parent.err"  # a file, not a pipe nobody drains: a full pipe would block
    with err.open("w") as sink:    # the parent's traceback on SIGINT and hang the test
        # SIGINT as an interactive shell leaves it (default), whatever this test process
        # inherited: a command a non-interactive shell starts in the background (`make test &`,
        # as CI runners do) has SIGINT ignored, that survives exec, and the parent would then
        # never see the Ctrl-C
        parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(POOL_PY), str(tmp_path),
                                   TARGET], env=ENV, start_new_session=True, stderr=sink,
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 60
    while not (tmp_path / "pid").exists():
        assert parent.poll() is None and time.time() < deadline, err.read_text()
        time.sleep(0.05)
    return parent, int((tmp_path / "pid").read_text())


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_workers_die_with_their_parent(tmp_path, how):
    parent, worker = _start_parent(tmp_path)
    assert process_alive(worker)
    os.killpg(parent.pid, how)  # SIGINT to the group, as Ctrl-C in a terminal sends it
    parent.wait(timeout=30)
    deadline = time.time() + 10
    while process_alive(worker) and time.time() < deadline:
        time.sleep(0.05)
    assert not process_alive(worker)
