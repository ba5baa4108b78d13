"""headswap.analysis: what a model costs and how it learns.

One subpackage per job: ``costs`` (parameters, MACs, latency and memory), ``data`` (data-set
registry, splits, batches), ``features`` (feature caches of frozen backbones), ``training`` (the
fine-tuning harness), ``studies`` (head comparison studies, and which head to pick),
``reporting`` (tables and plots), ``saliency`` (where a head looks), ``runtime`` (process
pools, locks, budgets, signals, the Slurm glue: how things run in parallel), and ``machine``
(the device and the machine a figure was measured on). The entry points are here.
"""

from __future__ import annotations

from .costs import FLOP_COUNTERS, count_flops, count_params, measure
from .data import DATASETS, load_dataset
from .training import TrainConfig, train

__all__ = ["DATASETS", "FLOP_COUNTERS", "TrainConfig", "count_flops", "count_params",
           "load_dataset", "measure", "train"]
