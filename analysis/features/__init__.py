"""Feature caches: a frozen backbone's features, extracted once and shared by every head and seed.

When the backbone does not train (a linear probe, or the head-only epochs of two-stage), its
features of an image are the same for every head, seed and epoch. This package extracts them
once (extract: eval mode, inference mode, batches, per-rank shards under torchrun), names them by
everything they depend on (keys), and keeps them in memory or in one memory-mapped file written
atomically (store), found again or built once under a lock (cache). analysis.training trains a
head on them (analysis.training.cached).
"""

from .cache import CacheRequest, Ranks, Storage, clear_memory, open_cache, remove_caches
from .extract import FLOAT16_MAX, Extractor, shard_block
from .keys import FORMAT_VERSION, CacheKey, image_ids, weights_digest
from .store import (
           DTYPES,
           CacheFileError,
           FeatureRows,
           FeatureTable,
           read_header,
           read_table,
           write_table,
)

__all__ = ["DTYPES", "FLOAT16_MAX", "FORMAT_VERSION", "CacheFileError", "CacheKey", "CacheRequest",
           "Extractor", "FeatureRows", "FeatureTable", "Ranks", "Storage", "clear_memory",
           "image_ids", "open_cache", "read_header", "read_table", "remove_caches", "shard_block",
           "weights_digest", "write_table"]
