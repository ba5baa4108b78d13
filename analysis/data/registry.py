"""The data-set registry: one reader per name users type (``--dataset NAME``).

``DATASETS`` maps a name (``fashion-mnist``, ``cifar10``, ``imagefolder``, ``synthetic``) to a
reader ``f(data_dir, download, **options) -> RawData`` that returns the official train and test
images as uint8 ``(N, C, H, W)`` (tensors, or ImageArrays over memory-mapped files). A reader that
takes a ``resize`` option decodes image files (:func:`decodes_files`): it also takes
``image_size``, ``decode_workers`` and ``cache_dir``, which a run sets from ``--img-size``,
``--resize``, ``--decode-workers`` and ``--data-cache-dir``. The readers themselves live in analysis.data.readers;
analysis.data.splits turns their output into train / validation / test splits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .arrays import Images

__all__ = ["DATASETS", "RawData", "Reader", "decodes_files", "register_dataset"]


@dataclass
class RawData:
    """A reader's output: official train and test splits as uint8 ``(N, C, H, W)`` images (a
    tensor in memory, or an ImageArray over a memory-mapped file) + int64 labels."""

    train_x: Images
    train_y: torch.Tensor
    test_x: Images
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


def decodes_files(name: str) -> bool:
    """Whether data set ``name`` decodes image files (its reader takes a ``resize`` option)."""
    import inspect

    reader = DATASETS.get(name)
    return reader is not None and "resize" in inspect.signature(reader).parameters
