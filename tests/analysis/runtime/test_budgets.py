"""CPU and wall-clock budgets: they fire, cannot be swallowed, and keep a caller's timer."""

from __future__ import annotations

import signal
import time

import pytest

from analysis.runtime import (
    CpuBudgetExceeded,
    WallBudgetExceeded,
    budget,
    cpu_budget,
    wall_budget,
)


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _spin_catching(catch: type[BaseException], caught: list, at_most: int) -> None:
    """Up to 10 CPU s of work that catches ``catch`` up to ``at_most`` times and carries on."""
    end = time.process_time() + 10
    while time.process_time() < end:
        try:
            _spin(0.05)
        except catch as err:
            if len(caught) >= at_most:
                raise
            caught.append(err)


def test_a_cpu_budget_is_not_swallowed_by_code_that_catches_exceptions():
    swallowed = []  # torch.onnx catches Exception and tries its next capture strategy
    with pytest.raises(CpuBudgetExceeded), cpu_budget(0.2):
        _spin_catching(Exception, swallowed, at_most=10**6)
    assert not swallowed


def test_a_spent_cpu_budget_fires_again_until_its_block_ends():
    caught = []
    with pytest.raises(CpuBudgetExceeded), cpu_budget(0.2) as budget:
        _spin_catching(BaseException, caught, at_most=1)  # caught once, the work carries on
    assert len(caught) == 1 and caught[0].budget is budget is not None
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_cpu_budget_keeps_the_callers_own_timer(monkeypatch):
    fired = []
    previous = signal.signal(signal.SIGPROF, lambda *a: fired.append("outer"))
    try:
        signal.setitimer(signal.ITIMER_PROF, 20.0)
        with pytest.raises(CpuBudgetExceeded, match="within 0.2 CPU s"):
            with cpu_budget(0.2):
                _spin(5)
        left = signal.getitimer(signal.ITIMER_PROF)[0]
        assert 10 < left < 20 and not fired  # the outer timer goes on with what is left
        signal.setitimer(signal.ITIMER_PROF, 0.1)
        with cpu_budget(5):  # the outer timer is due first: it fires, as it would have
            _spin(0.5)
        assert fired == ["outer"]
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def test_a_cpu_budget_does_not_count_waiting():
    with cpu_budget(0.3):
        time.sleep(0.6)  # wall time without CPU time: a machine loaded by other jobs


def test_a_wall_budget_counts_waiting_and_keeps_the_callers_alarm():
    fired = []
    previous = signal.signal(signal.SIGALRM, lambda *a: fired.append("outer"))
    try:
        signal.setitimer(signal.ITIMER_REAL, 20.0)
        start = time.monotonic()
        with pytest.raises(WallBudgetExceeded, match="within 0.2 s"), wall_budget(0.2):
            time.sleep(5)
        assert time.monotonic() - start < 2
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 15 < left < 20 and not fired  # the outer alarm goes on with what is left
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_budget_names_its_kinds():
    with budget("wall", None), budget("cpu", None):
        pass
    with pytest.raises(ValueError, match="unknown budget kind 'gpu'; choose one of cpu, wall"):
        budget("gpu", 1)
