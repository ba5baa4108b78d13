"""headswap.surgery: what a model becomes.

Load any timm backbone, probe what its features look like, and replace its classifier with a
head from one registry (gap, gmp, gapmp, gem, attn, token, spp, flatten, nin, original), written
as a spec with options (``gem:p=3:learn_p=0``), leaving the backbone's weights untouched.
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
from .errors import one_line, one_line_warnings
from .files import (
    atomic_write,
    atomic_write_bytes,
    check_writable,
    finite,
    last_line,
    read_json,
    write_error,
    write_json,
)
from .heads import (
    HEADS,
    HeadKind,
    NinHead,
    PoolHead,
    add_head_kind,
    as_hidden,
    build_head,
    check_head_args,
    register_head,
)
from .hub import check_weights_reachable
from .layout import FeatureInfo, probe_features
from .memory import free_bytes
from .options import Option, format_value, parse_options, parse_value
from .pooling import (
    AttentionPool,
    ClassTokenPool,
    FeaturePool,
    GeMPool,
    PyramidPool,
    feature_grid,
)
from .registry import head_names
from .report import swap_report, try_input_size
from .serialize import load, read_model_file, save, state_checksum
from .spec import HeadSpec, head_label, make_spec, parse_head, resolve_head, spec_help
from .swap import HeadSwapped, OriginalHead, RemovedModule, swap_head
from .weights import WeightsFile, checkpoint_settings, has_safetensors, read_weights

__all__ = [
    "HEADS", "RESERVED_TIMM_OPTIONS", "AttentionPool", "ClassTokenPool", "FeatureInfo",
    "FeaturePool", "GeMPool", "HeadKind", "HeadSpec", "HeadSwapped", "NinHead", "Option",
    "OriginalHead", "PoolHead", "PyramidPool", "RemovedModule", "WeightsFile", "add_head_kind",
    "as_hidden", "atomic_write", "atomic_write_bytes", "build_head", "check_head_args",
    "check_timm_options", "check_weights_reachable", "check_writable", "checkpoint_settings", "closest_model_names", "expand_model_names", "feature_grid", "finite",
    "format_value", "free_bytes", "head_label", "head_names", "load", "load_backbone", "make_spec", "one_line",
    "one_line_warnings", "parse_head", "parse_options", "parse_value", "probe_features",
    "has_safetensors", "last_line", "read_json", "read_model_file", "read_weights", "register_head",
    "resolve_head", "save", "spec_help", "state_checksum", "swap_head", "swap_report", "try_input_size",
    "write_error", "write_json",
]
