"""Backbone loading: any architecture of ``timm.list_models()``, random, pretrained or from a file.

Every failure a user can cause (a misspelt name, an unreadable or mismatched checkpoint, an
offline pretrained download) becomes a ``ValueError`` / ``FileNotFoundError`` that names the bad
value and the way out, instead of a traceback from inside timm or torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
from torch import nn

from .errors import one_line
from .hub import OFFLINE_HINT, check_weights_reachable
from .weights import checkpoint_settings, read_state_dict, read_weights

__all__ = ["RESERVED_TIMM_OPTIONS", "load_backbone", "check_timm_options", "closest_model_names",
           "expand_model_names", "read_state_dict", "classifier_names"]

# timm.create_model / swap_head keywords that headswap sets itself, and what to do instead
RESERVED_TIMM_OPTIONS = {
    "model_name": "give the name as the model argument",
    "pretrained": "use --pretrained (pretrained=True)",
    "in_chans": "use --in-chans (in_chans=N)",
    "checkpoint_path": "use --checkpoint FILE (checkpoint=PATH)",
    "checkpoint": "use --checkpoint FILE (checkpoint=PATH)",
    "num_classes": "use --num-classes; fine-tuning takes the number of classes from the data",
    "features_only": "headswap replaces the classifier of the full model, so leave it out",
    "head": "use --head", "hidden": "use --hidden", "dropout": "use --dropout",
    "input_size": "use --input-size (--img-size in fine-tuning)",
    "probe": "an internal argument of swap_head",
}


def check_timm_options(options: Mapping[str, Any], flag: str = "--timm-option") -> None:
    """Refuse timm options that headswap sets itself (``num_classes``, ``pretrained``,
    ``in_chans``, ``checkpoint_path``, ...), saying what to use instead, rather than a TypeError
    about a keyword given twice."""
    taken = [k for k in options if k in RESERVED_TIMM_OPTIONS]
    if taken:
        k = taken[0]
        raise ValueError(f"{flag} {k}={options[k]!r}: {k} is set by headswap itself; "
                         f"{RESERVED_TIMM_OPTIONS[k]}")


def closest_model_names(name: str, n: int = 3) -> list[str]:
    """The ``n`` architectures of ``timm.list_models()`` whose names are closest to ``name``."""
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=n, cutoff=0.4)
    if len(close) < n:  # fall back to a prefix match ("resnet81" -> "resnet...")
        prefix = [m for m in names if m.startswith(name[:4]) and m not in close]
        close += prefix[: n - len(close)]
    return close


def expand_model_names(patterns: Sequence[str]) -> list[str]:
    """Architecture names for ``patterns``: exact names (``resnet18``, ``resnet18.a1_in1k``) kept
    as given, timm wildcards (``'resnet*'``, ``'vit_*_patch16_224'``) expanded with
    ``timm.list_models``, in the order given, each name once.

    A wildcard that matches nothing, or a name timm does not know, is a ValueError naming it
    (and the closest names)."""
    names: dict[str, None] = {}
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            found = timm.list_models(pattern)
            if not found:
                raise ValueError(f"no timm model matches {pattern!r} (timm "
                                 f"{timm.__version__}); see timm.list_models()")
            names.update(dict.fromkeys(found))
        else:
            _check_model_name(pattern.split(".", 1)[0])
            names[pattern] = None
    return list(names)


def _check_model_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    arch = name.split(".", 1)[0]  # 'resnet18.a1_in1k' -> 'resnet18'
    if not timm.is_model(arch):
        close = ", ".join(closest_model_names(arch)) or "none"
        raise ValueError(
            f"unknown model {name!r}; closest: {close} "
            f"(timm {timm.__version__} has {len(timm.list_models())} architectures: "
            "see timm.list_models())"
        )


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module names timm's pretrained config lists as the classifier (``('fc',)`` for resnet)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or ()
    return (names,) if isinstance(names, str) else tuple(names)


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def _load_checkpoint(model: nn.Module, name: str, path: str | Path) -> None:
    """Load ``path`` into ``model`` strictly, except for the classifier, which swaps replace: a
    file's classifier may have another number of classes or be absent (a headswap model file
    has none: the modules its swap removed are not expected, nor in a backbone-only file)."""
    weights = read_weights(path)
    state, own = dict(weights.state), model.state_dict()
    removed = weights.recipe.get("removed") or classifier_names(model)
    head_prefixes = tuple(f"{c}." for c in removed)
    missing = [k for k in own if k not in state and not k.startswith(head_prefixes)]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    # a fine-tuned checkpoint may have another number of classes: its classifier is replaced anyway
    head_mismatch = [k for k in mismatched if k.startswith(head_prefixes)]
    mismatched = [k for k in mismatched if k not in head_mismatch]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} with another shape (e.g. {k}: checkpoint "
                         f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise ValueError(
            f"checkpoint {str(path)!r} does not match {name!r}: " + "; ".join(parts)
            + ". Was it saved from another architecture or with other options (in_chans, ...)?"
        )
    for k in own:  # the classifier: another shape, or not in a headswap file
        if k.startswith(head_prefixes) and (k not in state or k in head_mismatch):
            state[k] = own[k]
    model.load_state_dict(state, strict=True)


def _from_model_file(name: str, checkpoint: str | Path | None, in_chans: int | None,
                     timm_kwargs: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """``(in_chans, timm_kwargs, settings)``: a headswap model file's channels and timm options
    as defaults under those given; ``settings`` what :func:`checkpoint_settings` found."""
    settings = checkpoint_settings(checkpoint)
    if not settings:
        return (3 if in_chans is None else in_chans), timm_kwargs, {}
    arch = str(settings.get("backbone") or "").split(".", 1)[0]
    if arch and arch != name.split(".", 1)[0]:
        raise ValueError(f"checkpoint {str(checkpoint)!r} is a headswap model file of a {arch} "
                         f"backbone, not {name}; give {arch} as the model")
    chans = settings["in_chans"] if in_chans is None else in_chans
    return chans, {**settings["timm_kwargs"], **timm_kwargs}, settings


def _set_normalization(model: nn.Module, normalization: dict[str, Any] | None) -> None:
    """The mean / std the weights were trained with, where timm keeps them (pretrained_cfg)."""
    if not normalization:
        return
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    cfg.update(mean=tuple(normalization["mean"]), std=tuple(normalization["std"]))
    object.__setattr__(model, "pretrained_cfg", cfg)  # plain data, as timm sets it


def load_backbone(
    name: str,
    *,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
    in_chans: int | None = None,
    **timm_kwargs: Any,
) -> nn.Module:
    """Create any timm architecture by name, with random, pretrained or local weights.

    ``pretrained=True`` goes through timm's own loader (hub download, or a local file given as
    ``pretrained_cfg_overlay=dict(file=PATH)``); ``checkpoint`` loads a local state dict or timm
    checkpoint (a state dict, a timm checkpoint, a ``.safetensors`` file, or a headswap model
    file whose backbone is used) afterwards. A headswap model file also brings its input
    channels, timm options (those given here win) and the normalisation its backbone was trained
    with (set as ``pretrained_cfg['mean' / 'std']``). ``in_chans`` defaults to 3 (or the file's).
    Works under ``with torch.device('meta'):`` for construction without memory. The arguments
    are remembered on the model (``headswap_origin``) so that a swapped model can be saved as a
    recipe and rebuilt.
    """
    _check_model_name(name)
    in_chans, timm_kwargs, settings = _from_model_file(name, checkpoint, in_chans, timm_kwargs)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    if pretrained:
        check_weights_reachable(name, timm_kwargs)  # offline: now, not after a minute of retries
    try:
        model = timm.create_model(name, pretrained=pretrained, in_chans=in_chans, **timm_kwargs)
    except TypeError as err:
        raise ValueError(f"{name!r} does not accept these options {sorted(timm_kwargs)}: {err}") \
            from None
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise ValueError(f"could not load pretrained weights for {name!r} ({one_line(err)}). "
                         f"Offline? {OFFLINE_HINT}") from None
    if checkpoint is not None:
        _load_checkpoint(model, name, checkpoint)
        _set_normalization(model, settings.get("normalization"))
    origin = {"name": name, "in_chans": in_chans, "timm_kwargs": dict(timm_kwargs)}
    if settings.get("normalization"):
        origin["normalization"] = settings["normalization"]
    object.__setattr__(model, "headswap_origin", origin)  # plain data, not a module or tensor
    return model
