"""The fine-tuning options, defined once for every tool that trains (finetune, compare_heads, ...).

Each ``add_*`` function adds one argument group whose flags map one-to-one onto
:class:`TrainConfig` fields, with the config's defaults; :func:`config_values` reads them back.
A study leaves out what varies per run (``per_run=False``: the head, the training-set size, the
seed, the run directory), and adds its own grid options instead.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import fields
from typing import Any

from surgery import parse_options, resolve_head, spec_help

from ..data import DATASETS, RESIZE_POLICIES, parse_classes
from .config import (
    FEATURE_CACHE,
    FEATURE_DTYPES,
    LINEAR_PROBE_MIN_STEPS,
    OPTIMIZERS,
    REGIMES,
    TrainConfig,
)

__all__ = ["add_training_options", "config_from_args", "config_values", "given_config_values"]

_DEFAULTS = TrainConfig()


def _size(text: str) -> int | float:
    """``--val-size``: a count (``500``), or a fraction of the training split (``0.1``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return value if value < 1 else int(value)


def _classes(text: str) -> tuple[int | str, ...]:
    """``--classes``: class indices or names separated by commas (argparse shows the error)."""
    try:
        return parse_classes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_model(p: argparse.ArgumentParser, per_run: bool) -> None:
    m = p.add_argument_group("model")
    if per_run:
        m.add_argument("--head", default=_DEFAULTS.head, metavar="SPEC", help=spec_help())
        m.add_argument("--hidden", type=int, nargs="*", default=None,
                       help="hidden Linear-ReLU-Dropout widths before the output layer (or "
                            "hidden= in the head spec, not both)")
        m.add_argument("--dropout", type=float, default=None,
                       help="dropout in the head (or dropout= in the head spec, not both)")
    m.add_argument("--pretrained", action="store_true", help="start from timm's pretrained weights")
    m.add_argument("--checkpoint", default=None,
                   help="start from a local backbone weights file")
    m.add_argument("--in-chans", type=int, default=None,
                   help="model input channels (default: the data's from scratch; 3 when "
                        "pretrained, grayscale repeated)")
    m.add_argument("--timm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="timm.create_model option, repeatable (e.g. drop_path_rate=0.1, "
                        "output_stride=16)")


def _add_data(p: argparse.ArgumentParser, per_run: bool) -> None:
    d = _DEFAULTS
    da = p.add_argument_group("data")
    da.add_argument("--dataset", default=d.dataset, choices=list(DATASETS), help="data set")
    da.add_argument("--classes", type=_classes, default=None, metavar="C,C,...",
                    help="train and test on these classes only (indices, e.g. 0,2,3,4,6, or "
                         "names without commas), relabelled 0..k-1 in the order given; the run "
                         "name shows the subset (default: all classes)")
    da.add_argument("--data-dir", default=None,
                    help="where the data lives (fashion-mnist: also $HEADSWAP_DATA, "
                         "/usr/share/datasets/fashion-mnist)")
    da.add_argument("--download", action="store_true", help="download with torchvision if missing")
    if per_run:
        da.add_argument("--train-size", type=int, default=None,
                        help="stratified training subset (default: all after validation)")
    da.add_argument("--val-size", type=_size, default=d.val_size,
                    help="validation held out from train: a count, or a fraction if < 1 "
                         f"(default {d.val_size})")
    da.add_argument("--train-eval-size", type=int, default=None,
                    help="fixed train sample for eval-mode train metrics (default: as val)")
    da.add_argument("--test-size", type=int, default=None,
                    help="test on a stratified subset of the test split, the same images for "
                         "every run (default: all of it)")
    da.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                    help="reader option, repeatable (synthetic: num_classes, n_train, n_test, "
                         "image_size, channels; imagefolder: gray, test_fraction, image_size "
                         "(default: --img-size, else 64))")
    da.add_argument("--skip-bad-images", action="store_true",
                    help="imagefolder: leave out unreadable (corrupt, truncated) images with a "
                         "warning naming them, instead of stopping at the first")
    da.add_argument("--pool-size", type=int, default=None,
                    help="draw validation and the training subset from a fixed stratified subset "
                         "of this many training images, the same for every seed (default: all)")
    da.add_argument("--img-size", type=int, default=None,
                    help="resize to this (default: native); image folders are decoded at it")
    da.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                    help="random crop and flip (default: on while the backbone trains, off while "
                         "it is frozen)")
    _add_decoding(p)


def _add_decoding(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    de = p.add_argument_group("image files (imagefolder): decoded once, cached on disk")
    de.add_argument("--resize", default=d.resize, choices=RESIZE_POLICIES,
                    help="how an image becomes a square: shorter-crop (shorter side to the size, "
                         "centre crop, as timm's eval transform), squash (both sides to the "
                         f"size), pad (letterbox, black) (default {d.resize})")
    de.add_argument("--decode-workers", type=int, default=None, metavar="N",
                    help="decoding processes (default: every core)")
    de.add_argument("--data-cache-dir", default=None, metavar="DIR",
                    help="where decoded image folders are cached (default: $HEADSWAP_DATA_CACHE, "
                         "else ~/.cache/headswap/data)")


def _add_optimisation(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=d.epochs, help=f"(default {d.epochs})")
    o.add_argument("--min-steps", type=int, default=None, metavar="N",
                   help="optimiser steps in the whole run at least: when --epochs passes over "
                        "the training set give fewer, each epoch takes further passes, so a small "
                        "training set is still trained to convergence (default: "
                        f"{LINEAR_PROBE_MIN_STEPS} for --regime linear-probe, else 0)")
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


def _add_feature_cache(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    f = p.add_argument_group("feature cache (frozen backbone: linear-probe, two-stage head epochs)")
    f.add_argument("--feature-cache", default=d.feature_cache, choices=FEATURE_CACHE,
                   help="auto: extract the frozen backbone's features once and train the head on "
                        "them; off: run the backbone every step (default auto)")
    f.add_argument("--feature-cache-views", type=int, default=d.feature_cache_views, metavar="K",
                   help="cache K fixed augmented views (crop and flip drawn once) of each training "
                        "image; each epoch samples among them (default 0: no augmentation)")
    f.add_argument("--feature-cache-mem-gb", type=float, default=d.feature_cache_mem_gb,
                   help=f"keep the cache in memory up to this many GiB, else in a file on disk "
                        f"(default {d.feature_cache_mem_gb:g})")
    f.add_argument("--feature-cache-dir", default=None,
                   help="where an on-disk cache goes (default: the run's or study's directory)")
    f.add_argument("--feature-cache-dtype", default=d.feature_cache_dtype, choices=FEATURE_DTYPES,
                   help="stored precision (default float16; float32 matches an uncached run)")


def _add_system(p: argparse.ArgumentParser, per_run: bool) -> None:
    d = _DEFAULTS
    s = p.add_argument_group("system")
    s.add_argument("--device", default=d.device, help="auto (CUDA if present), cpu, cuda, cuda:1")
    s.add_argument("--amp", default=d.amp, choices=("auto", "on", "off"),
                   help="mixed precision (auto: on for CUDA)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format (default: on)")
    if per_run:
        s.add_argument("--sync-bn", action="store_true",
                       help="under torchrun: BatchNorm statistics over all processes")
        s.add_argument("--seed", type=int, default=d.seed)


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    r = p.add_argument_group("run directory")
    r.add_argument("--out", default=d.out, help=f"parent directory of runs (default {d.out})")
    r.add_argument("--name", default=None, help="run directory name (default: from the options)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
    r.add_argument("--ckpt-steps", type=int, default=d.ckpt_steps,
                   help="also checkpoint every N steps inside an epoch (0: off)")
    r.add_argument("--ckpt-minutes", type=float, default=d.ckpt_minutes,
                   help=f"checkpoint at least this often inside an epoch (default {d.ckpt_minutes})")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_training_options(parser: argparse.ArgumentParser, *, per_run: bool = True) -> None:
    """Add the model, data, optimisation, feature-cache and system groups (and, ``per_run``, the
    per-run options: head, training-set size, seed, run directory) to ``parser``."""
    _add_model(parser, per_run)
    _add_data(parser, per_run)
    _add_optimisation(parser)
    _add_feature_cache(parser)
    _add_system(parser, per_run)
    if per_run:
        _add_run_dir(parser)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`TrainConfig` fields the parsed arguments set (options not given are left out,
    so the config's defaults apply)."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "hidden" in values:
        values["hidden"] = tuple(values["hidden"])
    if "head" in values:  # --hidden / --dropout and the same option in the spec: refused
        resolve_head(values["head"], values.get("hidden"), values.get("dropout"))
    values["data_options"] = parse_options(getattr(args, "data_option", []), "--data-option")
    if getattr(args, "skip_bad_images", False):  # a reader option with its own flag
        values["data_options"]["skip_bad_images"] = True
    values["timm_options"] = parse_options(getattr(args, "timm_option", []), "--timm-option")
    return values


def given_config_values(parser: argparse.ArgumentParser, argv: list[str] | None) -> dict[str, Any]:
    """The :class:`TrainConfig` fields set by options given explicitly in ``argv`` (not by
    defaults), as :func:`config_values` reads them: what a resume checks against the run."""
    shadow = copy.deepcopy(parser)
    shadow.set_defaults(**dict.fromkeys(vars(parser.parse_args(argv))))  # None: not given
    given = {k: v for k, v in vars(shadow.parse_args(argv)).items() if v is not None}
    values = config_values(argparse.Namespace(**given))
    for key in ("data_option", "timm_option"):
        if key not in given:
            values.pop(key + "s")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed arguments describe."""
    return TrainConfig(**config_values(args))
