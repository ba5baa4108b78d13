"""Class subsets: train and test on some of a data set's classes, relabelled 0..k-1.

``--classes 0,2,3,4,6`` (indices) or ``--classes Trouser,Sandal`` (names, where they contain no
comma) keeps those classes of the official train and test splits, in the order given, and
relabels them 0..k-1: the source task of a transfer experiment on one subset and the target task
on another. :func:`classes_label` names the subset in run names, so runs on different subsets
never share a directory.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import replace

import torch

from .arrays import Images, take
from .registry import RawData

__all__ = ["classes_label", "parse_classes", "resolve_classes", "select_classes"]

ClassRef = int | str


def parse_classes(text: str) -> tuple[ClassRef, ...]:
    """``'0,2,3'`` -> ``(0, 2, 3)``; ``'Trouser,Bag'`` -> ``('Trouser', 'Bag')``: an item of
    digits is a class index, anything else a class name. Empty items are a ValueError."""
    items = [s.strip() for s in str(text).split(",")]
    if not items or any(not s for s in items):
        raise ValueError(f"--classes expects class indices or names separated by commas (e.g. "
                         f"0,2,3,4,6), got {text!r}")
    return tuple(int(s) if s.isdigit() else s for s in items)


def resolve_classes(classes: Sequence[ClassRef], names: Sequence[str]) -> list[int]:
    """The indices into ``names`` of the classes asked for (indices or names), in the order
    given; ValueError for an unknown or repeated class, listing the data set's classes."""
    choices = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    picked: list[int] = []
    for ref in classes:
        if isinstance(ref, bool) or not isinstance(ref, int | str):
            raise ValueError(f"--classes takes class indices or names, got {ref!r}")
        if isinstance(ref, int):
            if not 0 <= ref < len(names):
                raise ValueError(f"--classes: no class {ref}; the data set has {len(names)} "
                                 f"classes: {choices}")
            idx = ref
        elif ref in names:
            idx = list(names).index(ref)
        else:
            raise ValueError(f"--classes: no class named {ref!r}; its classes: {choices}")
        if idx in picked:
            raise ValueError(f"--classes: class {idx} ({names[idx]}) is listed twice; give each "
                             "class once")
        picked.append(idx)
    if len(picked) < 2:
        raise ValueError(f"--classes needs at least 2 classes to classify, got {len(picked)}")
    return picked


def _keep(x: Images, y: torch.Tensor, picked: Sequence[int]) -> tuple[Images, torch.Tensor]:
    """The images of ``picked`` classes (in the data's order), labels relabelled to positions."""
    lut = torch.full((int(y.max()) + 1 if len(y) else 1,), -1, dtype=torch.long)
    for new, old in enumerate(picked):
        if old < len(lut):
            lut[old] = new
    mask = lut[y] >= 0 if len(y) else torch.zeros(0, dtype=torch.bool)
    idx = torch.nonzero(mask).flatten()
    return take(x, idx), lut[y[idx]]


def select_classes(raw: RawData, classes: Sequence[ClassRef]) -> RawData:
    """``raw`` cut to ``classes`` (indices or names) in both official splits, relabelled
    0..k-1 in the order given; the class names follow. An empty ``classes`` keeps everything."""
    if not classes:
        return raw
    picked = resolve_classes(classes, raw.classes)
    tx, ty = _keep(raw.train_x, raw.train_y, picked)
    sx, sy = _keep(raw.test_x, raw.test_y, picked)
    return replace(raw, train_x=tx, train_y=ty, test_x=sx, test_y=sy,
                   classes=[raw.classes[i] for i in picked])


def classes_label(classes: Sequence[ClassRef], max_len: int = 40) -> str:
    """The subset in a run name: ``c0.2.3.4.6`` (names: ``cTrouser.Bag``; characters other than
    letters, digits, ``_`` and ``+`` become ``_``); over ``max_len`` characters, the count and a
    digest (``c12classes-1a2b3c4d``). Empty for all classes."""
    if not classes:
        return ""
    text = ".".join(re.sub(r"[^A-Za-z0-9_+]", "_", str(c)) for c in classes)
    if len(text) + 1 <= max_len:
        return "c" + text
    digest = hashlib.blake2b(text.encode(), digest_size=4).hexdigest()
    return f"c{len(classes)}classes-{digest}"
