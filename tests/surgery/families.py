"""Representative timm families, shrunk so that a real forward and backward takes well under a
second on CPU. ``kwargs(size)`` gives the timm options that build the model for ``size``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SIZES = (64, 96)


def _sized(**extra: Any) -> Callable[[int], dict[str, Any]]:
    return lambda size: {"img_size": size, **extra}


def _plain(size: int) -> dict[str, Any]:
    return {}


FAMILIES: dict[str, Callable[[int], dict[str, Any]]] = {
    "resnet18": _plain,
    "efficientnet_b0": _plain,
    "mobilenetv3_small_050": _plain,
    "convnext_atto": _plain,
    "regnetx_002": _plain,
    "densenet121": _plain,
    "vgg11": _plain,
    "vit_tiny_patch16_224": _sized(depth=2),
    "deit_tiny_distilled_patch16_224": _sized(depth=2),
    "swin_tiny_patch4_window7_224": _sized(window_size=2, depths=(1, 1, 1, 1)),
    "maxvit_rmlp_pico_rw_256": lambda size: {"img_size": 2 * size},  # windows need 4x4 grids
    "maxxvitv2_nano_rw_256": lambda size: {"img_size": 2 * size},
    "levit_128s": lambda size: {"img_size": 2 * size},  # stride 64: 2x2 and 3x3 grids
    "crossvit_tiny_240": lambda size: {"img_size": 120 if size == SIZES[0] else 240},  # a list
    "pit_ti_224": _sized(),
}

# the smoke slice that every `make test` runs
FAST = ("resnet18", "mobilenetv3_small_050", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
        "levit_128s", "crossvit_tiny_240")


def input_size(name: str, size: int) -> int:
    kwargs = FAMILIES[name](size)
    return int(kwargs.get("img_size", size))
