"""Shared test set-up: import paths for tools/, one thread per test worker, fixed seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

torch.set_num_threads(1)  # pytest-xdist runs one worker per core


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
