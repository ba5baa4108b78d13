#!/usr/bin/env python
"""Fine-tune a timm backbone with a swapped head and write a run directory.

    python tools/finetune.py resnet18 --head gap --dataset fashion-mnist --epochs 5 \\
        --img-size 64 --train-size 10000 --out runs/
    python tools/finetune.py --resume runs/resnet18-gap-fashion-mnist-n10000-s0
    torchrun --nproc_per_node 4 tools/finetune.py resnet18 ...   # DistributedDataParallel
    python tools/finetune.py resnet50 ... --launcher slurm --slurm-nodes 2 --slurm-gpus-per-node 4

The run directory holds config.json, metrics.csv/.jsonl (one row per epoch), summary.json,
best.pt, last.pt (both loadable with surgery.load; a linear probe on cached features keeps the
head alone in last.pt) and curves.png. Exit codes: 0 done, 2 a user error (one line on stderr),
3 the loss became NaN/inf (last.pt keeps the last good state).
The options are those of analysis.training.options, shared with tools/compare_heads.py and
tools/pick_head.py. Under a frozen backbone (--regime linear-probe, two-stage's head epochs) the
head trains on features extracted once (--feature-cache auto|off), kept in memory or, beyond
--feature-cache-mem-gb, in RUN/features (part of the run: --overwrite replaces it).
Under torchrun every process trains its shard of each epoch; only rank 0 prints and writes.
A run directory belongs to one process at a time (RUN/.lock names it); --overwrite replaces an
old run only once the new one has made its first step; --resume refuses options that differ
from the run's config.json and says where it continues.
With --launcher slurm the run is one Slurm job through submitit (the optional extra 'cluster'):
one DDP process per GPU on every node, the same code path as torchrun; when Slurm preempts the
job or its time runs out it is requeued and resumes from the run directory. Its logs go to
RUN.logs/ next to the run directory.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.runtime import add_launcher_options, refuse_slurm_flags, slurm_options_from_args
from analysis.training import (
    add_training_options,
    config_from_args,
    finetune_logs,
    given_config_values,
    run_name,
    run_path,
    submit_finetune,
    train,
    wait_finetune,
)
from surgery import check_writable, one_line_warnings


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", nargs="?", help="any name of timm.list_models() (e.g. resnet18)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (its options are "
                        "read from RUN_DIR/config.json; options given that differ are refused, "
                        "except --no-progress, --ckpt-steps, --ckpt-minutes, "
                        "--feature-cache-mem-gb and --feature-cache-dir)")
    add_training_options(p)
    add_launcher_options(p, study=False)
    p.add_argument("--no-wait", action="store_true",
                   help="with a cluster launcher: submit and return (the job goes on)")
    return p


def _is_main() -> bool:
    """Rank 0 under torchrun (or no torchrun): the process that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def _epoch_line(row: dict) -> None:
    if not _is_main():
        return
    print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
          f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | train-val gap {row['gap_acc']:+.4f}"
          f" | {row['epoch_time_s']:.1f}s {row['img_per_s']:.0f} img/s", flush=True)


def _start_line(info: dict) -> None:
    """Where a resumed run continues (printed by rank 0)."""
    if not _is_main() or info["status"] == "new":
        return
    run_dir = info["run_dir"]
    if info["status"] == "finished":
        print(f"{run_dir} already finished: nothing to resume (its summary follows)", flush=True)
    elif info["status"] == "restarted":
        print(f"resuming {run_dir}: it stopped before its first checkpoint, so it starts over "
              f"from epoch 1/{info['epochs']}", flush=True)
    elif info["step"]:
        print(f"resuming {run_dir} in epoch {info['epoch'] + 1}/{info['epochs']} after step "
              f"{info['step']}/{info['steps_per_epoch']} (last.pt)", flush=True)
    else:
        print(f"resuming {run_dir} after epoch {info['epoch']}/{info['epochs']} (last.pt)",
              flush=True)


def _print_summary(summary: dict) -> None:
    params = f"{summary['params']:,}" if summary.get("params") is not None else "?"
    gmacs = f"{summary['gmacs']:.4g}" if summary.get("gmacs") is not None else "?"
    print(f"test acc {summary['test_acc']:.4f} (best val {summary['best_val_acc']:.4f} at epoch "
          f"{summary['best_epoch']}) | params {params} | GMACs {gmacs} | "
          f"{summary['time_s']:.1f}s | run {summary['run_dir']}")


def _submit(args: argparse.Namespace, given: dict | None) -> int:
    """--launcher slurm / submitit-local: one job of nodes x processes; wait unless --no-wait."""
    slurm = slurm_options_from_args(args)
    if args.resume is not None:
        job = submit_finetune(args.launcher, slurm, resume=args.resume, options=given)
        run_dir = args.resume
    else:
        cfg = config_from_args(args)
        run_dir = run_path(cfg.out, cfg.name or run_name(cfg))
        check_writable(run_dir, "--out/--name", directory=True)
        job = submit_finetune(args.launcher, slurm, cfg)
    print(f"submitted {args.launcher} job {job.job_id}: {slurm.nodes} node(s) x "
          f"{slurm.tasks_per_node} process(es) for {run_dir}; logs in {finetune_logs(run_dir)}",
          flush=True)
    if args.no_wait:
        layout = f"--slurm-nodes {slurm.nodes} --slurm-gpus-per-node {slurm.gpus_per_node}"
        if slurm.tasks_per_node != max(1, slurm.gpus_per_node):
            layout += f" --slurm-tasks-per-node {slurm.tasks_per_node}"
        print(f"not waiting: the run resumes by itself after a preemption; if the job fails, "
              f"continue it with: python tools/finetune.py --resume {run_dir} --launcher "
              f"{args.launcher} {layout}")
        return 0
    try:
        summary = wait_finetune(job)
    except KeyboardInterrupt:
        print(f"interrupted: job {job.job_id} goes on (its run is {run_dir})", file=sys.stderr)
        return 130
    _print_summary(summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None and not args.model:
        raise ValueError("give a model name (e.g. resnet18) or --resume RUN_DIR")
    refuse_slurm_flags(parser, args)
    if args.no_wait and args.launcher == "local":
        raise ValueError("--no-wait applies to --launcher slurm or submitit-local")
    given = None
    if args.resume is not None:
        given = given_config_values(parser, sys.argv[1:] if argv is None else argv)
        if args.model:
            given["model"] = args.model
    if args.launcher != "local":
        return _submit(args, given)
    with one_line_warnings():
        if args.resume is not None:
            summary = train(resume=args.resume, options=given, on_epoch=_epoch_line,
                            on_start=_start_line)
        else:
            cfg = config_from_args(args)
            check_writable(run_path(cfg.out, cfg.name or run_name(cfg)), "--out/--name",
                           directory=True)
            summary = train(cfg, on_epoch=_epoch_line)
    if _is_main():
        _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
