"""One process of the 2-process DDP test (tests/analysis/test_distributed.py), started by torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/analysis/training/ddp_worker.py OUT RESULTS

Trains the tiny run into OUT/r and writes RESULTS/rank{R}.pt: this rank's weights and buffers
at the end of the last epoch, the summary it returned and every write it made under OUT (an
audit hook sees each open-for-writing, rename, removal and mkdir).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from analysis.training import TrainConfig, train  # noqa: E402

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def config(out: str) -> TrainConfig:
    """test_resnet on 4 classes: 65 train (uneven shards), 31 val, 30 test images at 16 px."""
    return TrainConfig(model="test_resnet", head="gap", hidden=(16,), dropout=0.5,
                       dataset="synthetic", val_size=31, train_eval_size=33,
                       data_options=dict(num_classes=4, n_train=96, n_test=30, image_size=16),
                       epochs=2, batch_size=8, lr=1e-2, progress=False, out=out, name="r",
                       ckpt_steps=2, ckpt_minutes=0)


def main(out: str, results: str) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    writes: list[str] = []
    watched = str(Path(out).resolve())

    def audit(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            path, mode, flags = os.fsdecode(args[0]), args[1], args[2]
            writing = (any(c in mode for c in "wax+") if isinstance(mode, str)
                       else bool(flags & WRITE_FLAGS))
        elif event in ("os.rename", "os.replace", "os.remove", "os.mkdir", "os.rmdir"):
            path, writing = os.fsdecode(args[0]), True
        else:
            return
        if writing and os.path.abspath(path).startswith(watched):
            writes.append(f"{event} {path}")

    sys.addaudithook(audit)
    last: dict[str, torch.Tensor] = {}
    held: dict[str, torch.nn.Module] = {}
    cfg = config(out)

    def hold(ctx: dict) -> None:
        held["model"] = ctx["model"]

    def keep_last(row: dict) -> None:  # after the last epoch's evaluation, before best.pt is read
        if row["epoch"] == cfg.epochs:
            last.update({k: v.detach().clone() for k, v in held["model"].state_dict().items()})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = train(cfg, on_step=hold, on_epoch=keep_last)
    Path(results).mkdir(parents=True, exist_ok=True)
    torch.save({"rank": rank, "world_size": int(os.environ["WORLD_SIZE"]), "weights": last,
                "summary": summary, "writes": writes}, Path(results) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
