"""The swap: a timm backbone without its classifier, plus a new head.

``swap_head`` probes what the backbone's ``forward_features`` returns (surgery.layout), removes
every module whose parameters the features do not depend on (the classifier, and the parts of
timm's head that run after pooling, such as MobileNetV3's ``conv_head``), and attaches a head
from the registry (surgery.heads). The backbone's remaining parameters and buffers are the same
tensors as before: nothing is copied, re-initialised or reset.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .backbone import load_backbone
from .heads import HEADS, as_hidden, build_head, check_head_args
from .layout import (
    FeatureInfo,
    Probe,
    default_input_size,
    extract_features,
    model_in_chans,
    probe_features,
    raw_features,
)
from .memory import check_head_fits
from .pooling import GridMismatchError, GridTooSmallError, no_class_token_reason
from .registry import head_names
from .spec import HeadSpec, resolve_head

__all__ = ["HeadSwapped", "OriginalHead", "swap_head", "RemovedModule"]


@dataclass(frozen=True)
class RemovedModule:
    """A module the swap took out of the backbone, with what it held."""

    name: str
    description: str
    params: int

    def __str__(self) -> str:
        return f"{self.name}: {self.description} ({self.params:,} params)"


def _describe_module(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text else type(module).__name__


def _unused_modules(model: nn.Module, used: set[str]) -> list[str]:
    """Names of the outermost modules that own parameters, none of which the features used."""
    removable: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(r + ".") for r in removable):
            continue
        names = [f"{name}.{n}" for n, _ in module.named_parameters()]
        if names and not any(n in used for n in names):
            removable.append(name)
    return removable


def _replace(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, new)
    return old


class OriginalHead(nn.Module):
    """timm's own head (``forward_head``), its modules listed here for counting and optimisers.

    The modules stay attached to the backbone as well, since timm's ``forward_head`` reads them
    from there: use :meth:`HeadSwapped.backbone_parameters` for the backbone-only parameters.
    """

    def __init__(self, model: nn.Module, module_names: Sequence[str]):
        super().__init__()
        self.parts = nn.ModuleDict({n.replace(".", "__"): model.get_submodule(n)
                                    for n in module_names})
        object.__setattr__(self, "_timm_model", model)  # not registered: the backbone owns it

    def forward(self, x: Any) -> torch.Tensor:
        forward_head: Callable[..., torch.Tensor] = getattr(self._timm_model, "forward_head")  # noqa: B009
        return forward_head(x)


class HeadSwapped(nn.Module):
    """A timm backbone (classifier removed) followed by a new head.

    ``backbone`` is the timm model itself, so ``forward_features`` and timm's helpers still work;
    ``head`` maps its features to ``num_classes`` logits; ``features`` describes the features at
    the input size the model was built for; ``recipe`` holds what :func:`surgery.save` needs to
    rebuild it; ``removed`` lists what the swap took out.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, features: FeatureInfo,
                 recipe: dict[str, Any], removed: Sequence[RemovedModule] = ()):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.features = features
        self.recipe = dict(recipe)
        self.removed = list(removed)

    @property
    def num_classes(self) -> int:
        return int(self.recipe["num_classes"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The features the head consumes (the last map if the backbone returns a list)."""
        return extract_features(self.backbone, x, self.features.source)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def head_input(self, x: torch.Tensor) -> Any:
        """What ``head`` receives for input ``x``: timm's raw ``forward_features`` output for the
        ``original`` head, :meth:`forward_features` for every other (what a feature cache holds
        when the backbone is frozen)."""
        if isinstance(self.head, OriginalHead):
            return raw_features(self.backbone, x)
        return self.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, OriginalHead):  # timm's head reads the raw output (lists too)
            return self.head(raw_features(self.backbone, x))
        feats = self.forward_features(x)
        try:
            return self.head(feats)
        except (GridMismatchError, GridTooSmallError) as err:
            raise ValueError(err.describe((x.shape[-2], x.shape[-1]))) from None

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the head (for optimiser groups and counting)."""
        return self.head.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the backbone that are not part of the head."""
        head = {id(p) for p in self.head.parameters()}
        return (p for p in self.backbone.parameters() if id(p) not in head)


def _as_hw(input_size: int | Sequence[int] | None, model: nn.Module) -> tuple[int, int]:
    if input_size is None:
        return default_input_size(model)
    if isinstance(input_size, int):
        size: Sequence[int] = (input_size, input_size)
    else:
        size = tuple(input_size)[-2:]
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"input_size must be an int, (H, W) or (C, H, W), got {input_size!r}")
    return int(size[0]), int(size[1])


def _origin(model: nn.Module) -> dict[str, Any]:
    origin = getattr(model, "headswap_origin", None)
    if origin:
        return dict(origin)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture")
    return {"name": name, "in_chans": model_in_chans(model), "timm_kwargs": {}}


def _warn_single_position(info: FeatureInfo, name: str) -> None:
    if info.num_positions == 1:
        warnings.warn(
            f"{name}: the final feature grid is 1x1 at input {info.input_size[0]}x"
            f"{info.input_size[1]}, so gap, gmp and flatten are the same operation; use a "
            "larger input size to compare them", stacklevel=4)


def _warn_gem_on_tokens(info: FeatureInfo, kind: str) -> None:
    if kind == "gem" and info.layout == "NLC":
        warnings.warn(
            "gem clamps features below eps to eps before the power, and token models' features "
            "(normalised per token) are often about half negative: those count as eps and pass "
            "no gradient; fine-tuning can shift them (the final norm's bias), or choose gap, "
            "attn or token for token models",
            stacklevel=4)


def _post_pool_norm(model: nn.Module, unused: Sequence[str]) -> str | None:
    """timm's ``fc_norm`` (the norm applied after pooling) when the swap removes it, else None."""
    if "fc_norm" not in unused:
        return None
    return None if isinstance(model.get_submodule("fc_norm"), nn.Identity) else "fc_norm"


def _class_token_probe(model: nn.Module, probe: Probe, hw: tuple[int, int], name: str) -> Probe:
    """The probe the token head needs: one whose features hold the class token."""
    if not probe.features.class_token and probe.features.source == "intermediates":
        probe = probe_features(model, hw, class_token=True)  # PiT: tokens from forward_features
    if not probe.features.class_token:
        raise ValueError(no_class_token_reason(probe.features, name))
    return probe


def _fresh_backbone(swapped: HeadSwapped) -> nn.Module:
    """For a re-swap: a new timm model of the same architecture and options as ``swapped``, with
    its backbone's weights copied. ``swapped`` itself is not touched."""
    r = swapped.recipe
    if not r.get("backbone"):
        raise ValueError("this HeadSwapped model has no backbone name in its recipe (its backbone "
                         "was not created by timm by name), so it cannot be re-swapped; swap the "
                         "original timm model instead")
    device = next(iter(swapped.parameters()), torch.empty(0)).device
    fresh = load_backbone(r["backbone"], in_chans=r.get("in_chans", 3), **r.get("timm_kwargs", {}))
    own, old = fresh.state_dict(), swapped.backbone.state_dict()
    # the removed classifier is not in the old state; the swap replaces the new one anyway
    fresh.load_state_dict({k: v for k, v in old.items()
                           if k in own and own[k].shape == v.shape}, strict=False)
    if r.get("normalization"):  # the weights still expect the inputs they were trained on
        origin: dict[str, Any] = getattr(fresh, "headswap_origin")  # noqa: B009
        origin["normalization"] = dict(r["normalization"])
    return fresh.to(device)


def _backbone_of(model_or_name: nn.Module | str, load_kwargs: dict[str, Any]) -> nn.Module:
    """The timm model a swap works on: loaded by name (with ``load_kwargs``), the one given, or
    for a :class:`HeadSwapped` a new one with its backbone's weights."""
    if isinstance(model_or_name, str):
        return load_backbone(model_or_name, **load_kwargs)
    if isinstance(model_or_name, nn.Module):
        if load_kwargs:
            raise ValueError(f"options {sorted(load_kwargs)} apply when a model name is given, "
                             "not a model")
        if isinstance(model_or_name, HeadSwapped):
            return _fresh_backbone(model_or_name)
        return model_or_name
    raise ValueError(f"expected a timm model or a model name, got {type(model_or_name).__name__}")


def _reset_own_classifier(model: nn.Module, num_classes: int, name: str) -> None:
    """The ``original`` head: timm's own classifier, reset to ``num_classes``."""
    reset: Callable[..., None] | None = getattr(model, "reset_classifier", None)
    if not callable(reset):
        raise ValueError(
            f"{name} has no classifier of its own (timm builds it as a feature encoder), so "
            f"there is no original head to reset; use a pooling head ({head_names()})")
    reset(num_classes)


def swap_head(
    model_or_name: nn.Module | str,
    head: str | HeadSpec = "gap",
    num_classes: int | None = None,
    hidden: int | Sequence[int] | None = None,
    dropout: float | None = None,
    input_size: int | Sequence[int] | None = None,
    *,
    probe: Probe | None = None,
    **load_kwargs: Any,
) -> HeadSwapped:
    """Replace the classifier of a timm backbone with a head from ``surgery.HEADS``.

    ``model_or_name`` is a timm model or a name for :func:`load_backbone` (which receives
    ``load_kwargs``: ``pretrained``, ``checkpoint``, ``in_chans``, timm options). A timm model
    passed in is modified in place and becomes ``.backbone``; a :class:`HeadSwapped` is left
    unchanged and re-swapped onto a new backbone of the same architecture and weights. ``head``
    is a head spec (``'gem:p=3:learn_p=0'``, surgery.spec); ``hidden`` (``512`` is one layer) /
    ``dropout`` may be given here instead of in the spec, not in both. ``num_classes`` defaults to
    the backbone's (a HeadSwapped's own). ``input_size`` ((H, W) or an int) is the size the head
    is built for, the model's default if None (``flatten`` depends on it; ``spp`` checks its
    grid). ``probe``: a :func:`probe_features` result for this model at ``input_size``, to skip
    probing again (zoo sweeps build many heads on one backbone).
    """
    spec = resolve_head(head, None if hidden is None else as_hidden(hidden), dropout)
    if isinstance(model_or_name, HeadSwapped):  # a re-swap keeps the size and classes by default
        input_size = model_or_name.recipe["input_size"] if input_size is None else input_size
        num_classes = model_or_name.num_classes if num_classes is None else num_classes
    model = _backbone_of(model_or_name, load_kwargs)
    return _swap(model, spec, num_classes, input_size, probe)


def _swap(model: nn.Module, spec: HeadSpec, num_classes: int | None,
          input_size: int | Sequence[int] | None, probe: Probe | None) -> HeadSwapped:
    kind, hidden, dropout = spec.kind, spec.hidden, spec.dropout
    if num_classes is None:
        num_classes = int(getattr(model, "num_classes", 0) or 1000)
    check_head_args(kind, num_classes, hidden, dropout, spec.kind_options)
    hw = _as_hw(input_size, model)
    origin = _origin(model)
    name = origin.get("name") or type(model).__name__
    if kind == "original":
        _reset_own_classifier(model, num_classes, name)
    if probe is None or probe.features.input_size != hw:
        probe = probe_features(model, hw)
    if HEADS[kind].needs_class_token:
        probe = _class_token_probe(model, probe, hw, name)
    info = probe.features
    _warn_single_position(info, name)
    _warn_gem_on_tokens(info, kind)
    unused = _unused_modules(model, probe.used_params)
    norm = _post_pool_norm(model, unused) if HEADS[kind].needs_class_token else None
    removed = [RemovedModule(n, _describe_module(model.get_submodule(n)),
                             sum(p.numel() for p in model.get_submodule(n).parameters()))
               for n in unused if n != norm]
    if kind == "original":
        new_head: nn.Module = OriginalHead(model, unused)
    else:
        extra = {"norm": model.get_submodule(norm)} if norm else {}
        device = next(iter(model.parameters()), torch.empty(0)).device
        check_head_fits(kind, info, num_classes, hidden, dropout, device,
                        **spec.kind_options)  # before any change to the model
        for n in unused:
            _replace(model, n, nn.Identity())
        new_head = build_head(kind, info, num_classes, hidden, dropout, **spec.kind_options,
                              **extra).to(device)
    recipe = {
        "backbone": origin.get("name"),
        "in_chans": origin.get("in_chans", 3),
        "timm_kwargs": origin.get("timm_kwargs", {}),
        "head": kind,
        "head_spec": str(spec),
        "num_classes": num_classes,
        "hidden": list(hidden),
        "dropout": float(dropout),
        "input_size": list(hw),
        "removed": [r.name for r in removed],  # what a backbone read from this file lacks
    }
    if origin.get("normalization"):  # the mean / std the backbone's weights were trained with
        recipe["normalization"] = dict(origin["normalization"])
    return HeadSwapped(model, new_head, info, recipe, removed)
