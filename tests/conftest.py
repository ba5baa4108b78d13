"""Shared test set-up: import paths for tools/, one thread per test worker, fixed seeds, a
temporary decode cache, and Slurm's commands faked on PATH (the fake_slurm fixture) for the
cluster launchers."""

from __future__ import annotations

import os
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


@pytest.fixture(autouse=True, scope="session")
def _data_cache(tmp_path_factory: pytest.TempPathFactory):
    """Decoded image folders go to a temporary cache, never the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSWAP_DATA_CACHE", str(tmp_path_factory.mktemp("data-cache")))
        yield


class FakeSlurm:
    """Slurm's commands as small scripts on PATH (there is no Slurm here): ``sbatch`` keeps each
    script it is given and answers ``Submitted batch job N`` (N = 1000, 1001, ...), ``squeue`` and
    ``sacct`` print what the test put in :attr:`queue` / :attr:`accounting`, ``scancel`` and
    ``srun`` do nothing; every call's arguments are logged."""

    COMMANDS = ("sbatch", "squeue", "sacct", "scancel", "srun")

    def __init__(self, root: Path):
        self.bin, self.state = root / "bin", root / "state"
        self.bin.mkdir(parents=True)
        self.state.mkdir()
        (self.state / "next_id").write_text("1000\n")
        bodies = {
            "sbatch": 'for a; do last="$a"; done\nn=$(cat "$S/next_id")\n'
                      'cp "$last" "$S/sbatch_$n.sh"\necho $((n + 1)) > "$S/next_id"\n'
                      'echo "Submitted batch job $n"\n',
            "squeue": '[ -e "$S/squeue_fails" ] && exit 1\ncat "$S/queue" 2>/dev/null\nexit 0\n',
            "sacct": 'cat "$S/accounting" 2>/dev/null\nexit 0\n',
            "scancel": "exit 0\n",
            "srun": "exit 0\n",
        }
        for name in self.COMMANDS:
            script = self.bin / name
            script.write_text(f'#!/bin/sh\nS="{self.state}"\necho "$@" >> "$S/{name}.calls"\n'
                              + bodies[name])
            script.chmod(0o755)

    def remove(self, name: str) -> None:
        """Take a command away (as on a machine outside the cluster)."""
        (self.bin / name).unlink()

    def set_queue(self, rows: dict[str, str], ids: dict[str, str] | None = None) -> None:
        """What squeue lists: job (or array task) id -> state; ``ids`` the task's own job id."""
        ids = ids or {}
        (self.state / "queue").write_text(
            "".join(f"{job}|{ids.get(job, job)}|{state}\n" for job, state in rows.items()))

    def set_accounting(self, rows: dict[str, str]) -> None:
        (self.state / "accounting").write_text(
            "".join(f"{job}|{state}\n" for job, state in rows.items()))

    def calls(self, name: str) -> list[list[str]]:
        path = self.state / f"{name}.calls"
        return [line.split() for line in path.read_text().splitlines()] if path.is_file() else []

    def scripts(self) -> list[str]:
        """The sbatch scripts submitted so far, oldest first."""
        return [p.read_text() for p in sorted(self.state.glob("sbatch_*.sh"))]


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    """Slurm's commands on PATH for this test (see :class:`FakeSlurm`)."""
    slurm = FakeSlurm(tmp_path / "fake-slurm")
    monkeypatch.setenv("PATH", f"{slurm.bin}{os.pathsep}{os.environ.get('PATH', '')}")
    return slurm
