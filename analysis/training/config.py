"""The configuration of one fine-tuning run: every option of tools/finetune.py, as a dataclass.

Stored in a run's ``config.json`` so that ``--resume`` and studies rebuild the same run.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import surgery
from surgery import HeadSpec, as_hidden, check_timm_options
from surgery.ranges import POSITIVE_INT, Range

from ..data import (
    DATASETS,
    DEFAULT_RESIZE,
    RESIZE_POLICIES,
    DataSplits,
    check_reader_options,
    check_resize,
    classes_label,
    decodes_files,
    load_dataset,
    parse_classes,
    stratified_indices,
    take,
)
from ..reporting.tensorboard import check_tensorboard
from .declare import Declared, option, whole

__all__ = ["AMP", "DECLARED", "FEATURE_CACHE", "FEATURE_DTYPES", "LINEAR_PROBE_MIN_STEPS",
           "NOT_FEATURES", "NUMERIC_RULES", "OPTIMIZERS", "REGIMES", "RESUME_FREE", "TrainConfig",
           "check_number", "config_from_record", "load_run_data", "option_flag", "run_name"]

REGIMES = ("full", "linear-probe", "two-stage")
LINEAR_PROBE_MIN_STEPS = 1000  # a linear probe's default --min-steps
OPTIMIZERS = ("adamw", "sgd")
FEATURE_CACHE = ("auto", "off")
FEATURE_DTYPES = ("float16", "float32")
AMP = ("auto", "on", "off")

# the argument groups of the training flags, in --help order
MODEL, DATA = "model", "data"
DECODING = "image files (imagefolder): decoded once, cached on disk"
OPTIM = "optimisation"
FEATURES = "feature cache (frozen backbone: linear-probe, two-stage head epochs)"
SYSTEM, RUN_DIR = "system", "run directory"


def _size(text: str) -> int | float:
    """``--val-size``: a count (``500``), or a fraction of the training split (``0.1``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count or a fraction, got {text!r}") from None
    return value if value < 1 else int(value)


_positive_int = POSITIVE_INT.arg_type("a positive integer")


def head_help() -> str:
    """The help of ``--head``: the spec syntax and every registered kind with its description."""
    return surgery.spec_help() + ". " + "; ".join(f"{k}: {v.description}"
                                                  for k, v in surgery.HEADS.items())


def _classes(text: str) -> tuple[int | str, ...]:
    """``--classes``: class indices or names separated by commas (argparse shows the error)."""
    try:
        return parse_classes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None



@dataclass
class TrainConfig:
    """Everything a run needs; stored in ``config.json`` so ``--resume`` can rebuild it.

    Each field declares its flag, help, range and rules once (analysis.training.declare)."""

    # model (surgery.swap_head)
    model: str = option("resnet18")
    head: str = option("gap", group=MODEL, per_run=True, features=False, cli={"metavar": "SPEC"},
                       help=lambda: head_help())  # built with the parser: every head kind
    hidden: tuple[int, ...] = option(
        (), group=MODEL, per_run=True, features=False, unset_default=True,
        cli={"type": _positive_int, "nargs": "*"},
        help="hidden Linear-ReLU-Dropout widths before the output layer (or hidden= in the head "
             "spec, not both)")
    dropout: float = option(
        0.0, group=MODEL, per_run=True, features=False, unset_default=True,
        range=Range(0, 1, high_open=True),
        help="dropout in the head (or dropout= in the head spec, not both)")
    pretrained: bool = option(False, group=MODEL, cli={"action": "store_true"},
                              help="start from timm's pretrained weights")
    checkpoint: str | None = option(None, group=MODEL,
                                    help="start from a local backbone weights file")
    in_chans: int | None = option(
        None, group=MODEL, range=whole(1, optional=True), cli={"type": _positive_int},
        help="model input channels (default: the data's from scratch; 3 when pretrained, "
             "grayscale repeated)")
    timm_options: dict[str, Any] = option(
        factory=dict, group=MODEL, flag="--timm-option",
        cli={"action": "append", "default": [], "metavar": "KEY=VALUE", "dest": "timm_option"},
        help="timm.create_model option, repeatable (e.g. drop_path_rate=0.1, output_stride=16)")
    # data (analysis.data)
    dataset: str = option("fashion-mnist", group=DATA, cli={"choices": list(DATASETS)},
                          help="data set")
    classes: tuple[int | str, ...] = option(
        (), group=DATA, unset_default=True, cli={"type": _classes, "metavar": "C,C,..."},
        help="train and test on these classes only (indices, e.g. 0,2,3,4,6, or names without "
             "commas), relabelled 0..k-1 in the order given; the run name shows the subset "
             "(default: all classes)")
    data_dir: str | None = option(
        None, group=DATA, help="where the data lives (fashion-mnist: also $HEADSWAP_DATA, "
                               "/usr/share/datasets/fashion-mnist)")
    download: bool = option(False, group=DATA, cli={"action": "store_true"},
                            help="download with torchvision if missing")
    train_size: int | None = option(
        None, group=DATA, per_run=True, features=False,
        range=whole(1, optional=True, hint="leave it out to train on all the data"),
        help="stratified training subset (default: all after validation)")
    val_size: int | float = option(
        0.1, group=DATA, features=False, cli={"type": _size},
        range=Range(0, low_open=True, hint="a count (500) or a fraction of train (0.1)"),
        help="validation held out from train: a count, or a fraction if < 1 (default {default})")
    train_eval_size: int | None = option(
        None, group=DATA, features=False, range=whole(1, optional=True),
        help="fixed train sample for eval-mode train metrics (default: as val)")
    test_size: int | None = option(
        None, group=DATA, features=False,
        range=whole(1, optional=True, hint="leave it out to test on the whole test split"),
        help="test on a stratified subset of the test split, the same images for every run "
             "(default: all of it)")
    pool_size: int | None = option(
        None, group=DATA,
        range=whole(2, optional=True, hint="leave it out to draw from the whole split"),
        help="draw validation and the training subset from a fixed stratified subset of this "
             "many training images, the same for every seed (default: all)")
    img_size: int | None = option(
        None, group=DATA,
        range=whole(1, optional=True, hint="leave it out for the data's own size"),
        help="resize to this (default: native); image folders are decoded at it")
    augment: bool | None = option(
        None, group=DATA, cli={"action": argparse.BooleanOptionalAction},
        help="random crop and flip (default: on while the backbone trains, off while it is "
             "frozen)")
    data_options: dict[str, Any] = option(
        factory=dict, group=DATA, flag="--data-option",
        cli={"action": "append", "default": [], "metavar": "KEY=VALUE", "dest": "data_option"},
        help="reader option, repeatable (synthetic: num_classes, n_train, n_test, image_size, "
             "channels; imagefolder: gray, test_fraction, image_size (default: --img-size, "
             "else 64))")
    # image files (imagefolder): decoded once at img_size into the decode cache
    resize: str = option(
        DEFAULT_RESIZE, group=DECODING, cli={"choices": RESIZE_POLICIES},
        help="how an image becomes a square: shorter-crop (shorter side to the size, centre "
             "crop, as timm's eval transform), squash (both sides to the size), pad (letterbox, "
             "black) (default {default})")
    decode_workers: int | None = option(
        None, group=DECODING, resume=True, cli={"metavar": "N"},
        range=whole(1, optional=True, hint="leave it out to decode on every core"),
        help="decoding processes (default: every core)")
    data_cache_dir: str | None = option(
        None, group=DECODING, resume=True, cli={"metavar": "DIR"},
        help="where decoded image folders are cached (default: $HEADSWAP_DATA_CACHE, else "
             "~/.cache/headswap/data)")
    # optimisation
    epochs: int = option(5, group=OPTIM, features=False, range=whole(1),
                         help="(default {default})")
    min_steps: int | None = option(
        None, group=OPTIM, features=False, cli={"metavar": "N"},
        range=whole(0, optional=True, hint="0: each epoch is one pass over the training set"),
        help="optimiser steps in the whole run at least: when --epochs passes over the training "
             "set give fewer, each epoch takes further passes, so a small training set is still "
             f"trained to convergence (default: {LINEAR_PROBE_MIN_STEPS} for --regime "
             "linear-probe, else 0)")
    batch_size: int = option(64, group=OPTIM, features=False, range=whole(1),
                             help="(default {default})")
    eval_batch_size: int | None = option(None, group=OPTIM, range=whole(1, optional=True),
                                         help="(default 2x batch size)")
    optimizer: str = option("adamw", group=OPTIM, features=False, flag="--opt",
                            cli={"choices": OPTIMIZERS}, help="optimiser (default {default})")
    lr: float = option(1e-3, group=OPTIM, features=False, range=Range(0, low_open=True),
                       help="peak learning rate (default {default})")
    min_lr: float = option(0.0, group=OPTIM, features=False, range=Range(0),
                           help="lr at the end of the cosine")
    weight_decay: float = option(0.05, group=OPTIM, features=False, range=Range(0),
                                 help="(default {default}; not on biases and norms)")
    momentum: float = option(0.9, group=OPTIM, features=False, range=Range(0, 1, high_open=True),
                             help="SGD momentum (Nesterov)")
    warmup_epochs: float = option(0.5, group=OPTIM, features=False, range=Range(0),
                                  help="linear warm-up length (default {default})")
    label_smoothing: float = option(
        0.0, group=OPTIM, features=False,
        range=Range(0, 1, high_open=True, hint="0 is plain cross-entropy, 0.1 a common choice"),
        help="label smoothing of the cross-entropy (default {default})")
    clip_grad: float | None = option(
        None, group=OPTIM, features=False,
        range=Range(0, low_open=True, optional=True,
                    hint="the largest gradient L2 norm; leave it out for no clipping"),
        help="max gradient L2 norm")
    regime: str = option(
        "full", group=OPTIM, cli={"choices": REGIMES},
        help="full: everything trains; linear-probe: backbone frozen; two-stage: head first, "
             "then all with a lower backbone lr")
    head_epochs: int = option(1, group=OPTIM, features=False, range=whole(0),
                              help="two-stage: head-only epochs first")
    backbone_lr_scale: float = option(0.1, group=OPTIM, features=False, range=Range(0),
                                      help="two-stage: backbone lr = lr x this")
    # feature cache (analysis.features): frozen-backbone epochs train the head on cached features
    feature_cache: str = option(
        "auto", group=FEATURES, cli={"choices": FEATURE_CACHE},
        help="auto: extract the frozen backbone's features once and train the head on them; "
             "off: run the backbone every step (default auto)")
    feature_cache_views: int = option(
        0, group=FEATURES, cli={"metavar": "K"},
        range=whole(0, hint="0 caches the plain features, no augmentation"),
        help="cache K fixed augmented views (crop and flip drawn once) of each training image; "
             "each epoch samples among them (default 0: no augmentation)")
    feature_cache_mem_gb: float = option(
        4.0, group=FEATURES, resume=True,
        range=Range(0, hint="GiB of features kept in memory; beyond, a file"),
        help="keep the cache in memory up to this many GiB, else in a file on disk "
             "(default {default:g})")
    feature_cache_dir: str | None = option(
        None, group=FEATURES, resume=True,
        help="where an on-disk cache goes (default: the run's or study's directory)")
    feature_cache_dtype: str = option(
        "float16", group=FEATURES, cli={"choices": FEATURE_DTYPES},
        help="stored precision (default float16; float32 matches an uncached run)")
    # system
    device: str = option("auto", group=SYSTEM,
                         help="auto (CUDA if present), cpu, cuda, cuda:1")
    amp: str = option("auto", group=SYSTEM, cli={"choices": AMP},
                      help="mixed precision (auto: on for CUDA)")
    channels_last: bool | None = option(
        None, group=SYSTEM, cli={"action": argparse.BooleanOptionalAction},
        help="channels-last memory format (default: on)")
    sync_bn: bool = option(False, group=SYSTEM, per_run=True, features=False,
                           cli={"action": "store_true"},
                           help="under torchrun: BatchNorm statistics over all processes")
    seed: int = option(0, group=SYSTEM, per_run=True, features=False,
                       range=Range(0, 2**32, high_open=True, whole=True),
                       help="seed of the split, the head and the batch order (default {default})")
    tensorboard: bool = option(
        False, group=SYSTEM, resume=True, features=False, cli={"action": "store_true"},
        help="also write TensorBoard event files: each run's per-epoch metrics in "
             "RUN/tensorboard; a study's HParams (head, lr, seed, size against accuracy, gap "
             "and costs) in STUDY/tensorboard (the tensorboard extra)")
    # run directory
    out: str = option("runs", group=RUN_DIR, per_run=True, features=False,
                      help="parent directory of runs (default {default})")
    name: str | None = option(None, group=RUN_DIR, per_run=True, features=False,
                              help="run directory name (default: from the options)")
    overwrite: bool = option(False, group=RUN_DIR, per_run=True, features=False,
                             cli={"action": "store_true"},
                             help="replace an existing run of that name")
    ckpt_steps: int = option(0, group=RUN_DIR, per_run=True, features=False, resume=True,
                             range=whole(0, hint="0 turns it off"),
                             help="also checkpoint every N steps inside an epoch (0: off)")
    ckpt_minutes: float = option(5.0, group=RUN_DIR, per_run=True, features=False, resume=True,
                                 range=Range(0, hint="0 turns it off"),
                                 help="checkpoint at least this often inside an epoch "
                                      "(default {default})")
    progress: bool = option(True, group=RUN_DIR, per_run=True, features=False, resume=True,
                            flag="--no-progress", cli={"action": "store_false"},
                            help="no progress bar")

    def __post_init__(self) -> None:
        if isinstance(self.hidden, int | list):  # 512 is one hidden layer; JSON gives lists
            self.hidden = as_hidden(self.hidden)
        if isinstance(self.classes, list):  # JSON gives lists
            self.classes = tuple(self.classes)

    def check(self) -> None:
        """Raise ValueError for settings that cannot work, naming the option and the choices.

        Every numeric option is checked against its range here, so ``train(TrainConfig(...))``,
        the tools and the studies all refuse the same values with the same message.
        """
        if self.regime not in REGIMES:
            raise ValueError(f"unknown regime {self.regime!r}; choose from: {', '.join(REGIMES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from: "
                             f"{', '.join(OPTIMIZERS)}")
        if self.amp not in AMP:
            raise ValueError(f"amp must be auto, on or off, got {self.amp!r}")
        for name, rule in NUMERIC_RULES.items():
            check_number(name, getattr(self, name), rule)
        _check_relations(self)
        _check_feature_cache(self)
        check_timm_options(self.timm_options, "--timm-option")
        if self.tensorboard:
            check_tensorboard()
        check_reader_options(self.dataset, self.data_options)
        check_resize(self.resize)
        for key, flag in _DECODE_FLAGS.items():
            if key in self.data_options:
                raise ValueError(f"--data-option {key}=... is set by {flag}; use {flag} instead")
        _check_names(self)

    def steps_floor(self) -> int:
        """Optimiser steps the run takes at least: ``min_steps``, by default
        :data:`LINEAR_PROBE_MIN_STEPS` for a linear probe (a head on a frozen backbone is trained
        to convergence whatever the data size, as DINOv2's linear evaluation trains a fixed
        number of iterations) and none otherwise (epochs decide)."""
        if self.min_steps is not None:
            return self.min_steps
        return LINEAR_PROBE_MIN_STEPS if self.regime == "linear-probe" else 0

    def frozen(self, epoch: int) -> bool:
        """Whether the backbone is frozen in ``epoch`` (0-based): a linear probe always, two-stage
        during its head epochs."""
        return self.regime == "linear-probe" or (self.regime == "two-stage"
                                                 and epoch < self.head_epochs)

    def augments(self, epoch: int) -> bool:
        """Random crop and flip in ``epoch``: as asked, or by default only when the backbone
        trains (a frozen-backbone epoch is a plain linear probe, cached or not)."""
        return self.augment if self.augment is not None else not self.frozen(epoch)

    def head_spec(self) -> HeadSpec:
        """The head with every option: ``head`` parsed, ``hidden`` / ``dropout`` merged in when
        set here rather than in the spec (setting one in both is refused as ambiguous)."""
        return surgery.resolve_head(self.head, tuple(self.hidden) or None, self.dropout or None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**d)


def _check_relations(cfg: TrainConfig) -> None:
    """Ranges that depend on two options, and the head's MLP widths."""
    if cfg.min_lr > cfg.lr:
        raise ValueError(f"{option_flag('min_lr')} {cfg.min_lr} is above {option_flag('lr')} "
                         f"{cfg.lr}: the cosine would raise the learning rate; give a "
                         "--min-lr at most --lr")
    if cfg.val_size >= 1 and not float(cfg.val_size).is_integer():
        raise ValueError(f"{option_flag('val_size')} must be a whole count (500) or a "
                         f"fraction in (0, 1) (0.1), got {cfg.val_size}")
    if any(isinstance(c, bool) or not isinstance(c, int | str) or c == "" or
           (isinstance(c, int) and c < 0) or (isinstance(c, str) and "," in c)
           for c in cfg.classes):
        raise ValueError(f"{option_flag('classes')} takes class indices (>= 0) or names "
                         f"without commas, got {list(cfg.classes)}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in cfg.hidden):
        raise ValueError(f"{option_flag('hidden')} widths must be whole numbers >= 1, got "
                         f"{' '.join(map(str, cfg.hidden))}")

def _check_feature_cache(cfg: TrainConfig) -> None:
    """The feature-cache choices, and views only where a frozen backbone is cached."""
    if cfg.feature_cache not in FEATURE_CACHE:
        raise ValueError(f"--feature-cache must be auto or off, got {cfg.feature_cache!r}")
    if cfg.feature_cache_dtype not in FEATURE_DTYPES:
        raise ValueError(f"--feature-cache-dtype must be float16 or float32, got "
                         f"{cfg.feature_cache_dtype!r}")
    if cfg.feature_cache_views and (cfg.feature_cache == "off" or cfg.regime == "full"):
        raise ValueError("--feature-cache-views caches augmented views of a frozen backbone's "
                         "features: it needs --regime linear-probe or two-stage and "
                         "--feature-cache auto (for fresh random crops every epoch without "
                         "the cache, use --augment)")

def _check_names(cfg: TrainConfig) -> None:
    """Model and head names, before any data is read."""
    import timm

    cfg.head_spec()  # the head spec parses and is not ambiguous
    if not timm.is_model(cfg.model.split(".", 1)[0]):
        close = ", ".join(surgery.closest_model_names(cfg.model.split(".", 1)[0])) or "none"
        raise ValueError(f"unknown model {cfg.model!r}; closest: {close}")


# every field's declaration, and the tables read from them
DECLARED: dict[str, Declared] = {f.name: f.metadata["option"] for f in fields(TrainConfig)}
NUMERIC_RULES: dict[str, Range] = {k: d.range for k, d in DECLARED.items() if d.range is not None}
RESUME_FREE = tuple(k for k, d in DECLARED.items() if d.resume)
NOT_FEATURES = frozenset(k for k, d in DECLARED.items() if not d.features)


def option_flag(field_name: str) -> str:
    """The command-line flag of a TrainConfig field: ``clip_grad`` -> ``--clip-grad``."""
    declared = DECLARED.get(field_name)
    return (declared and declared.flag) or "--" + field_name.replace("_", "-")


def check_number(field_name: str, value: Any, rule: Range) -> None:
    """Raise ValueError naming the flag, the bad value and the range when ``value`` is outside."""
    if rule.holds(value):
        return
    hint = f" ({rule.hint})" if rule.hint else ""
    raise ValueError(f"{option_flag(field_name)} must be {rule.describe()}{hint}, got {value!r}")


_DECODE_FLAGS = {"resize": "--resize", "decode_workers": "--decode-workers",
                 "cache_dir": "--data-cache-dir"}
_LEGACY_IMAGE_SIZE = 64  # image folders were decoded at this size before --img-size decided it


def config_from_record(record: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a run's ``config.json`` (its ``config`` part).

    A record written before ``--resize`` existed resumes as it ran: image files squashed to a
    square, and decoded at the reader's own default size (64 px) rather than at ``--img-size``;
    one from before ``--min-steps``, with no floor."""
    d = dict(record)
    d.setdefault("min_steps", 0)  # runs from before --min-steps: epochs alone decided
    if "resize" not in d:
        d["resize"] = "squash"
        if decodes_files(str(d.get("dataset"))):
            d["data_options"] = {"image_size": _LEGACY_IMAGE_SIZE, **(d.get("data_options") or {})}
    return TrainConfig.from_dict(d)


def run_name(cfg: TrainConfig) -> str:
    """Default run directory name: model, head with its options (surgery.head_label, e.g.
    ``gem-p2-h256``), data and its class subset (``c0.2.3.4.6``), subset size, regime and seed."""
    parts = [cfg.model, surgery.head_label(cfg.head_spec()), cfg.dataset]
    if cfg.classes:
        parts.append(classes_label(cfg.classes))
    parts.append(f"n{cfg.train_size or 'all'}")
    if cfg.regime != "full":
        parts.append(cfg.regime)
    parts.append(f"s{cfg.seed}")
    return "-".join(parts).replace("/", "_")


def load_run_data(cfg: TrainConfig) -> DataSplits:
    """The data set of a run as its config describes it: the one way every tool and study reads it.

    ``cfg.test_size`` cuts the official test split to a stratified subset (seed 0: the same
    images for every run of a study), to bound the cost of testing on a CPU; None keeps it all.
    """
    test_size = cfg.test_size
    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                        train_size=cfg.train_size, val_size=cfg.val_size, seed=cfg.seed,
                        classes=cfg.classes, pool_size=cfg.pool_size, **_reader_options(cfg))
    if test_size is not None and test_size < len(data.test_y):
        idx = stratified_indices(data.test_y, test_size, seed=0)
        data = replace(data, test_x=take(data.test_x, idx), test_y=data.test_y[idx],
                       info=dict(data.info, test=test_size),
                       ids=dict(data.ids, test=data.ids["test"][idx]))
    return data


def _reader_options(cfg: TrainConfig) -> dict[str, Any]:
    """The reader's options: ``--data-option`` values, and for a reader of image files the
    decode settings (``--resize``, ``--decode-workers``, ``--data-cache-dir``) and the size to
    decode at: ``--img-size``, unless ``--data-option image_size`` says otherwise (a smaller one
    is upsampled per batch, with a warning)."""
    options = dict(cfg.data_options)
    if not decodes_files(cfg.dataset):
        return options
    options.update(resize=cfg.resize, decode_workers=cfg.decode_workers,
                   cache_dir=cfg.data_cache_dir)
    stored = options.get("image_size")
    if stored is None and cfg.img_size is not None:
        options["image_size"] = cfg.img_size
    elif stored is not None and cfg.img_size is not None and stored < cfg.img_size:
        warnings.warn(f"{cfg.dataset}: images decoded at {stored} px (--data-option image_size) "
                      f"are upsampled to --img-size {cfg.img_size} for every batch; leave out "
                      "image_size to decode at --img-size", stacklevel=2)
    return options

