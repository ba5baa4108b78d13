#!/usr/bin/env python
"""Compare classifier heads on timm backbones: every model x head x train size x seed, fine-tuned.

    python tools/compare_heads.py resnet18 --heads gap gmp flatten flatten:hidden=256:dropout=0.5 \\
        --seeds 0 1 2 --train-sizes 1000 10000 --dataset fashion-mnist --img-size 64 \\
        --epochs 5 --out studies/NAME --jobs 1
    python tools/compare_heads.py ... --out studies/NAME-0 --shard 0/2   # machine 1
    python tools/compare_heads.py ... --out studies/NAME-1 --shard 1/2   # machine 2
    python tools/compare_heads.py --collect studies/NAME-0 studies/NAME-1 --out studies/NAME
    python tools/compare_heads.py ... --out studies/NAME --launcher slurm --slurm-partition gpu \
        --slurm-gpus-per-run 1 --slurm-time 2:00:00          # one Slurm job array, a job per run
    python tools/compare_heads.py --status --out studies/NAME   # finished, queued, running, failed

Runs already finished in --out are skipped, interrupted ones resume, so re-running the same
command continues a study; a run another process is still running is left alone (reported
busy, exit 1). Killing this command (Ctrl-C, SIGKILL) stops its worker processes too. Under a
frozen backbone (--regime linear-probe or two-stage) the study extracts the backbone's features
once for all its heads and seeds, before the runs (--feature-cache), and every run reads them.
With --launcher slurm the runs are Slurm jobs (through submitit, the optional extra 'cluster'):
the study records their job ids (jobs.json), so re-running the command submits only runs
neither finished nor queued or running, and collects the summary once they end; Ctrl-C or
--no-wait leaves the jobs running.
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
from analysis.runtime import add_launcher_options, refuse_slurm_flags, slurm_options_from_args
from analysis.studies import (
    KEEP,
    StudySpec,
    add_sweep_options,
    cancel_study,
    collect,
    parse_shard,
    run_study,
    study_status,
    submit_study,
    sweep_settings,
    wait_study,
)
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


def _head_lr(text: str) -> tuple[str, float]:
    """``HEAD=LR`` -> (head label, lr); HEAD is a head spec as in --heads, or its label."""
    head, sep, lr = text.rpartition("=")
    try:
        value = float(lr)
    except ValueError:
        value = -1.0
    if not sep or not head or not value > 0:
        raise argparse.ArgumentTypeError(
            f"--head-lr expects HEAD=LR with LR > 0 (e.g. flatten:hidden=4096x4096=1e-4), "
            f"got {text!r}")
    try:
        return parse_head(head).label, value
    except ValueError:
        return head, value  # a label (flatten-h4096x4096-d0.5); checked against --heads later


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
    g.add_argument("--head-lr", nargs="+", type=_head_lr, default=[], metavar="HEAD=LR",
                   help="a learning rate for one head instead of --lr, e.g. "
                        "flatten:hidden=4096x4096:dropout=0.5=1e-4 (a large dense head needs a "
                        "lower rate than a pooling head)")
    g.add_argument("--seeds", nargs="+", type=int, default=[0], help="(default 0)")
    g.add_argument("--train-sizes", nargs="+", type=_train_size, default=[None],
                   help="stratified training subsets, or 'all' (default all)")
    add_training_options(p, per_run=False)  # the options of tools/finetune.py, shared by every run
    add_sweep_options(p, grid_by_default=False)
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
    add_launcher_options(p, study=True)
    c = p.add_argument_group("a study on a cluster")
    c.add_argument("--no-wait", action="store_true",
                   help="submit and return; run the same command again to collect the summary")
    c.add_argument("--status", action="store_true",
                   help="show each run of the study in --out: finished, queued, running, failed")
    c.add_argument("--cancel", action="store_true",
                   help="cancel the queued and running jobs of the study in --out")
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
                     shift_images=args.shift_images or None, keep=args.keep,
                     head_lr=dict(args.head_lr),
                     **sweep_settings(args, grid_by_default=False))


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
    decoding = (f"; image folder decoded (or its cache opened) {t['data_load_s']:.1f} s"
                if t.get("data_load_s") else "")
    if t.get("sweep_s"):
        features += f"; one pass over the cached features {t['sweep_s']:.1f} s"
    print(f"time: {t['runs']} runs in {t['wall_s']:.1f} s wall; the runs themselves "
          f"{t['jobs_s']:.1f} s ({t['jobs']} at a time){decoding}{features}; overhead "
          f"{t['overhead_s']:.1f} s ({share:.0f}%; {workers} worker "
          f"process{'' if workers == 1 else 'es'} started)")


def _print_states(out: Path) -> int:
    """--status: one row per run, then the counts; exit 1 while runs are missing or failed."""
    states = study_status(out)
    rows = [{"run": s.name, "state": s.state, "job": s.job or "", "host": s.where or "",
             "note": s.message} for s in states]
    print(format_table(rows))
    counts = {k: sum(s.state == k for s in states) for k in dict.fromkeys(s.state for s in states)}
    print(", ".join(f"{n} {k}" for k, n in counts.items()) + f" (of {len(states)} runs)")
    return 0 if counts.get("finished", 0) == len(states) else 1


def _on_cluster(args: argparse.Namespace, spec: StudySpec) -> int:
    """--launcher slurm / submitit-local: submit, wait (unless --no-wait), report."""
    if args.shard:
        raise ValueError("--shard splits a study by hand; with a cluster launcher the scheduler "
                         "spreads the runs: drop --shard")
    if args.jobs != 1 or args.runs_per_worker:
        raise ValueError("--jobs and --runs-per-worker say how a local study runs; with a cluster "
                         "launcher each run is its own array task: drop them (limit runs at once "
                         "with --slurm-array-parallelism)")
    slurm = slurm_options_from_args(args)
    sub = submit_study(spec, args.out, args.launcher, slurm, threads=args.threads)
    jobs = sorted({j.split("_")[0] for j in sub["submitted"].values()})
    print(f"submitted {len(sub['submitted'])} runs ({args.launcher} job"
          f"{'s' if len(jobs) != 1 else ''} {', '.join(jobs) or '-'}; logs in "
          f"{args.out / 'logs'}), {len(sub['live'])} already queued or running, "
          f"{len(sub['skipped'])} finished before", flush=True)
    if args.no_wait:
        print(f"not waiting: run the same command again to collect the summary once they are "
              f"done (--status --out {args.out} shows them)")
        return 0
    try:
        result = wait_study(spec, args.out, sub, progress=args.progress)
    except KeyboardInterrupt:
        print(f"interrupted: the jobs go on; run the same command again to collect the summary, "
              f"--status --out {args.out} to see them, --cancel to stop them", file=sys.stderr)
        return 130
    print(f"ran {len(result['ran'])}, failed {len(result['failed'])}, busy "
          f"{len(result['busy'])} in {result['timing']['wall_s']:.1f} s")
    _print_summary(result["report"], args.out)
    return _print_problems(result, args.out)


def _print_problems(result: dict, out: Path) -> int:
    for name, msg in result["failed"]:
        print(f"failed: {name}: {msg} (log: {out / 'logs' / (name + '.log')})", file=sys.stderr)
    for name, msg in result["busy"]:
        print(f"busy: {name}: left alone: {msg}; rerun this command when it is done to include "
              "it", file=sys.stderr)
    for name, msg in result.get("cancelled") or []:
        print(f"cancelled: {name}: {msg}", file=sys.stderr)
    return 1 if result["failed"] or result["busy"] or result.get("cancelled") else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None:
        raise ValueError("--out STUDY_DIR is required (where runs and the summary go)")
    if args.status or args.cancel:
        if args.cancel:
            cancelled = cancel_study(args.out)
            print(f"cancelled the jobs of {len(cancelled)} runs: "
                  f"{', '.join(s.name for s in cancelled) or '-'}")
            _print_states(args.out)
            return 0  # the cancel did what it was asked (Slurm refusing is an error, exit 2)
        return _print_states(args.out)
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
    refuse_slurm_flags(parser, args)
    if args.no_wait and args.launcher == "local":
        raise ValueError("--no-wait applies to --launcher slurm or submitit-local (a local study "
                         "runs in this command)")
    argv_text = sys.argv[1:] if argv is None else list(argv)
    command = "python tools/compare_heads.py " + shlex.join(argv_text)
    spec = spec_from_args(args, command)
    if args.launcher != "local":
        if len(spec.lrs) > 1 or len(spec.weight_decays) > 1:
            raise ValueError("--lrs / --weight-decays train every setting in one pass in this "
                             "process; use --launcher local (or one --lr per cluster study)")
        with one_line_warnings():
            return _on_cluster(args, spec)
    with one_line_warnings():
        result = run_study(spec, args.out, jobs=args.jobs, shard=args.shard,
                           progress=args.progress, threads=args.threads,
                           runs_per_worker=args.runs_per_worker,
                           sweep_mem_gb=args.sweep_mem_gb)
    print(f"ran {len(result['ran'])}, skipped {len(result['skipped'])} (already done), "
          f"failed {len(result['failed'])}, busy {len(result['busy'])} (running elsewhere)")
    _print_timing(result["timing"])
    _print_summary(result["report"], args.out)
    return _print_problems(result, args.out)


if __name__ == "__main__":
    sys.exit(run(main))
