"""Time tools/zoo_table.py over the whole zoo and record the figure in docs/zoo_table_time.md.

    python benchmarks/zoo_table_time.py [--jobs 2] [--models '*'] [--out-dir docs]

Runs the tool in a subprocess with a fresh cache (so nothing is skipped), measures wall-clock
time, and writes the command, the machine (cores, load average before and after: other jobs
share the CPU), the timm version and the per-architecture time distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import timm
import torch

_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(_ROOT))

from analysis.machine import describe_machine  # noqa: E402
from analysis.runtime import run_command  # noqa: E402

__all__ = ["build_parser", "main"]
GOAL_MIN = 15.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--models", nargs="+", default=["*"], help="timm wildcards (default all)")
    parser.add_argument("--out-dir", type=Path, default=_ROOT / "docs",
                        help="where the table and zoo_table_time.md go (default docs)")
    return parser


def _loadavg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _report(command: str, seconds: float, rows: list[dict], jobs: int, load_before: str,
            load_after: str) -> str:
    times = sorted(r.get("seconds", 0.0) for r in rows)
    cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    failed = sum(1 for r in rows if r.get("error"))
    slowest = sorted(rows, key=lambda r: -r.get("seconds", 0.0))[:5]
    verdict = "within" if seconds / 60 < GOAL_MIN else "over"
    return "\n".join([
        "# Zoo table: time to build",
        "",
        f"`{command}`",
        "",
        "| figure | value |",
        "|---|---|",
        f"| architectures | {len(rows)} ({failed} failed) |",
        f"| wall-clock time | **{seconds / 60:.1f} min** ({seconds:.0f} s), {verdict} the "
        f"{GOAL_MIN:.0f}-minute goal |",
        f"| worker processes | {jobs} |",
        f"| per architecture (one worker) | median {statistics.median(times):.2f} s, "
        f"90th pct {times[int(0.9 * (len(times) - 1))]:.2f} s, max {times[-1]:.1f} s |",
        f"| CPU time, all workers | {cpu / 60:.1f} min: {cpu / jobs / 60:.1f} min of wall-clock "
        f"time on {jobs} idle cores |",
        "| slowest | " + ", ".join(f"{r['model']} {r.get('seconds', 0):.1f} s"
                                   for r in slowest) + " |",
        f"| machine | {describe_machine()} |",
        f"| load average (1/5/15 min) before / after | {load_before} ; {load_after} |",
        f"| versions | timm {timm.__version__}, torch {torch.__version__} |",
        "",
        "The CPU was shared with other engineers' jobs (tests, training) during the run, so the "
        "wall-clock time is an upper bound for an idle machine; the load averages above show "
        "how busy it was, and the CPU time (which does not grow with contention) divided by "
        "the workers estimates the idle-machine figure. Construction is on the meta device and counting uses the torch counter, so memory "
        "stays small whatever the model size.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python benchmarks/zoo_table_time.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "zoo_table.jsonl"
        cmd = [sys.executable, str(_ROOT / "tools" / "zoo_table.py"), "--models", *args.models,
               "--jobs", str(args.jobs), "--cache", str(cache), "--out-dir", str(args.out_dir),
               "--command", command, "--no-progress"]
        load_before = _loadavg()
        start = time.perf_counter()
        done = run_command(cmd, cwd=_ROOT)
        seconds = time.perf_counter() - start
        load_after = _loadavg()
        if done.code != 0:
            print(f"zoo_table.py failed with exit code {done.code}", file=sys.stderr)
            return done.code
        rows = [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]
    report = _report(command, seconds, rows, args.jobs, load_before, load_after)
    (args.out_dir / "zoo_table_time.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
