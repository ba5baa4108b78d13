#!/usr/bin/env python
"""Compare classifier heads on timm backbones: every model x head x train size x seed, fine-tuned.

    python tools/compare_heads.py resnet18 --heads gap gmp flatten flatten:hidden=256:dropout=0.5 \\
        --seeds 0 1 2 --train-sizes 1000 10000 --dataset fashion-mnist --img-size 64 \\
        --epochs 5 --out studies/NAME --jobs 1
    python tools/compare_heads.py ... --out studies/NAME-0 --shard 0/2   # machine 1
    python tools/compare_heads.py ... --out studies/NAME-1 --shard 1/2   # machine 2
    python tools/compare_heads.py --collect studies/NAME-0 studies/NAME-1 --out studies/NAME

Runs already finished in --out are skipped, interrupted ones resume, so re-running the same
command continues a study; a run another process is still running is left alone (reported
busy, exit 1). Killing this command (Ctrl-C, SIGKILL) stops its worker processes too. Under a
frozen backbone (--regime linear-probe or two-stage) the study extracts the backbone's features
once for all its heads and seeds, before the runs (--feature-cache), and every run reads them.
The study directory gets summary.md/.csv/.json (mean +- std over seeds:
params, GMACs, test accuracy, train-test gap, epoch time, peak memory), comparisons.csv
(paired differences against the first head), robustness.csv/.json (each trained model at other
input sizes; Flatten refuses), with --shifts shifts.csv (test images moved by a few pixels),
runs.csv, and the plots acc_vs_head_params.png, gap_vs_train_size.png, learning_curves.png (and
acc_vs_shift.png). A finished run keeps best.pt only (--keep).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.reporting import format_table
from analysis.studies import KEEP, StudySpec, collect, parse_shard, run_study
from analysis.training import add_training_options, config_values
from surgery import check_writable, one_line_warnings, parse_head, spec_help


def _train_size(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"train sizes are >= 1 or 'all', got {text}")
    return value


def _head(text: str):  # argparse shows the ValueError text
    try:
        return parse_head(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("models", nargs="*", help="timm model names (e.g. resnet18 mobilenetv3_small_100)")
    g = p.add_argument_group("the grid")
    g.add_argument("--heads", nargs="+", type=_head, default=None, metavar="HEAD",
                   help=f"heads to compare, each {spec_help()}. The first head is the "
                        "baseline of the paired comparisons (default: gap gmp)")
    g.add_argument("--seeds", nargs="+", type=int, default=[0], help="(default 0)")
    g.add_argument("--train-sizes", nargs="+", type=_train_size, default=[None],
                   help="stratified training subsets, or 'all' (default all)")
    add_training_options(p, per_run=False)  # the options of tools/finetune.py, shared by every run
    r = p.add_argument_group("robustness")
    r.add_argument("--robust-sizes", nargs="+", type=int, default=[],
                   help="input sizes (px) to evaluate each trained model at (default: 0.5x to "
                        "1.5x the training size)")
    r.add_argument("--robust-images", type=int, default=2000,
                   help="test images for the robustness evaluation (0: all; default 2000)")
    r.add_argument("--shifts", nargs="+", type=int, default=[], metavar="PX",
                   help="also evaluate each trained model on test images shifted by these many "
                        "pixels of the stored images (zero fill; mean over right, left, down, "
                        "up), e.g. 0 2 4 8 (default: none)")
    r.add_argument("--shift-images", type=int, default=2000,
                   help="test images for the shift evaluation (0: all; default 2000)")
    s = p.add_argument_group("running")
    s.add_argument("--out", type=Path, help="study directory (required)")
    s.add_argument("--jobs", type=int, default=1,
                   help="runs at once, in that many worker processes that each run many (0: one "
                        "after another in this process; default 1)")
    s.add_argument("--runs-per-worker", type=int, default=0, metavar="N",
                   help="replace a worker process after N runs (1: a fresh process for each run, "
                        "paying the imports each time; default 0: never)")
    s.add_argument("--threads", type=int, default=None,
                   help="torch threads per run (default: cores / jobs; 1 is faster on a busy CPU)")
    s.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                   help="run only shard I of N (0-based) of the combinations; merge with --collect")
    s.add_argument("--collect", nargs="+", type=Path, default=None, metavar="DIR",
                   help="merge these study (shard) directories into --out; trains nothing")
    s.add_argument("--keep", default="best", choices=KEEP,
                   help="checkpoints a finished run keeps: best (best.pt; last.pt, only needed "
                        "to resume, is removed), none, all (default best)")
    s.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def spec_from_args(args: argparse.Namespace, command: str = "") -> StudySpec:
    """The StudySpec the parsed arguments describe."""
    base = config_values(args)
    for k in ("out", "progress", "test_size"):
        base.pop(k, None)
    heads = tuple(args.heads or [parse_head("gap"), parse_head("gmp")])
    return StudySpec(tuple(args.models), heads, tuple(args.seeds), tuple(args.train_sizes), base,
                     tuple(args.robust_sizes), args.robust_images or None, args.test_size,
                     command, shifts=tuple(args.shifts),
                     shift_images=args.shift_images or None, keep=args.keep)


def _print_summary(report: dict, out: Path) -> None:
    rows = [{"model": r["model"], "head": r["head"], "train size": r["train_size"],
             "seeds": r["seeds"], "head params": r["head_params"],
             "test acc %": None if r["test_acc_mean"] is None else 100 * r["test_acc_mean"],
             "std": None if r["test_acc_std"] is None else 100 * r["test_acc_std"],
             "train-test gap pts": (None if r["train_test_gap_mean"] is None
                                    else 100 * r["train_test_gap_mean"])}
            for r in report["rows"]]
    if rows:
        print(format_table(rows, floatfmt=".2f"))
    print(f"study report: {out / 'summary.md'}")


def _print_timing(t: dict) -> None:
    """Wall time of the runs against their own times: what the study machinery cost."""
    if not t["runs"]:
        return
    share = 100 * t["overhead_s"] / t["wall_s"] if t["wall_s"] > 0 else 0.0
    workers = t["workers_started"]
    features = (f"; shared feature extraction {t['features_s']:.1f} s"
                if t.get("features_s") else "")
    print(f"time: {t['runs']} runs in {t['wall_s']:.1f} s wall; the runs themselves "
          f"{t['jobs_s']:.1f} s ({t['jobs']} at a time){features}; overhead "
          f"{t['overhead_s']:.1f} s ({share:.0f}%; {workers} worker "
          f"process{'' if workers == 1 else 'es'} started)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is None:
        raise ValueError("--out STUDY_DIR is required (where runs and the summary go)")
    check_writable(args.out, "--out", directory=True)
    if args.collect:
        if args.models or args.shard:
            raise ValueError("--collect merges finished study directories: give no models or "
                             "--shard with it")
        result = collect(args.collect, args.out)
        _print_summary(result["report"], args.out)
        if result["missing"]:
            print(f"warning: {len(result['missing'])} runs missing from the collected "
                  f"directories: {', '.join(result['missing'])}", file=sys.stderr)
            return 1
        return 0
    if not args.models:
        raise ValueError("give at least one model name (e.g. resnet18), or --collect DIR...")
    argv_text = sys.argv[1:] if argv is None else list(argv)
    command = "python tools/compare_heads.py " + shlex.join(argv_text)
    spec = spec_from_args(args, command)
    with one_line_warnings():
        result = run_study(spec, args.out, jobs=args.jobs, shard=args.shard,
                           progress=args.progress, threads=args.threads,
                           runs_per_worker=args.runs_per_worker)
    print(f"ran {len(result['ran'])}, skipped {len(result['skipped'])} (already done), "
          f"failed {len(result['failed'])}, busy {len(result['busy'])} (running elsewhere)")
    _print_timing(result["timing"])
    _print_summary(result["report"], args.out)
    for name, msg in result["failed"]:
        print(f"failed: {name}: {msg} (log: {args.out / 'logs' / (name + '.log')})",
              file=sys.stderr)
    for name, msg in result["busy"]:
        print(f"busy: {name}: left alone: {msg}; rerun this command when it is done to include "
              "it", file=sys.stderr)
    return 1 if result["failed"] or result["busy"] else 0


if __name__ == "__main__":
    sys.exit(run(main))
