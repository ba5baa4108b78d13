"""analysis.costs.measure: latency against a known sleep, memory against /proc and a known
allocation, the model left as it was."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis import measure


def _small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                         nn.LazyLinear(4))


class _Sleeper(nn.Module):
    """Sleeps ``ms_per_image`` per image in every forward: a latency known in advance."""

    def __init__(self, ms_per_image: float):
        super().__init__()
        self.ms_per_image = ms_per_image
        self.lin = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.ms_per_image * x.shape[0] / 1e3)
        return self.lin(x.mean((2, 3)))


def test_latency_and_throughput_against_a_known_sleep() -> None:
    """Latency is ms per batch (at least the sleep), throughput images per second (at most
    1000 / ms per image, whatever the batch size)."""
    ms = 10.0
    for batch in (2, 4):
        result = measure(_Sleeper(ms), (3, 8, 8), batch_size=batch, warmup=1, repeats=3)
        for phase in ("infer", "train"):  # the training step runs the same forward
            latency, throughput = result[f"{phase}_latency_ms"], result[f"{phase}_throughput"]
            assert batch * ms <= latency < 2 * batch * ms + 20  # slack for a busy machine
            assert 1e3 / (2 * ms + 20 / batch) < throughput <= 1e3 / ms
            assert throughput * latency / 1e3 == pytest.approx(batch)


def _rss_mib() -> float:
    """This process's resident set size now (VmRSS), MiB."""
    kib = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    assert kib is not None
    return int(kib.group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_cpu_peak_is_the_resident_memory_in_mib() -> None:
    """A tiny model allocates next to nothing: the peak of each phase lies between the resident
    memory before and after (read independently from /proc), in MiB."""
    model = _small()
    model(torch.zeros(1, 3, 16, 16))
    before = _rss_mib()
    result = measure(model, (3, 16, 16), batch_size=2, warmup=1, repeats=2)
    after = _rss_mib()
    for phase in ("infer", "train"):
        assert before - 32 <= result[f"{phase}_peak_mib"] <= max(before, after) + 32


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
