"""analysis.runtime is the one room for process plumbing, and it depends on no other room."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# what starts processes, takes locks or installs signal handlers
PLUMBING = re.compile(r"\bflock\b|signal\.signal\(|\bmultiprocessing\b|ProcessPool|"
                      r"\bsubprocess\.|\bos\.(fork|system|spawn\w*|exec\w*)\(|"
                      r"^\s*(import|from) (submitit|subprocess)\b", re.M)
OTHER_ROOMS = ("training", "studies", "data", "export", "features", "sweeps", "costs",
               "saliency", "reporting")


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def test_no_module_outside_runtime_starts_processes_locks_or_handles_signals():
    outside = [p for p in _sources("analysis", "surgery", "tools", "benchmarks")
               if "runtime" not in p.relative_to(ROOT).parts]
    found = [f"{p.relative_to(ROOT)}: {m.group(0).strip()}" for p in outside
             for m in PLUMBING.finditer(p.read_text())]
    assert not found, found


def test_runtime_imports_no_other_room():
    found = []
    for path in _sources("analysis/runtime"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                top = module.lstrip(".").split(".")[0] if node.level == 2 else \
                    module.split(".")[1] if module.startswith("analysis.") else ""
                if top in OTHER_ROOMS:
                    found.append(f"{path.name}: from {module}")
    assert not found, found


def test_the_room_test_sees_plumbing():
    assert PLUMBING.search("import subprocess\n") and PLUMBING.search("x = subprocess.run(c)")
    assert PLUMBING.search("fcntl.flock(fd, 2)") and PLUMBING.search("  from submitit import x")
    assert not PLUMBING.search("Runs the tool in a subprocess with a fresh cache")
