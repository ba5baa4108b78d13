"""analysis.costs.measure: figures are consistent, memory is seen, the model is left as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis import measure

KEYS = ("latency_ms", "throughput", "peak_mib")


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(4))


def test_figures_and_units() -> None:
    model = _small()
    model(torch.zeros(1, 3, 16, 16))  # materialise the lazy layer
    result = measure(model, (3, 16, 16), batch_size=2, warmup=1, repeats=3)
    for phase in ("infer", "train"):
        for key in KEYS:
            assert result[f"{phase}_{key}"] > 0
        # throughput is images per second from the median batch latency in ms
        assert result[f"{phase}_throughput"] == pytest.approx(
            2 / (result[f"{phase}_latency_ms"] / 1e3))
    assert result["memory_kind"].startswith("process peak RSS")


def test_state_and_mode_restored() -> None:
    model = _small()
    model(torch.zeros(1, 3, 16, 16))
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    measure(model, (3, 16, 16), batch_size=2, warmup=1, repeats=2)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN stats and weights
    assert all(p.grad is None for p in model.parameters())


class _Hungry(nn.Module):
    """Allocates ``mib`` MiB during inference, so the peak must rise by about that much."""

    def __init__(self, mib: int):
        super().__init__()
        self.mib = mib
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        big = torch.ones(self.mib * 1024 * 1024 // 4)
        return self.lin(x.flatten(1)[:, :4]) + big[:1]


def test_peak_memory_sees_an_allocation() -> None:
    small = measure(_Hungry(1), (1, 2, 2), warmup=0, repeats=1, train=False)
    big = measure(_Hungry(256), (1, 2, 2), warmup=0, repeats=1, train=False)
    assert big["infer_peak_mib"] - small["infer_peak_mib"] > 200


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="input_size"):
        measure(nn.Linear(2, 2), (2, 2))
    with pytest.raises(ValueError, match="batch_size"):
        measure(nn.Linear(2, 2), (3, 8, 8), batch_size=0)
    with pytest.raises(ValueError, match="repeats"):
        measure(nn.Linear(2, 2), (3, 8, 8), repeats=0)
    with torch.device("meta"):
        meta = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="meta device"):
        measure(meta, (3, 8, 8))
