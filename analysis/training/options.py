"""The fine-tuning flags of every tool that trains (finetune, compare_heads, pick_head, ...).

They are generated from the declarations on :class:`TrainConfig`'s fields (flag, help, range,
group: analysis.training.declare), one flag per field with the config's default;
:func:`config_values` reads them back.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import Field, fields
from typing import Any

from surgery import parse_options, resolve_head
from surgery.ranges import POSITIVE_INT

from .config import (
    DATA,
    DECLARED,
    DECODING,
    FEATURES,
    MODEL,
    OPTIM,
    RUN_DIR,
    SYSTEM,
    TrainConfig,
    option_flag,
)
from .declare import Declared

__all__ = ["add_model_options", "add_num_classes", "add_training_options", "config_from_args", "config_values", "given_config_values"]

_DEFAULTS = TrainConfig()
GROUPS = (MODEL, DATA, DECODING, OPTIM, FEATURES, SYSTEM, RUN_DIR)


def _add_flag(group: argparse._ArgumentGroup, f: Field[Any], declared: Declared,
              **override: Any) -> None:
    """The flag of one TrainConfig field, as its declaration says (``override``: add_argument
    keywords a tool changes, e.g. its own default)."""
    default = getattr(_DEFAULTS, f.name)
    help_ = declared.help() if callable(declared.help) else declared.help
    kwargs: dict[str, Any] = {"dest": f.name, "help": help_.format(default=default) or None,
                              "default": None if declared.unset_default else default}
    if "action" not in declared.cli and "choices" not in declared.cli and declared.range:
        kwargs["type"] = int if declared.range.whole else float
    kwargs.update(declared.cli)
    kwargs.update(override)
    group.add_argument(option_flag(f.name), **kwargs)


def add_model_options(parser: argparse.ArgumentParser, *, head: str | None = "gap",
                      in_chans: int | None = 3, num_classes: int | None = 10
                      ) -> argparse._ArgumentGroup:
    """The model flags of the tools that build a model without training it (swap_head, export):
    the training tools' model flags, declared on the same fields, with these defaults, and
    ``--num-classes``. A default of None means "not given" (export tells a model name from a
    model file by it). Returns the group, for a tool's own model flags."""
    group = parser.add_argument_group("model")
    for f in fields(TrainConfig):
        declared = DECLARED[f.name]
        if declared.group != MODEL:
            continue
        override: dict[str, Any] = {}
        if f.name == "head":
            override["default"] = head
        elif f.name == "in_chans":
            override.update(default=in_chans, help="model input channels" + (
                f" (default {in_chans})" if in_chans else ""))
        _add_flag(group, f, declared, **override)
    add_num_classes(group, num_classes)
    return group


def add_num_classes(group: argparse._ActionsContainer, default: int | None) -> None:
    """``--num-classes``: the new head's outputs (default ``default``; None: 10 unless the
    model file says otherwise)."""
    group.add_argument("--num-classes", type=POSITIVE_INT.arg_type("a positive integer"),
                       default=default, help=f"output classes (default {default or 10})")


def add_training_options(parser: argparse.ArgumentParser, *, per_run: bool = True) -> None:
    """Add the training flags, one per declared TrainConfig field, in their groups (model, data,
    image files, optimisation, feature cache, system, and, ``per_run``, the run directory).

    A study (``per_run=False``) leaves out what varies per run: the head, the training-set
    size, the seed and the run directory, and adds its own grid options instead."""
    groups = {name: parser.add_argument_group(name) for name in GROUPS
              if per_run or name != RUN_DIR}
    for f in fields(TrainConfig):
        declared = DECLARED[f.name]
        if declared.group and (per_run or not declared.per_run):
            _add_flag(groups[declared.group], f, declared)
        if f.name == "data_options":  # a reader option with its own flag
            groups[DATA].add_argument(
                "--skip-bad-images", action="store_true",
                help="imagefolder: leave out unreadable (corrupt, truncated) images with a "
                     "warning naming them, instead of stopping at the first")


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
