"""DistributedDataParallel for the training harness: the process group, the device, the wrapper.

``torchrun --nproc_per_node N tools/finetune.py ...`` starts N copies of the tool with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR`` / ``MASTER_PORT`` in the environment.
:func:`setup` turns that into a process group (``nccl`` on CUDA, ``gloo`` on CPU) and a
:class:`DistInfo`; :func:`wrap` puts the model in DDP. Without ``WORLD_SIZE``
> 1 everything here is a no-op and the harness runs as one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

__all__ = ["DistInfo", "broadcast_buffers", "convert_sync_bn", "gather_objects", "launched", "setup", "shutdown", "wrap"]


@dataclass
class DistInfo:
    """Who this process is in a distributed run. The default is a single process.

    ``all_reduce`` sums a tensor across ranks in place (``torch.distributed.all_reduce`` under
    DDP) and ``barrier`` waits for every rank; only rank 0 writes files and shows progress.
    setup() builds one from torchrun's environment.
    """

    rank: int = 0
    world_size: int = 1
    all_reduce: Callable[[torch.Tensor], Any] | None = None
    local_rank: int = 0
    barrier: Callable[[], Any] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Barrier across ranks (nothing for a single process)."""
        if self.barrier is not None and self.world_size > 1:
            self.barrier()

    def sum(self, value: float) -> float:
        if self.all_reduce is None or self.world_size == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        self.all_reduce(t)
        return float(t.item())


def launched() -> bool:
    """True when started by torchrun (or another launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group described by torchrun's environment; return who we are and our device.

    On CUDA each process takes ``cuda:LOCAL_RANK`` (unless a device index was given); the
    backend is ``nccl`` there and ``gloo`` on CPU. Outside torchrun: ``(DistInfo(), device)``.
    """
    if not launched():
        return DistInfo(), device
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError) as err:
        raise ValueError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but RANK/LOCAL_RANK are "
                         f"missing or not integers ({err}); start the run with torchrun") from None
    if device.type == "cuda" and device.index is None:
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA "
                             "devices; use --nproc_per_node <= the number of GPUs")
        device = torch.device("cuda", local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        tdist.init_process_group(_backend(device), rank=rank, world_size=world, **kwargs)
    return DistInfo(rank=rank, world_size=world, all_reduce=_all_reduce_on(device),
                    local_rank=local, barrier=tdist.barrier), device


def _all_reduce_on(device: torch.device) -> Callable[[torch.Tensor], None]:
    """Sum in place; CPU tensors go through ``device`` when the backend (nccl) needs it."""

    def all_reduce(t: torch.Tensor) -> None:
        if t.device == device or device.type == "cpu":
            tdist.all_reduce(t)
            return
        moved = t.to(device)
        tdist.all_reduce(moved)
        t.copy_(moved)

    return all_reduce


def gather_objects(obj: Any, dist: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` for a single process."""
    if dist.world_size == 1 or not tdist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.world_size
    tdist.all_gather_object(out, obj)
    return out


def broadcast_buffers(model: nn.Module, dist: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP does this at the start of each forward, so after the last step every rank still holds
    the statistics of its own last batch; evaluating (or saving) needs the same ones everywhere.
    """
    if dist.world_size == 1 or not tdist.is_initialized():
        return
    for b in model.buffers():
        tdist.broadcast(b, src=0)


def wrap(model: nn.Module, dist: DistInfo, device: torch.device, *,
         find_unused: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel (``model`` itself for one process).

    Only parameters that require grad when this is called are synchronised, so a frozen
    backbone (linear probe) costs nothing; a regime that unfreezes later (two-stage) must wrap
    with everything trainable and ``find_unused=True``. SyncBatchNorm is :func:`convert_sync_bn`'s
    job, done before the optimiser is built.
    """
    if dist.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids, find_unused_parameters=find_unused)


def convert_sync_bn(model: nn.Module) -> int:
    """Replace every BatchNorm child of ``model`` by SyncBatchNorm; return how many were replaced.

    Uses timm's converter, which keeps the activation of BatchNormAct2d (torch's would drop it).
    """
    from timm.layers import convert_sync_batchnorm

    before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    for name, child in list(model.named_children()):
        setattr(model, name, convert_sync_batchnorm(child))
    after = sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules())
    return min(before, after)


def shutdown() -> None:
    """Leave the process group (if one was joined)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()
