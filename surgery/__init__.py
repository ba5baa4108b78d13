"""headswap.surgery: what a model becomes.

Load any timm backbone, probe what its features look like, and replace its classifier with a
head from one registry (gap, gmp, gapmp, flatten, nin, original), leaving its weights untouched.
"""

from .backbone import closest_model_names, load_backbone
from .heads import HEADS, FeaturePool, HeadKind, NinHead, PoolHead, build_head, register_head
from .layout import FeatureInfo, probe_features
from .serialize import load, save
from .swap import HeadSwapped, OriginalHead, RemovedModule, swap_head

__all__ = [
    "HEADS", "FeatureInfo", "FeaturePool", "HeadKind", "HeadSwapped", "NinHead", "OriginalHead",
    "PoolHead", "RemovedModule", "build_head", "closest_model_names", "load", "load_backbone",
    "probe_features", "register_head", "save", "swap_head",
]
