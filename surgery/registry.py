"""The head-kind registry itself: :data:`HEADS`, its entries, and their names for messages.

It imports nothing of the heads' code, so that any module (the poolings' errors included) can
name the registered kinds without an import cycle; :mod:`surgery.heads` fills it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .options import Option

__all__ = ["HEADS", "HeadBuilder", "HeadKind", "add_head_kind", "head_names"]

# (features, num_classes, hidden, dropout, **kind options) -> head module
HeadBuilder = Callable[..., nn.Module]


@dataclass(frozen=True)
class HeadKind:
    """One entry of the registry: the name users type, a one-line description, a factory, the
    options it takes (the MLP options included) and when to choose it."""

    name: str
    description: str
    build: HeadBuilder | None  # None: built by swap_head from the backbone itself (``original``)
    any_input_size: bool = True
    options: tuple[Option, ...] = ()
    needs_class_token: bool = False

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options if o.name == name), None)

    def __str__(self) -> str:
        return self.name


HEADS: dict[str, HeadKind] = {}


def add_head_kind(kind: HeadKind) -> HeadKind:
    """Add ``kind`` to :data:`HEADS`; a name already taken is refused (as in every registry)."""
    if kind.name in HEADS:
        raise ValueError(f"head kind {kind.name!r} is already registered; choose another name")
    HEADS[kind.name] = kind
    return kind


def head_names(*, any_input_size: bool | None = None) -> str:
    """The head kinds every backbone can take (a factory of their own, no class token needed),
    in registration order, as ``"gap, gmp, ..."`` for messages; ``any_input_size`` keeps only
    the kinds that do (True) or do not (False) take any input size."""
    return ", ".join(k.name for k in HEADS.values()
                     if k.build is not None and not k.needs_class_token
                     and (any_input_size is None or k.any_input_size == any_input_size))
