"""count_params: timm's reference counts, and head counts derived by hand."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import surgery
from analysis import count_params

RESNET18 = 11_689_512  # timm / torchvision resnet18, 1000 classes
RESNET50 = 25_557_032
FC18 = 512 * 1000 + 1000  # resnet18's classifier


@pytest.mark.parametrize("name,expected", [("resnet18", RESNET18), ("resnet50", RESNET50)])
def test_reference_counts(name: str, expected: int) -> None:
    with torch.device("meta"):
        model = timm.create_model(name)
    counts = count_params(model)
    assert counts["total"] == expected
    assert counts["trainable"] == expected
    assert counts["backbone"] is None and counts["head"] is None  # not a swapped model


@pytest.mark.parametrize("head,head_params", [
    ("gap", 512 * 10 + 10),             # C*K + K
    ("gmp", 512 * 10 + 10),
    ("gapmp", 2 * 512 * 10 + 10),       # 2C features
    ("nin", 512 * 10 + 10),             # 1x1 conv C -> K
    ("flatten", 512 * 7 * 7 * 10 + 10),  # 250,890 at 224 (7x7 grid)
    ("original", 512 * 10 + 10),        # timm's own fc reset to 10 classes
])
def test_swapped_resnet18_split(head: str, head_params: int) -> None:
    with torch.device("meta"):
        model = surgery.swap_head("resnet18", head=head, num_classes=10, input_size=224)
    counts = count_params(model)
    assert counts["head"] == head_params
    assert counts["backbone"] == RESNET18 - FC18
    assert counts["backbone"] + counts["head"] == counts["total"]


def test_hidden_layer_head_by_hand() -> None:
    with torch.device("meta"):
        model = surgery.swap_head("resnet18", head="gap", num_classes=10, hidden=(64,))
    assert count_params(model)["head"] == (512 * 64 + 64) + (64 * 10 + 10)


def test_trainable_and_shared_parameters_counted_once() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 4))
    model[1].weight = nn.Parameter(model[0].weight.t().contiguous())  # a second tensor
    tied = nn.Sequential(model[0], model[0])  # the same module twice: counted once
    assert count_params(tied)["total"] == 4 * 3 + 3
    model[0].requires_grad_(False)
    counts = count_params(model)
    assert counts["total"] == (4 * 3 + 3) + (3 * 4 + 4)
    assert counts["trainable"] == 3 * 4 + 4


def test_frozen_backbone_leaves_head_trainable() -> None:
    with torch.device("meta"):
        model = surgery.swap_head("resnet18", head="gap", num_classes=10)
    for p in model.backbone_parameters():
        p.requires_grad_(False)
    assert count_params(model)["trainable"] == 5130


def test_rejects_non_module() -> None:
    with pytest.raises(ValueError, match="nn.Module"):
        count_params("resnet18")  # type: ignore[arg-type]
