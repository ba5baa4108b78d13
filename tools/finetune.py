#!/usr/bin/env python
"""Fine-tune a timm backbone with a swapped head and write a run directory.

    python tools/finetune.py resnet18 --head gap --dataset fashion-mnist --epochs 5 \\
        --img-size 64 --train-size 10000 --out runs/
    python tools/finetune.py --resume runs/resnet18-gap-fashion-mnist-n10000-s0
    torchrun --nproc_per_node 4 tools/finetune.py resnet18 ...   # DistributedDataParallel

The run directory holds config.json, metrics.csv/.jsonl (one row per epoch), summary.json,
best.pt, last.pt (both loadable with surgery.load) and curves.png. Exit codes: 0 done, 2 a user
error (one line on stderr), 3 the loss became NaN/inf (last.pt keeps the last good state).
The options are those of analysis.training.options, shared with tools/compare_heads.py and
tools/pick_head.py. Under a frozen backbone (--regime linear-probe, two-stage's head epochs) the
head trains on features extracted once (--feature-cache auto|off).
Under torchrun every process trains its shard of each epoch; only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from _cli import CliParser, run

from analysis.training import add_training_options, config_from_args, run_name, train
from surgery import check_writable


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", nargs="?", help="any name of timm.list_models() (e.g. resnet18)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (other options "
                        "are read from RUN_DIR/config.json)")
    add_training_options(p)
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


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings (e.g. a 1x1 feature grid) as one ``warning:`` line, without source lines."""
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.resume is None and not args.model:
        raise ValueError("give a model name (e.g. resnet18) or --resume RUN_DIR")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.showwarning = _show_warning
        if args.resume is not None:
            summary = train(resume=args.resume, on_epoch=_epoch_line)
        else:
            cfg = config_from_args(args)
            check_writable(Path(cfg.out) / (cfg.name or run_name(cfg)), "--out/--name",
                           directory=True)
            summary = train(cfg, on_epoch=_epoch_line)
    if not _is_main():
        return 0
    params = f"{summary['params']:,}" if summary.get("params") is not None else "?"
    gmacs = f"{summary['gmacs']:.4g}" if summary.get("gmacs") is not None else "?"
    print(f"test acc {summary['test_acc']:.4f} (best val {summary['best_val_acc']:.4f} at epoch "
          f"{summary['best_epoch']}) | params {params} | GMACs {gmacs} | "
          f"{summary['time_s']:.1f}s | run {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
