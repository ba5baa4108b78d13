"""headswap.analysis: what a model costs and how it learns.

Counting (params, MACs), measuring (latency, throughput, memory), data, training, studies and
tables. Submodules are imported on first use so that ``import analysis`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "count_params": "analysis.params",
    "count_flops": "analysis.flops",
    "FLOP_COUNTERS": "analysis.flops",
    "measure": "analysis.measure",
    "DATASETS": "analysis.data",
    "load_dataset": "analysis.data",
    "TrainConfig": "analysis.train",
    "train": "analysis.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
