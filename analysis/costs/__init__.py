"""What a model costs: parameters, MACs (fvcore plus our extra rules, or torch's formulas on the
meta device), and measured latency, throughput and peak memory.
"""

from .mac_rules import FVCORE_EXTRA_HANDLES, TORCH_EXTRA_FORMULAS
from .macs import FLOP_COUNTERS, MacCounterMode, count_flops, op_category
from .params import count_params
from .timing import measure

__all__ = ["FLOP_COUNTERS", "FVCORE_EXTRA_HANDLES", "MacCounterMode", "TORCH_EXTRA_FORMULAS",
           "count_flops", "count_params", "measure", "op_category"]
