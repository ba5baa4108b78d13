#!/usr/bin/env python
"""Which head should this backbone have? Every head that applies, on your data, in one command.

    python tools/pick_head.py resnet18 --dataset fashion-mnist --img-size 64 \\
        [--train-size N] --seeds 0 1 2 [--pretrained | --checkpoint FILE] [--heads ...]

Under the default linear probe the backbone's features are extracted once (a progress bar) and
every head trains on them: every kind registered in surgery.HEADS that builds on the backbone,
with its default options (gap, gmp, gapmp, flatten, nin, gem, attn; token only on a model with
a class token, spp only where the feature grid holds its finest level, "original" where the
model has a head of its own), and the fixed variants gap:dropout=0.5,
gap/gmp/gapmp:hidden=256:dropout=0.5, flatten:dropout=0.5 and flatten:hidden=256:dropout=0.5
of the kinds that apply. Each head trains at every learning rate of --lrs (default seven, 1e-4
to 1e-1 half a decade apart) and every seed, all of them in one pass over the cached features
(successive halving stops the hopeless settings early; a setting that diverges is recorded as
such), and keeps the rate with the best mean validation accuracy; a head whose best sits at an
end of the grid gets one more rate that way. A run is at least --min-steps optimiser steps
(default 1000 for a linear probe), however small the training set. Each seed trains on
--train-size images (default: all the data holds after validation) and validates on its own
split of the pool (--val-size: a count, or a fraction of the pool).

Prints a ranked table (validation accuracy mean +- std over seeds, the paired difference to the
best head with its Holm-corrected p, the chosen learning rate, training accuracy, head
parameters and GMACs, whether the head takes any input size), each head's learning rate with
the accuracy at its neighbours, and a one-line recommendation: the head with the fewest
parameters among the best and the heads within noise of it (analysis.studies.recommend). Writes
pick.md, pick.csv, pick.json, pick.png, sweep.csv and lr.png into --out, next to the study's
runs (rerunning the command resumes). --format json prints the result as JSON. Every
fine-tuning option of tools/finetune.py applies (defaults here: --regime linear-probe,
--epochs 10, --test-size 2000); --no-one-pass trains one run per head at one --lr instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch
from _cli import CliParser, run

from analysis.machine import cpu_seconds, describe_machine
from analysis.reporting import format_table
from analysis.studies import (
    JSON_KEYS,
    VARIANTS,
    add_sweep_options,
    lr_rows,
    run_pick,
    sweep_settings,
    table_rows,
    write_pick,
)
from analysis.training import add_training_options, config_values
from surgery import one_line_warnings, parse_head, spec_help


def _head(text: str):  # argparse shows the ValueError text
    try:
        return parse_head(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="a timm model name (e.g. resnet18)")
    g = p.add_argument_group("the comparison")
    g.add_argument("--heads", nargs="+", type=_head, default=None, metavar="HEAD",
                   help=f"compare these heads only, each {spec_help()}. Default: every kind "
                        f"that applies, plus {' '.join(VARIANTS)}")
    g.add_argument("--train-size", type=int, default=None,
                   help="training images per seed (default: all the data holds after "
                        "validation)")
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="(default 0 1 2)")
    add_training_options(p, per_run=False)  # the options of tools/finetune.py
    add_sweep_options(p, grid_by_default=True)
    p.set_defaults(regime="linear-probe", epochs=10, test_size=2000)
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None,
                   help="directory for the runs and pick.md/.csv/.json/.png "
                        "(default picks/MODEL-DATASET-nN)")
    o.add_argument("--format", choices=("text", "json"), default="text",
                   help="what to print (default text)")
    o.add_argument("--jobs", type=int, default=0,
                   help="runs at once in worker processes that read the feature cache from disk "
                        "(default 0: one after another in this process, the cache in memory)")
    o.add_argument("--runs-per-worker", type=int, default=0, metavar="N",
                   help="with --jobs: replace a worker process after N runs (default 0: never)")
    o.add_argument("--threads", type=int, default=None,
                   help="torch threads, per worker with --jobs (default: torch's choice, or "
                        "cores / jobs; on a busy CPU 1 is faster)")
    o.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.train_size is not None and args.train_size < 1:
        raise ValueError(f"--train-size must be at least 1, got {args.train_size}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    base = config_values(args)
    for k in ("out", "progress", "threads", "runs_per_worker"):  # not TrainConfig fields
        base.pop(k, None)
    out = args.out or Path("picks") / f"{args.model}-{args.dataset}-n{args.train_size or 'all'}"
    argv_text = sys.argv[1:] if argv is None else list(argv)
    command = "python tools/pick_head.py " + shlex.join(argv_text)
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    with one_line_warnings():
        warnings.filterwarnings("once")  # each run of the study would repeat its warnings
        warnings.filterwarnings("ignore", category=FutureWarning)
        if not (args.pretrained or args.checkpoint):
            warnings.warn("no --pretrained or --checkpoint: the backbone is random, and each "
                          "seed draws its own (and its own feature cache)", stacklevel=1)
        result = run_pick(args.model, base, seeds=args.seeds, train_size=args.train_size,
                          out=out, heads=args.heads, jobs=args.jobs, progress=args.progress,
                          command=command, threads=args.threads,
                          runs_per_worker=args.runs_per_worker,
                          sweep=sweep_settings(args, grid_by_default=True),
                          sweep_mem_gb=args.sweep_mem_gb)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    study = result["study"]
    meta = {"command": f"`{command}`", "wall time": f"{wall:.1f} s (including extraction)",
            "CPU time": f"{cpu:.1f} s (user + system, this process and its workers)",
            "extraction": ", ".join(f"{c['images']} images in {c['extract_s']:.1f} s "
                                    f"({c['storage']}, {c['mib']} MiB)"
                                    for c in study.get("feature_caches") or [])
            or "none in this invocation",
            "machine": describe_machine(with_load=True),
            "runs": f"{len(study['ran'])} trained, {len(study['skipped'])} already done"}
    files = write_pick(out, result, meta)
    if args.format == "json":
        print(json.dumps({k: result[k] for k in JSON_KEYS}, indent=2))
    else:
        print(format_table(table_rows(result["table"], result["choices"]), floatfmt=".4g"))
        if result["choices"]:
            print(format_table(lr_rows(result["choices"], result["curves"]), floatfmt=".4g"))
        print(f"recommended: {result['recommended']}: {result['reason']}")
        print(f"{wall:.1f} s; written: {', '.join(str(p) for p in files.values())}")
    failed, busy = study.get("failed") or [], study.get("busy") or []
    for name, msg in failed:
        print(f"failed: {name}: {msg} (log: {out / 'logs' / (name + '.log')})", file=sys.stderr)
    for name, msg in busy:
        print(f"busy: {name}: left alone: {msg}; rerun this command when it is done to include "
              "it", file=sys.stderr)
    return 1 if failed or busy else 0


if __name__ == "__main__":
    sys.exit(run(main))
