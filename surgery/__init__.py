"""headswap.surgery: what a model becomes.

Load any timm backbone, probe what its features look like, and replace its classifier with a
head from one registry (gap, gmp, gapmp, flatten, nin, original), leaving its weights untouched.
The small shared pieces every layer above uses live here too, at the bottom of the dependency
order: the one-line text of an error, atomic file writes, ``KEY=VALUE`` options.
"""

from .backbone import (
    RESERVED_TIMM_OPTIONS,
    check_timm_options,
    closest_model_names,
    expand_model_names,
    load_backbone,
)
from .errors import one_line
from .files import (
    atomic_write,
    atomic_write_bytes,
    check_writable,
    finite,
    read_json,
    write_error,
    write_json,
)
from .heads import (
    HEADS,
    FeaturePool,
    HeadKind,
    NinHead,
    PoolHead,
    as_hidden,
    build_head,
    check_head_args,
    head_label,
    register_head,
)
from .layout import FeatureInfo, probe_features
from .options import parse_options, parse_value
from .report import swap_report
from .serialize import load, read_model_file, save
from .swap import HeadSwapped, OriginalHead, RemovedModule, swap_head

__all__ = [
    "HEADS", "RESERVED_TIMM_OPTIONS", "FeatureInfo", "FeaturePool", "HeadKind", "HeadSwapped",
    "NinHead", "OriginalHead", "PoolHead", "RemovedModule", "as_hidden", "atomic_write",
    "atomic_write_bytes", "build_head", "check_head_args", "check_timm_options", "check_writable",
    "closest_model_names", "head_label", "expand_model_names", "finite", "load", "load_backbone",
    "one_line", "parse_options", "parse_value", "probe_features", "read_json", "read_model_file",
    "register_head", "save", "swap_head", "swap_report", "write_error", "write_json",
]
