"""Process pools: workers die with a parent killed alone, results come back from either pool."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.runtime import map_unordered, process_alive, process_pool, sigterm_as_interrupt

ROOT = Path(__file__).resolve().parents[3]


def _square(x: int) -> int:
    return x * x


def test_map_unordered_gives_every_result_in_workers_and_in_process():
    assert sorted(map_unordered(_square, range(6), 2, start="fork")) == [0, 1, 4, 9, 16, 25]
    assert list(map_unordered(_square, range(3), 1)) == [0, 1, 4]  # in order, here


def test_process_pool_runs_in_other_processes():
    with process_pool(2, start="fork") as pool:
        pids = set(pool.map(_pid, range(4)))
    assert pids and os.getpid() not in pids


def _pid(_: int) -> int:
    return os.getpid()


def _worker_handlers(_: int) -> bool:
    return (signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)


def test_forked_workers_ignore_ctrl_c_and_end_on_sigterm():
    """Not the sweep's SIGTERM-as-Ctrl-C they were forked with: a pool stops its workers with
    SIGTERM, which would print a KeyboardInterrupt traceback for each."""
    with sigterm_as_interrupt():
        assert all(map_unordered(_worker_handlers, range(4), 2, start="fork"))
        with process_pool(2, start="fork") as pool:
            assert all(pool.map(_worker_handlers, range(4)))


def test_an_unknown_start_method_is_refused():
    with pytest.raises(ValueError, match="unknown start method 'forkserver'; choose one of fork, "
                                         "spawn"):
        list(map_unordered(_square, [1, 2], 2, start="forkserver"))


_PARENT = """
import multiprocessing as mp, sys, threading, time
from analysis.runtime import map_unordered
if __name__ == "__main__":
    work = lambda: list(map_unordered(time.sleep, [120, 120], 2))
    threading.Thread(target=work, daemon=True).start()
    while len(mp.active_children()) < 2:
        time.sleep(0.05)
    print(" ".join(str(p.pid) for p in mp.active_children()), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_pool_workers_die_with_a_parent_killed_alone(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert len(workers) == 2 and all(map(process_alive, workers))
        parent.kill()  # SIGKILL to the parent alone: no chance to stop its pool
        parent.wait(timeout=10)
        deadline = time.time() + 60  # a worker still importing its initializer dies after it
        while any(map(process_alive, workers)) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(map(process_alive, workers))
    finally:
        parent.kill()


def test_run_command_times_a_command_and_keeps_its_output(tmp_path):
    from analysis.runtime import run_command

    log = tmp_path / "out.log"
    done = run_command([sys.executable, "-c", "import sys; sum(range(10**6)); print('hi'); "
                        "sys.exit(3)"], log=log, cwd=tmp_path)
    assert done.code == 3 and log.read_text() == "hi\n"
    assert done.wall_s >= done.cpu_s * 0.5 > 0
