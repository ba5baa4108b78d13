#!/usr/bin/env python
"""Export coverage: ONNX export + onnxruntime verification over a sample of the timm zoo.

    python tools/export_coverage.py --sample 100 --jobs 2        # docs/export_coverage.md/.json
    python tools/export_coverage.py --models resnet18 'vit_tiny_*' --out-dir /tmp/cov

Each architecture x head (gap, gmp, flatten, nin and the pooling heads registered after them)
is exported with the dynamo exporter (TorchScript as fallback) and verified in onnxruntime at
the default input size and about 0.75x of it. Rows are appended to a JSONL cache as they finish,
so an interrupted run, or a run with a new head, resumes: only missing pairs are computed.
Architectures run layout by layout in turn, each layout's smallest first (a run cut short has
covered every layout and the most architectures), each head under a limit of CPU seconds
(other jobs on the machine slow a pair down, not time it out).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from _cli import CliParser, positive_int, run

import surgery
from analysis.export import DEFAULT_OPSET
from analysis.runtime import command_line
from analysis.sweeps import ExportCoverageSettings, export_coverage_sweep

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="export_coverage.py", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to export")
    what.add_argument("--sample", type=positive_int, default=100,
                      help="architectures in the deterministic sample (default 100)")
    what.add_argument("--models", nargs="+", default=None,
                      help="timm names or wildcards instead of the sample")
    what.add_argument("--heads", nargs="+", default=None, choices=list(surgery.HEADS),
                      metavar="HEAD", help="head kinds (default: gap gmp flatten nin and every "
                                           "pooling head registered after them)")
    what.add_argument("--max-params", type=float, default=300e6,
                      help="largest backbone in parameters (default 300e6)")
    what.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    src = p.add_argument_group("where the zoo facts come from")
    src.add_argument("--zoo-table", type=Path, default=Path("docs/zoo_table.csv"),
                     help="backbone parameters per architecture")
    src.add_argument("--zoo-coverage", type=Path, default=Path("docs/zoo_coverage.json"),
                     help="feature layout per architecture")
    runs = p.add_argument_group("running")
    runs.add_argument("--jobs", type=positive_int, default=2, help="worker processes (default 2)")
    runs.add_argument("--timeout", type=positive_int, default=900,
                      help="CPU seconds per architecture x head (the worker's own CPU time, so "
                           "a machine loaded by other jobs causes no timeouts; a dynamo export past a "
                           "third of it falls back to TorchScript; default 900)")
    runs.add_argument("--cache", type=Path, default=None,
                      help="JSONL of finished rows (default OUT_DIR/export_coverage.jsonl)")
    runs.add_argument("--retry-errors", action="store_true", help="redo pairs that failed")
    runs.add_argument("--no-progress", action="store_true", help="no progress bar")
    runs.add_argument("--report-only", action="store_true",
                      help="write the report from the cached rows, computing nothing (a "
                           "partial report while a long run goes on)")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=Path("docs"),
                     help="where export_coverage.md/.json go (default docs)")
    out.add_argument("--command", default=None, help="command recorded in the report")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    settings = ExportCoverageSettings(**vars(build_parser().parse_args(argv)))
    result = export_coverage_sweep(
        settings, settings.command or command_line("export_coverage.py", argv))
    t = result["summary"]["total"]
    print(f"{t['verified']}/{t['applicable']} pairs exported and verified "
          f"({t['percent_verified']:.1f}%), {t['dynamic_hw']} with dynamic H and W "
          f"({t['percent_dynamic_hw']:.1f}%) -> {settings.out_dir / 'export_coverage.md'}")
    if result["interrupted"]:
        print(f"interrupted: the {result['computed']} pairs computed are in {result['cache']} "
              "and the report; the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
