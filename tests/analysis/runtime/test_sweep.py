"""The sweep frame: the JSONL store resumes, a sweep keeps its rows when stopped, budgets time."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from analysis.runtime import (
    CpuBudgetExceeded,
    ItemBudget,
    JsonlStore,
    command_line,
    run_sweep,
    write_files,
)


def _row(i: int) -> dict:
    return {"model": f"m{i}", "value": i * i}


def test_the_store_keeps_the_last_line_per_key_and_skips_a_line_cut_short(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"model": "a", "v": 1}\n{"model": "b", "v": 2}\n{"model": "a", "v": 3}\n'
                    '{"model": "c", "v"')
    store = JsonlStore(path, key=lambda r: r["model"])
    assert store.load() == {"a": {"model": "a", "v": 3}, "b": {"model": "b", "v": 2}}
    with store.writing():
        assert store.add([{"model": "c", "v": 4}]) == 1
    assert JsonlStore(path, key=lambda r: r["model"]).load()["c"] == {"model": "c", "v": 4}
    with store.writing(fresh=True):
        store.add([{"model": "d", "v": 5}])
    assert path.read_text() == '{"model": "d", "v": 5}\n'
    with pytest.raises(RuntimeError, match="outside JsonlStore.writing"):
        store.add([{"model": "e"}])


def test_a_sweep_appends_each_result_and_resumes(tmp_path):
    store = JsonlStore(tmp_path / "s.jsonl", key=lambda r: r["model"])
    run = run_sweep(_row, [1, 2, 3], store, jobs=2, start="fork", progress=False)
    assert (run.computed, run.interrupted) == (3, False)
    assert {json.loads(line)["model"] for line in store.path.read_text().splitlines()} == {
        "m1", "m2", "m3"}
    again = JsonlStore(store.path, key=lambda r: r["model"])
    assert again.load()["m3"]["value"] == 9


def _stop_at_two(i: int) -> dict:
    if i == 2:
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler stopping the sweep
    return _row(i)


def test_sigterm_stops_a_sweep_and_keeps_the_rows_written(tmp_path):
    store = JsonlStore(tmp_path / "s.jsonl", key=lambda r: r["model"])
    previous = signal.getsignal(signal.SIGTERM)
    run = run_sweep(_stop_at_two, [1, 2, 3], store, jobs=1, progress=False)
    assert run.interrupted and run.computed == 1
    assert [json.loads(x)["model"] for x in store.path.read_text().splitlines()] == ["m1"]
    assert signal.getsignal(signal.SIGTERM) is previous  # put back


def test_an_item_budget_says_what_the_item_took():
    with ItemBudget("wall", 10) as item:
        time.sleep(0.2)
    assert item.seconds >= 0.2 and item.cpu_seconds < 0.2
    with pytest.raises(CpuBudgetExceeded), ItemBudget("cpu", 0.1) as spent:
        end = time.process_time() + 5
        while time.process_time() < end:
            pass
    assert 0.05 < spent.cpu_seconds < 2  # the timer and process_time tick apart a little


def test_report_files_and_the_command(tmp_path):
    md, js = write_files(tmp_path / "out", {"r.md": "# r\n", "r.json": {"x": float("nan")}},
                         indent=1)
    assert md.read_text() == "# r\n" and js.read_text() == '{\n "x": null\n}\n'
    assert command_line("zoo_table.py", ["--jobs", "2"]) == "python tools/zoo_table.py --jobs 2"
