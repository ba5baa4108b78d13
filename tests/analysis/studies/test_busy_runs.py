"""A study re-run while another process still trains one of its runs leaves that run alone."""

from __future__ import annotations

import fcntl
import json
import os

from analysis.studies import StudySpec, combinations, parse_head, run_study

TINY_DATA = {"num_classes": 4, "n_train": 64, "n_test": 32, "image_size": 16, "channels": 1}


def test_a_run_in_use_elsewhere_is_skipped_with_a_note(tmp_path):
    spec = StudySpec(("test_resnet",), (parse_head("gap"), parse_head("gmp")), (0,), (None,),
                     {"dataset": "synthetic", "data_options": TINY_DATA, "val_size": 16,
                      "epochs": 1, "batch_size": 16, "lr": 0.01}, robust_sizes=(16,))
    gap, gmp = (str(c.config(spec, tmp_path).name) for c in combinations(spec))
    busy = tmp_path / "runs" / gmp
    busy.mkdir(parents=True)
    fd = os.open(busy / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process (or its orphaned worker)
    os.write(fd, json.dumps({"host": "node7", "pid": 4242, "started": "2030-01-01"}).encode())
    try:
        result = run_study(spec, tmp_path, jobs=0, progress=False)
    finally:
        os.close(fd)
    assert result["ran"] == [gap] and result["failed"] == []
    assert [name for name, _ in result["busy"]] == [gmp]
    assert "in use by pid 4242 on node7" in result["busy"][0][1]
    assert [p.name for p in busy.iterdir()] == [".lock"]  # not run twice into one directory
    assert result["report"]["meta"]["runs"] == 1
