"""Params and GMACs of every timm architecture with the gap, gmp, flatten, gem, attn, token
and spp heads.

    python tools/zoo_table.py [--models 'vit_*' ...] [--jobs 2] [--cache runs/zoo_table.jsonl]
                              [--out-dir docs]

Each architecture is built on the meta device (no memory for weights, nothing computed) at its
default input size, its backbone counted once with the torch counter (fvcore's MAC convention:
one multiply-add = 1), and each head built on the backbone's features and counted on its own;
a head's total is backbone + head. Heads are specs with options (``gem:p=2``, column
``gmacs_gem-p2``); a head that does not apply (token without a class token) leaves its cells
empty. Rows are appended to the ``--cache`` JSONL as they finish, so
an interrupted run resumes where it stopped. Writes ``zoo_table.md`` and ``zoo_table.csv``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from _cli import CliParser, run

import surgery
from analysis.costs import FLOP_COUNTERS
from analysis.runtime import command_line
from analysis.sweeps import DEFAULT_HEADS, ZooTableSettings, zoo_table_sweep

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="zoo_table.py", description=__doc__.split("\n\n")[0])
    what = parser.add_argument_group("what to count")
    what.add_argument("--models", nargs="+", default=["*"],
                      help="timm names or wildcards (default: the whole zoo)")
    what.add_argument("--heads", nargs="+", default=list(DEFAULT_HEADS), metavar="SPEC",
                      help=f"heads, each {surgery.spec_help()} (not original; default: "
                           f"{' '.join(DEFAULT_HEADS)})")
    what.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    what.add_argument("--counter", choices=list(FLOP_COUNTERS), default="torch",
                      help="torch (meta device, default) or fvcore (real tensors: slow)")
    run = parser.add_argument_group("running")
    run.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    run.add_argument("--timeout", type=int, default=300, help="seconds per architecture")
    run.add_argument("--cache", type=Path, default=Path("runs/zoo_table.jsonl"),
                     help="JSONL of finished rows; rerunning skips them (resume)")
    run.add_argument("--retry-errors", action="store_true",
                     help="recount architectures whose cached row is an error")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    out = parser.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=Path("docs"),
                     help="where zoo_table.md and zoo_table.csv go (default docs)")
    out.add_argument("--command", default=None,
                     help="command line recorded in the report (default: this one)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings = ZooTableSettings(**vars(build_parser().parse_args(argv)))
    result = zoo_table_sweep(settings, settings.command or command_line("zoo_table.py", argv))
    out = settings.out_dir
    print(f"{len(result['rows'])} architectures ({result['counted']} counted now, "
          f"{result['failed']} failed) in {result['seconds']:.1f} s -> {out / 'zoo_table.md'}, "
          f"{out / 'zoo_table.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
