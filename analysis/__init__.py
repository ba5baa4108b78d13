"""headswap.analysis: what a model costs and how it learns.

Counting (params, MACs), measuring (latency, throughput, memory), data, training, studies and
tables. The entry points are imported here, eagerly: ``analysis.train`` and ``analysis.measure``
name both a module and its function, and binding the functions last keeps
``from analysis import train, measure`` the functions whatever was imported before.
"""

from __future__ import annotations

from .data import DATASETS, load_dataset
from .flops import FLOP_COUNTERS, count_flops
from .measure import measure
from .params import count_params
from .train import TrainConfig, train

__all__ = ["DATASETS", "FLOP_COUNTERS", "TrainConfig", "count_flops", "count_params",
           "load_dataset", "measure", "train"]
