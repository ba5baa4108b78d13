"""benchmarks/data_load.py on a tiny folder: its baseline decodes what image folders decoded
before the cache, and its report holds every phase and target with the command."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from analysis.data import decode_pixels, write_photo_folder

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_load.py"


def _bench():
    spec = importlib.util.spec_from_file_location("data_load_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_baseline_is_the_old_squash_decode(tmp_path):
    write_photo_folder(tmp_path, 6, classes=2, size=(40, 30), source="shapes", workers=1)
    files = sorted(tmp_path.rglob("*.jpg"))
    today = _bench().today_decode(files, 24)              # 24 px: more than half, no draft mode
    assert today.shape == (6, 3, 24, 24)
    for x, path in zip(today, files, strict=True):
        assert np.array_equal(x.numpy(), decode_pixels(path, 24, resize="squash"))


def test_a_tiny_run_reports_every_phase_and_target(tmp_path, capsys):
    out = tmp_path / "data_load.md"
    folder = tmp_path / "photos"
    assert _bench().main(["--images", "24", "--img-size", "16", "--study-runs", "0",
                          "--folder", str(folder), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Command: `python benchmarks/data_load.py --images 24 --img-size 16" in text
    for phase in ("today: one process", "first load: decode cache", "reopen: cache complete"):
        assert phase in text
    assert "first decode >= 1.6x faster" in text and "warm reopen >= 20x faster" in text
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["images"] == record["first"]["images"] == 24
    assert len(record["reopen"]["rounds"]) == 3 and "load average" in record["machine_start"]
    assert len(list(folder.rglob("*.jpg"))) == 24                 # a given --folder is kept
