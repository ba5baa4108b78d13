#!/usr/bin/env python
"""Fine-tune a timm backbone with a swapped head and write a run directory.

    python tools/finetune.py resnet18 --head gap --dataset fashion-mnist --epochs 5 \\
        --img-size 64 --train-size 10000 --out runs/
    python tools/finetune.py --resume runs/resnet18-gap-fashion-mnist-n10000-s0
    torchrun --nproc_per_node 4 tools/finetune.py resnet18 ...   # DistributedDataParallel

The run directory holds config.json, metrics.csv/.jsonl (one row per epoch), summary.json,
best.pt, last.pt (both loadable with surgery.load) and curves.png. Exit codes: 0 done, 2 a user
error (one line on stderr), 3 the loss became NaN/inf (last.pt keeps the last good state).
Under torchrun every process trains its shard of each epoch; only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import fields
from pathlib import Path

from _cli import run

from analysis.data import DATASETS
from analysis.training import OPTIMIZERS, REGIMES, NonFiniteLossError, TrainConfig, train
from surgery import HEADS

_DEFAULTS = TrainConfig()


def _size(text: str) -> int | float:
    value = float(text)
    return value if value < 1 else int(value)


def build_parser() -> argparse.ArgumentParser:
    d = _DEFAULTS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", nargs="?", help="any name of timm.list_models() (e.g. resnet18)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue an interrupted run from its last checkpoint (other options "
                        "are read from RUN_DIR/config.json)")
    m = p.add_argument_group("model")
    m.add_argument("--head", default=d.head, choices=list(HEADS), help="head kind (surgery.HEADS)")
    m.add_argument("--hidden", type=int, nargs="*", default=[],
                   help="hidden Linear-ReLU-Dropout widths before the output layer")
    m.add_argument("--dropout", type=float, default=d.dropout, help="dropout in the head")
    m.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights")
    m.add_argument("--checkpoint", default=None, help="start from a local backbone weights file")
    m.add_argument("--in-chans", type=int, default=None,
                   help="model input channels (default: the data's from scratch; 3 when "
                        "pretrained, grayscale repeated)")
    da = p.add_argument_group("data")
    da.add_argument("--dataset", default=d.dataset, choices=list(DATASETS), help="data set")
    da.add_argument("--data-dir", default=None,
                    help="where the data lives (fashion-mnist: also $HEADSWAP_DATA, "
                         "/usr/share/datasets/fashion-mnist)")
    da.add_argument("--download", action="store_true", help="download with torchvision if missing")
    da.add_argument("--train-size", type=int, default=None,
                    help="stratified training subset (default: all after validation)")
    da.add_argument("--val-size", type=_size, default=d.val_size,
                    help="validation held out from train: a count, or a fraction if < 1 "
                         f"(default {d.val_size})")
    da.add_argument("--train-eval-size", type=int, default=None,
                    help="fixed train sample for eval-mode train metrics (default: as val)")
    da.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                    help="reader option, repeatable (synthetic: num_classes, n_train, n_test, "
                         "image_size, channels; imagefolder: image_size, gray, test_fraction)")
    da.add_argument("--img-size", type=int, default=None, help="resize to this (default: native)")
    da.add_argument("--no-augment", dest="augment", action="store_false",
                    help="no random crop / flip")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=d.epochs, help=f"(default {d.epochs})")
    o.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    o.add_argument("--eval-batch-size", type=int, default=None, help="(default 2x batch size)")
    o.add_argument("--opt", dest="optimizer", default=d.optimizer, choices=OPTIMIZERS,
                   help=f"optimiser (default {d.optimizer})")
    o.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate (default {d.lr})")
    o.add_argument("--min-lr", type=float, default=d.min_lr, help="lr at the end of the cosine")
    o.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"(default {d.weight_decay}; not on biases and norms)")
    o.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum (Nesterov)")
    o.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help=f"linear warm-up length (default {d.warmup_epochs})")
    o.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    o.add_argument("--clip-grad", type=float, default=None, help="max gradient L2 norm")
    o.add_argument("--regime", default=d.regime, choices=REGIMES,
                   help="full: everything trains; linear-probe: backbone frozen; two-stage: head "
                        "first, then all with a lower backbone lr")
    o.add_argument("--head-epochs", type=int, default=d.head_epochs,
                   help="two-stage: head-only epochs first")
    o.add_argument("--backbone-lr-scale", type=float, default=d.backbone_lr_scale,
                   help="two-stage: backbone lr = lr x this")
    s = p.add_argument_group("system")
    s.add_argument("--device", default=d.device, help="auto (CUDA if present), cpu, cuda, cuda:1")
    s.add_argument("--amp", default=d.amp, choices=("auto", "on", "off"),
                   help="mixed precision (auto: on for CUDA)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on)")
    s.add_argument("--sync-bn", action="store_true",
                   help="under torchrun: BatchNorm statistics over all processes (SyncBatchNorm)")
    s.add_argument("--seed", type=int, default=d.seed)
    r = p.add_argument_group("run directory")
    r.add_argument("--out", default=d.out, help=f"parent directory of runs (default {d.out})")
    r.add_argument("--name", default=None, help="run directory name (default: from the options)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
    r.add_argument("--ckpt-steps", type=int, default=d.ckpt_steps,
                   help="also checkpoint every N steps inside an epoch (0: off)")
    r.add_argument("--ckpt-minutes", type=float, default=d.ckpt_minutes,
                   help=f"checkpoint at least this often inside an epoch (default {d.ckpt_minutes})")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    r.add_argument("--kill-after-steps", type=int, default=None,
                   help="testing: kill this process (SIGKILL) after N optimiser steps")
    return p


def _options(items: list[str]) -> dict[str, int | float | bool | str]:
    """``["n_train=64", "gray=true"]`` -> ``{"n_train": 64, "gray": True}``."""
    out: dict[str, int | float | bool | str] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--data-option expects KEY=VALUE, got {item!r}")
        value: int | float | bool | str = text
        if text.lower() in ("true", "false"):
            value = text.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(text)
                    break
                except ValueError:
                    pass
        out[key] = value
    return out


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed arguments describe."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values["hidden"] = tuple(args.hidden)
    values["data_options"] = _options(args.data_option)
    return TrainConfig(**values)


def _is_main() -> bool:
    """Rank 0 under torchrun (or no torchrun): the process that prints."""
    return int(os.environ.get("RANK", "0")) == 0


def _epoch_line(row: dict) -> None:
    if not _is_main():
        return
    print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
          f" | val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f} | gap {row['gap_acc']:+.4f}"
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
        try:
            if args.resume is not None:
                summary = train(resume=args.resume, on_epoch=_epoch_line)
            else:
                summary = train(config_from_args(args), on_epoch=_epoch_line)
        except NonFiniteLossError as err:
            print(f"error: {err}", file=sys.stderr)
            return 3
    if not _is_main():
        return 0
    params = f"{summary['params']:,}" if summary.get("params") is not None else "?"
    gmacs = f"{summary['gmacs']:.4g}" if summary.get("gmacs") is not None else "?"
    print(f"test acc {summary['test_acc']:.4f} (best val {summary['best_val_acc']:.4f} at epoch "
          f"{summary['best_epoch']}) | params {params} | GMACs {gmacs} | "
          f"{summary['time_s']:.1f}s | run {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main()))
