"""Checkpoints of a training run and the RNG / per-rank state that makes resume exact.

``best.pt`` and ``last.pt`` are ``surgery.save`` files; ``last.pt`` also holds the optimiser,
scaler, RNG states, the measurements so far and the position inside the epoch, and under DDP
every rank's RNG, augmentation generator and running sums. A linear probe on cached features
keeps the head alone in ``last.pt`` and, until the run ends, in ``best.pt``
(:func:`save_head_checkpoint`, format ``headswap-head``); the backbone is rebuilt from the
config and its weights digest checked on resume, and ``best.pt`` ends as a whole model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import surgery
from surgery import HeadSwapped

from . import distributed
from .distributed import DistInfo

__all__ = ["HEAD_FORMAT", "epoch_aug_rng", "fresh_running", "gather_rank_states", "is_head_only",
           "last_extra", "load_weights", "read_checkpoint", "restore_rank_state",
           "restore_training", "resumed_progress", "rng_state", "save_checkpoint",
           "save_head_checkpoint", "seed_rank", "set_rng_state"]

HEAD_FORMAT = "headswap-head"

_RANK_STRIDE = 1_000_003  # seed offset between ranks


def save_checkpoint(path: str | Path, model: HeadSwapped, extra: dict[str, Any]) -> None:
    """``surgery.save`` (atomic) with the training state in ``extra``: loadable by surgery.load."""
    surgery.save(model, path, extra=extra)


def save_head_checkpoint(path: str | Path, model: HeadSwapped, extra: dict[str, Any]) -> None:
    """The head's weights, the recipe and ``extra``, written atomically (not the backbone)."""
    state = {k: v.detach().cpu() for k, v in model.head.state_dict().items()}
    payload = {"format": HEAD_FORMAT, "version": 1, "recipe": model.recipe,
               "head_state_dict": state, "checksum": surgery.state_checksum(state),
               "extra": extra}
    surgery.atomic_write(path, lambda f: torch.save(payload, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``{"recipe", "state_dict", "extra"}`` of a checkpoint written by :func:`save_checkpoint`,
    or ``{"recipe", "head_state_dict", "extra"}`` of one by :func:`save_head_checkpoint`."""
    try:
        return surgery.read_model_file(path)
    except ValueError:
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            payload = None
        if isinstance(payload, dict) and payload.get("format") == HEAD_FORMAT:
            if surgery.state_checksum(payload["head_state_dict"]) != payload.get("checksum"):
                raise ValueError(f"{str(path)!r} is damaged: its head weights do not match the "
                                 "checksum stored when it was saved; start the run over with "
                                 "--overwrite") from None
            return payload
        raise


def is_head_only(payload: dict[str, Any]) -> bool:
    """Whether a checkpoint holds the head alone (a cached linear probe's)."""
    return "head_state_dict" in payload


def load_weights(model: HeadSwapped, payload: dict[str, Any]) -> None:
    """Load a checkpoint's weights: the whole model, or the head of a head-only one."""
    if is_head_only(payload):
        model.head.load_state_dict(payload["head_state_dict"])
    else:
        model.load_state_dict(payload["state_dict"])


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and every CUDA device): dropout and the like draw on them."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_rank(seed: int, rank: int, epoch: int = 0) -> None:
    """Seed the global RNG of a rank > 0 so its dropout masks differ from rank 0's."""
    torch.manual_seed(seed + _RANK_STRIDE * rank + epoch)


def epoch_aug_rng(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation generator of one epoch on one rank: a function of (seed, epoch, rank)."""
    return torch.Generator().manual_seed(seed * 7919 + epoch + 17 + _RANK_STRIDE * rank)


def fresh_running() -> dict[str, Any]:
    """The running sums of an epoch before its first step (seconds, images, summed loss)."""
    return {"loss_sum": 0.0, "seen": 0, "train_time_s": 0.0, "epoch_time_s": 0.0}


def resumed_progress(ex: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                  dict[str, Any]]:
    """``(history, best, totals)``: what was measured before an interruption (or a fresh start)."""
    history: list[dict[str, Any]] = list(ex.get("history", []))
    best = dict(ex.get("best", {"val_acc": -1.0, "epoch": 0}))
    totals = dict(ex.get("totals", {"time_s": 0.0, "train_time_s": 0.0, "train_images": 0}))
    return history, best, totals


def restore_training(ex: dict[str, Any], optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None) -> None:
    """Load the optimiser (and AMP scaler) state of a ``last.pt`` extra."""
    optimizer.load_state_dict(ex["optimizer"])
    if scaler is not None and ex.get("scaler"):
        scaler.load_state_dict(ex["scaler"])


def restore_rank_state(ex: dict[str, Any], dist: DistInfo, *, seed: int, epoch0: int,
                       step0: int, path: Path) -> None:
    """This rank's RNG (and, mid-epoch, augmentation and running sums) from ``last.pt``.

    Sets ``ex["aug_rng"]`` and ``ex["running"]`` to this rank's. With another number of processes
    than wrote the checkpoint, only an epoch boundary resumes: rank 0 takes the saved RNG, the
    others a fresh per-rank seed.
    """
    ranks = ex.get("ranks") or [{"rng": ex["rng"], "aug_rng": ex.get("aug_rng"),
                                 "running": ex.get("running")}]
    if len(ranks) != dist.world_size:
        if step0:
            raise ValueError(
                f"{path} was written mid-epoch by {len(ranks)} "
                f"process(es); resume it with the same number (torchrun --nproc_per_node "
                f"{len(ranks)}), or from an epoch boundary with any number")
        set_rng_state(ranks[0]["rng"])
        if dist.rank > 0:
            seed_rank(seed, dist.rank, epoch0)
        return
    mine = ranks[dist.rank]
    set_rng_state(mine["rng"])
    ex["aug_rng"], ex["running"] = mine["aug_rng"], mine["running"]


def gather_rank_states(aug: torch.Generator, running: dict[str, Any], dist: DistInfo
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(mine, ranks)``: this rank's RNG, augmentation and running state, and every rank's."""
    mine = {"rng": rng_state(), "aug_rng": aug.get_state(), "running": running}
    return mine, distributed.gather_objects(mine, dist)


def last_extra(*, epoch: int, step: int, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler | None, mine: dict[str, Any],
               ranks: list[dict[str, Any]], history: list[dict[str, Any]],
               best: dict[str, Any], totals: dict[str, Any], world_size: int) -> dict[str, Any]:
    """The training state ``last.pt`` keeps: ``epoch`` epochs and ``step`` steps of the next done."""
    return {
        "kind": "last", "epoch": epoch, "step": step,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        **mine, "history": history, "best": best, "totals": totals,
        "world_size": world_size,
        "ranks": ranks if world_size > 1 else None}
