"""Memory a new tensor can take, and the check that a head fits before it is allocated.

A Flatten head grows with the input (channels x grid positions x classes weights): at an input of
100000 px it would ask for hundreds of GB. :func:`check_head_fits` sizes a head on the meta device
(no memory) and refuses it, naming the size, when the device has less memory available.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .heads import build_head
from .layout import FeatureInfo
from .registry import head_names

__all__ = ["check_head_fits", "free_bytes"]


def free_bytes(device: torch.device) -> int | None:
    """Memory available for new tensors on ``device`` (None when unknown, or on meta)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, ValueError, OSError):
            return None


def check_head_fits(head: str, info: FeatureInfo, num_classes: int, hidden: tuple[int, ...],
                    dropout: float, device: torch.device, **options: Any) -> None:
    """Refuse a head whose weights would not fit in memory, before allocating them (a Flatten
    head grows with the input: C x H x W x classes). Sized by building it, with its kind
    ``options``, on the meta device."""
    free = free_bytes(device)
    if free is None:
        return
    with torch.device("meta"):
        twin = build_head(head, info, num_classes, hidden, dropout, **options)
    params = sum(p.numel() for p in twin.parameters())
    need = sum(p.numel() * p.element_size() for p in twin.parameters())
    if need > free:
        grid = "x".join(map(str, info.grid))
        raise ValueError(
            f"a {head} head on a {grid} grid of {info.channels} channels (input "
            f"{info.input_size[0]}x{info.input_size[1]}) needs {params:,} parameters "
            f"({need / 2**30:.1f} GiB), more than the {free / 2**30:.1f} GiB of {device.type} "
            "memory available; use a smaller input size, or a pooling head "
            f"({head_names(any_input_size=True)}), whose size does not grow with the input")
