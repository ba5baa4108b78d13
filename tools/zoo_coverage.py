#!/usr/bin/env python
"""Run every head kind over every timm architecture; write docs/zoo_coverage.{md,json}.

    python tools/zoo_coverage.py --jobs 2            # the whole zoo (resumes from the .jsonl)
    python tools/zoo_coverage.py --models 'vit_*' --out-dir /tmp/cov
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.runtime import command_line
from analysis.sweeps import ZooCoverageSettings, timm_max_sweep, zoo_coverage_sweep
from surgery import HEADS

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="*", default=["*"],
                   help="architectures or timm wildcards (default: all of timm.list_models())")
    p.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS),
                   help="head kinds to check (default: all)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--out-dir", type=Path, default=Path("docs"),
                   help="where zoo_coverage.md/.json (and the resumable .jsonl) go")
    p.add_argument("--fresh", action="store_true", help="ignore results of an earlier run")
    p.add_argument("--redo", nargs="*", default=[],
                   help="architectures or wildcards to check again even if an earlier run did")
    p.add_argument("--timm-max", action="store_true",
                   help="instead: check timm's own reset_classifier(global_pool='max') on every "
                        "architecture, for comparison (writes zoo_timm_max.json)")
    p.add_argument("--report-only", action="store_true",
                   help="write zoo_coverage.md/.json from the records so far, checking nothing "
                        "(an interrupted sweep: heads not checked yet are reported as such)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the architectures where some head failed in an earlier run")
    return p


def main(argv: list[str] | None = None) -> int:
    settings = ZooCoverageSettings(**vars(build_parser().parse_args(argv)))
    if settings.timm_max:
        result = timm_max_sweep(settings)
        print(f"timm reset_classifier(global_pool='max'): {result['ok']}/"
              f"{result['architectures']} give the right shape")
        return 0
    summary = zoo_coverage_sweep(settings, command_line("zoo_coverage.py", argv))
    for head, s in summary["per_head"].items():
        print(f"{head:10s} {s['ok']:5d}/{s['total']} ({s['percent']}%)")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main()))
