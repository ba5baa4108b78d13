"""The data-set registry: one reader per name users type (``--dataset NAME``).

``DATASETS`` maps a name (``fashion-mnist``, ``cifar10``, ``imagefolder``, ``synthetic``) to a
reader ``f(data_dir, download, **options) -> RawData`` that returns the official train and test
images as uint8 tensors ``(N, C, H, W)``. The readers themselves live in analysis.data.readers;
analysis.data.splits turns their output into train / validation / test splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["DATASETS", "RawData", "Reader", "register_dataset"]


@dataclass
class RawData:
    """A reader's output: official train and test splits as uint8 ``(N, C, H, W)`` + int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""  # where it was read from, for the run's config


Reader = Callable[..., RawData]
DATASETS: dict[str, Reader] = {}


def register_dataset(name: str) -> Callable[[Reader], Reader]:
    """Add a reader ``f(data_dir, download, **options) -> RawData`` to :data:`DATASETS`."""
    def deco(fn: Reader) -> Reader:
        if name in DATASETS:
            raise ValueError(f"data set {name!r} is already registered "
                             f"({DATASETS[name].__module__}.{DATASETS[name].__name__}); choose "
                             "another name")
        DATASETS[name] = fn
        return fn
    return deco
