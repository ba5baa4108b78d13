"""One process of the 2-process cached linear-probe test (test_distributed.py), started by torchrun.

    python -m torch.distributed.run --nproc_per_node 2 ddp_cached_worker.py OUT RESULTS MEM_GB

Trains a linear probe on cached features into OUT/r (the cache in memory, or on disk when
MEM_GB is tiny) and writes RESULTS/rank{R}.pt: the head's weights, the summary and how many
images this rank extracted.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from analysis.features import Extractor  # noqa: E402
from analysis.training import TrainConfig, train  # noqa: E402


def config(out: str, mem_gb: float) -> TrainConfig:
    """test_resnet on 4 classes: 65 train (uneven shards), 31 val, 30 test images at 32 px."""
    return TrainConfig(model="test_resnet", head="gap", dataset="synthetic", val_size=31,
                       data_options=dict(num_classes=4, n_train=96, n_test=30, image_size=32),
                       epochs=2, batch_size=8, lr=1e-2, progress=False, out=out, name="r",
                       regime="linear-probe", feature_cache_mem_gb=mem_gb, ckpt_minutes=0)


def main(out: str, results: str, mem_gb: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    seen = {"images": 0}
    batches = Extractor.batches

    def counting(self, images, ids, progress=None):
        seen["images"] += len(images)
        return batches(self, images, ids, progress)

    Extractor.batches = counting  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(config(out, float(mem_gb)))
    Path(results).mkdir(parents=True, exist_ok=True)
    torch.save({"rank": rank, "summary": summary, "extracted": seen["images"]},
               Path(results) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:4])
