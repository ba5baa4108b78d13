"""What a model costs: parameters, MACs (fvcore plus our extra rules, or torch's formulas on the
meta device), and measured latency, throughput and peak memory.
"""

from .mac_rules import FVCORE_EXTRA_HANDLES, TORCH_EXTRA_FORMULAS
from .macs import FLOP_COUNTERS, MacCounterMode, count_flops, op_category
from .params import count_params
from .rows import MEASURE_KEYS, cost_row
from .timing import measure, reset_rss_peak, rss_peak_bytes

__all__ = ["FLOP_COUNTERS", "FVCORE_EXTRA_HANDLES", "MEASURE_KEYS", "MacCounterMode",
           "TORCH_EXTRA_FORMULAS", "cost_row", "count_flops", "count_params", "measure",
           "op_category", "reset_rss_peak", "rss_peak_bytes"]
