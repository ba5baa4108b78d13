"""The configuration of one fine-tuning run: every option of tools/finetune.py, as a dataclass.

Stored in a run's ``config.json`` so that ``--resume`` and studies rebuild the same run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Any

import surgery
from surgery import HeadSpec, as_hidden, check_timm_options

from ..data import (
    DEFAULT_RESIZE,
    DataSplits,
    check_reader_options,
    check_resize,
    classes_label,
    decodes_files,
    load_dataset,
    stratified_indices,
    take,
)
from .ranges import NUMERIC_RULES, check_number, option_flag

__all__ = ["FEATURE_CACHE", "FEATURE_DTYPES", "LINEAR_PROBE_MIN_STEPS", "OPTIMIZERS", "REGIMES", "TrainConfig",
           "config_from_record", "load_run_data", "run_name"]

REGIMES = ("full", "linear-probe", "two-stage")
LINEAR_PROBE_MIN_STEPS = 1000  # a linear probe's default --min-steps
OPTIMIZERS = ("adamw", "sgd")
FEATURE_CACHE = ("auto", "off")
FEATURE_DTYPES = ("float16", "float32")


@dataclass
class TrainConfig:
    """Everything a run needs; stored in ``config.json`` so ``--resume`` can rebuild it."""

    # model (surgery.swap_head)
    model: str = "resnet18"
    head: str = "gap"                 # a head spec: gap, gem:p=3:learn_p=0, spp:levels=1x2, ...
    hidden: tuple[int, ...] = ()      # or in the spec (hidden=512x256), not both
    dropout: float = 0.0              # or in the spec (dropout=0.5), not both
    pretrained: bool = False
    checkpoint: str | None = None     # local backbone weights
    in_chans: int | None = None       # None: the data's channels from scratch, 3 when pretrained
    timm_options: dict[str, Any] = field(default_factory=dict)  # timm.create_model keywords
    # data (analysis.data)
    dataset: str = "fashion-mnist"
    classes: tuple[int | str, ...] = ()  # a subset (indices or names), relabelled 0..k-1; (): all
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = None     # stratified subset of the training pool; None: all
    val_size: int | float = 0.1       # held out from train: a count, or a fraction if < 1
    train_eval_size: int | None = None  # fixed train sample for eval-mode metrics; None: as val
    test_size: int | None = None      # stratified subset of the test split (seed 0); None: all
    pool_size: int | None = None      # val and train drawn from this stratified subset (seed 0)
    img_size: int | None = None       # None: the data's own size
    augment: bool | None = None       # random crop and flip; None: on unless the backbone is frozen
    data_options: dict[str, Any] = field(default_factory=dict)
    # image files (imagefolder): decoded once at img_size into the decode cache
    resize: str = DEFAULT_RESIZE      # shorter-crop | squash | pad (analysis.data.resize)
    decode_workers: int | None = None  # decoding processes; None: every core
    data_cache_dir: str | None = None  # None: $HEADSWAP_DATA_CACHE or ~/.cache/headswap/data
    # optimisation
    epochs: int = 5
    min_steps: int | None = None      # optimiser steps at least (None: 1000 for a linear probe, else 0)
    batch_size: int = 64
    eval_batch_size: int | None = None  # None: 2 x batch_size
    optimizer: str = "adamw"
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    momentum: float = 0.9             # SGD only
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    clip_grad: float | None = None    # max global L2 norm of the gradients
    regime: str = "full"
    head_epochs: int = 1              # two-stage: epochs of head-only training first
    backbone_lr_scale: float = 0.1    # two-stage: backbone lr = lr * this in stage two
    # feature cache (analysis.features): frozen-backbone epochs train the head on cached features
    feature_cache: str = "auto"       # auto: whenever the backbone is frozen; off: never
    feature_cache_views: int = 0      # K fixed augmented views per training image (0: none)
    feature_cache_mem_gb: float = 4.0  # in memory up to this many GiB, else a file on disk
    feature_cache_dir: str | None = None  # where the file goes (None: RUN_DIR/features)
    feature_cache_dtype: str = "float16"  # float32 for exactness against an uncached run
    # system
    device: str = "auto"
    amp: str = "auto"                 # auto: on for CUDA (bf16 if supported, else fp16)
    channels_last: bool | None = None  # None: on (CPU and CUDA)
    sync_bn: bool = False             # under torchrun: BatchNorm statistics over all ranks
    seed: int = 0
    # run directory
    out: str = "runs"
    name: str | None = None
    overwrite: bool = False
    ckpt_steps: int = 0               # also checkpoint every N steps inside an epoch (0: off)
    ckpt_minutes: float = 5.0         # ... and at least every this many minutes (0: off)
    progress: bool = True

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
        if self.amp not in ("auto", "on", "off"):
            raise ValueError(f"amp must be auto, on or off, got {self.amp!r}")
        for name, rule in NUMERIC_RULES.items():
            check_number(name, getattr(self, name), rule)
        self._check_relations()
        self._check_feature_cache()
        check_timm_options(self.timm_options, "--timm-option")
        check_reader_options(self.dataset, self.data_options)
        check_resize(self.resize)
        for key, flag in _DECODE_FLAGS.items():
            if key in self.data_options:
                raise ValueError(f"--data-option {key}=... is set by {flag}; use {flag} instead")
        self._check_names()

    def _check_relations(self) -> None:
        """Ranges that depend on two options, and the head's MLP widths."""
        if self.min_lr > self.lr:
            raise ValueError(f"{option_flag('min_lr')} {self.min_lr} is above {option_flag('lr')} "
                             f"{self.lr}: the cosine would raise the learning rate; give a "
                             "--min-lr at most --lr")
        if self.val_size >= 1 and not float(self.val_size).is_integer():
            raise ValueError(f"{option_flag('val_size')} must be a whole count (500) or a "
                             f"fraction in (0, 1) (0.1), got {self.val_size}")
        if any(isinstance(c, bool) or not isinstance(c, int | str) or c == "" or
               (isinstance(c, int) and c < 0) or (isinstance(c, str) and "," in c)
               for c in self.classes):
            raise ValueError(f"{option_flag('classes')} takes class indices (>= 0) or names "
                             f"without commas, got {list(self.classes)}")
        if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in self.hidden):
            raise ValueError(f"{option_flag('hidden')} widths must be whole numbers >= 1, got "
                             f"{' '.join(map(str, self.hidden))}")

    def _check_feature_cache(self) -> None:
        """The feature-cache choices, and views only where a frozen backbone is cached."""
        if self.feature_cache not in FEATURE_CACHE:
            raise ValueError(f"--feature-cache must be auto or off, got {self.feature_cache!r}")
        if self.feature_cache_dtype not in FEATURE_DTYPES:
            raise ValueError(f"--feature-cache-dtype must be float16 or float32, got "
                             f"{self.feature_cache_dtype!r}")
        if self.feature_cache_views and (self.feature_cache == "off" or self.regime == "full"):
            raise ValueError("--feature-cache-views caches augmented views of a frozen backbone's "
                             "features: it needs --regime linear-probe or two-stage and "
                             "--feature-cache auto (for fresh random crops every epoch without "
                             "the cache, use --augment)")

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

    def _check_names(self) -> None:
        """Model and head names, before any data is read."""
        import timm

        self.head_spec()  # the head spec parses and is not ambiguous
        if not timm.is_model(self.model.split(".", 1)[0]):
            close = ", ".join(surgery.closest_model_names(self.model.split(".", 1)[0])) or "none"
            raise ValueError(f"unknown model {self.model!r}; closest: {close}")

    def head_spec(self) -> HeadSpec:
        """The head with every option: ``head`` parsed, ``hidden`` / ``dropout`` merged in when
        set here rather than in the spec (setting one in both is refused as ambiguous)."""
        return surgery.resolve_head(self.head, tuple(self.hidden) or None, self.dropout or None)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**d)


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

