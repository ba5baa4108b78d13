"""Parameter counts: total, trainable, and the backbone / head split of a swapped model.

Parameters shared between modules (tied weights, or timm's own head modules that an
``original`` head lists while the backbone still holds them) are counted once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from surgery import HeadSwapped

__all__ = ["count_params"]


def _numel(params: Iterable[nn.Parameter], seen: set[int] | None = None) -> int:
    """Number of scalar parameters in ``params``, each tensor once (by identity)."""
    seen = set() if seen is None else seen
    total = 0
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def count_params(model: nn.Module) -> dict[str, int | None]:
    """Count the parameters of ``model`` (numbers of scalars, not bytes).

    Returns ``total``, ``trainable`` (``requires_grad``), and for a ``surgery.HeadSwapped``
    ``backbone`` and ``head`` (taken from its ``backbone_parameters()`` / ``head_parameters()``,
    so ``backbone + head == total``); both are ``None`` for any other module. Works on models
    built on the meta device.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"count_params expects an nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    result: dict[str, int | None] = {
        "total": _numel(params),
        "trainable": _numel(p for p in params if p.requires_grad),
        "backbone": None,
        "head": None,
    }
    if isinstance(model, HeadSwapped):
        swapped: Any = model  # a surgery.HeadSwapped
        seen: set[int] = set()
        result["head"] = _numel(swapped.head_parameters(), seen)
        result["backbone"] = _numel(swapped.backbone_parameters(), seen)
    return result
