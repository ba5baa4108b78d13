"""Every head x learning rate x weight decay x seed of one frozen backbone, trained in one pass.

Run one at a time, small heads on cached features spend their time being set up. :class:`Sweep`
assembles each (head, seed) once as its run alone would be (analysis.training.parts), stacks
its learning-rate x weight-decay members (analysis.training.stacked) and trains all stacks
together, each seed's batch gathered once per step. A member ends where its run alone ends
(float32 cache: logits within 1e-5 relative, tested); one that becomes NaN or inf is
``diverged``, :class:`Halving` marks hopeless ones ``pruned``; a member is written as a run
directory like ``train()``'s by analysis.training.sweep_runs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

import surgery

from ..data import iterate
from ..reporting import progress_bar
from . import checkpoints as ckpt
from .config import TrainConfig, load_run_data
from .distributed import DistInfo
from .model import build_backbone, make_optimizer, resolve_system, step_seed
from .parts import Feed, RunParts, assemble_run
from .stacked import StackedHeads
from .step import head_threads, lr_factor, peak_mem_mb
from .sweep_members import MEMBER_STATUS, Halving, SweepMember
from .sweep_state import SweepState

__all__ = ["MEMBER_STATUS", "Halving", "Sweep", "SweepMember"]


@dataclass
class _Stack:
    """The members of one (head, seed) on one feed, as one StackedHeads."""

    heads: StackedHeads
    members: list[SweepMember]
    feed: str
    running: list[float] = field(default_factory=list)  # the epoch's loss sums, per member
    seen: int = 0  # training images of the epoch so far
    last_lrs: list[float] = field(default_factory=list)


@dataclass
class _Feed:
    """What the stacks of one seed (and feature source) read: the run's cached feed."""

    feed: Feed
    sampler: Any
    schedule: Any
    eval_batch_size: int
    seed: int


class Sweep:
    """The frozen-backbone runs of ``base`` (model, data, regime, epochs, ...) for ``seeds``.

    Each seed's data split and backbone are built once; :meth:`train` trains members in
    passes (stacks whose weights, gradients, optimiser state and best copy would exceed
    ``mem_bytes`` wait for the next pass); ``run_dir`` is where an on-disk feature cache goes
    when ``base.feature_cache_dir`` is not set.
    """

    def __init__(self, base: TrainConfig, *, run_dir: str | Path, progress: bool = True,
                 mem_bytes: int | None = None, state_path: str | Path | None = None):
        if base.regime != "linear-probe":
            raise ValueError(f"a sweep trains heads on a frozen backbone (--regime linear-probe), "
                             f"not --regime {base.regime}")
        self.base, self.run_dir, self.progress = base, Path(run_dir), progress
        self.system = resolve_system(base)
        self.dist = DistInfo()
        self.mem_bytes = mem_bytes
        self.state_path = state_path
        self._data: dict[int, Any] = {}
        self._backbones: dict[int, torch.nn.Module] = {}
        self.costs: dict[tuple[str, int], dict[str, Any]] = {}

    @property
    def spill_dir(self) -> Path:
        """Where finished members' best head weights go when the sweep trains in passes."""
        return (Path(self.state_path).parent if self.state_path else self.run_dir) / "best_heads"

    def data(self, seed: int) -> Any:
        if seed not in self._data:
            self._data[seed] = load_run_data(replace(self.base, seed=seed))
        return self._data[seed]

    def backbone(self, seed: int) -> torch.nn.Module:
        """The seed's backbone before any swap, built as a run of that seed builds it."""
        if seed not in self._backbones:
            cfg = replace(self.base, seed=seed)
            data = self.data(seed)
            torch.manual_seed(seed)
            self._backbones[seed] = build_backbone(cfg, data, cfg.img_size or data.image_size[0])
        return self._backbones[seed]

    def assemble(self, cfg: TrainConfig) -> RunParts:
        """The run of ``cfg`` (one of this sweep's seeds) assembled as train() assembles it."""
        return assemble_run(cfg, None, self.data(cfg.seed), self.dist, self.system, 0,
                            self.run_dir, backbone=self.backbone(cfg.seed))

    # -- training ------------------------------------------------------------------------------
    def train(self, members: Sequence[SweepMember], halving: Halving | None = None) -> None:
        """Train ``members`` (filled in place: history, best, status); in passes when their
        stacks would not fit ``mem_bytes`` together."""
        groups: dict[tuple[str, int], list[SweepMember]] = {}
        for m in members:
            groups.setdefault((m.head, m.seed), []).append(m)
        context = json.dumps({k: v for k, v in asdict(self.base).items()
                              if k not in ("name", "out", "progress", "overwrite")},
                             sort_keys=True, default=str)
        state = SweepState(self.state_path, members, self.base.ckpt_minutes, context)
        saved = state.load()
        for index, batch in enumerate(self._passes(list(groups.values()))):
            if saved is not None and index < saved["pass"]:
                continue  # finished before the interruption: its members were read back
            stacks, feeds = self._build(batch)
            first = 0
            if saved is not None and index == saved["pass"]:
                for stack, kept in zip(stacks, saved["stacks"], strict=True):
                    _drop(stack, state.restore_stack(stack, kept))
                    state.load_weights(stack, kept)
                first = saved["epoch"]

            def save(epoch: int, stacks: list[_Stack] = stacks, index: int = index) -> None:
                if state.due():
                    state.save(index, epoch, stacks)

            params = sum(t.numel() for st in stacks for t in st.heads.params.values())
            with head_threads(self.system["device"], params):
                self._fit(stacks, feeds, halving or Halving(), first, save)
            if self.mem_bytes is not None:  # passes: the finished ones' best copies to disk
                for m in (m for group in batch for m in group):
                    m.spill(self.spill_dir)
            state.save(index + 1, 0, [])

    def _passes(self, groups: list[list[SweepMember]]) -> list[list[list[SweepMember]]]:
        """Groups into passes that fit the memory budget (five copies of each member's head:
        weights, gradients, two optimiser moments, the best epoch's); a group larger than the
        budget is cut into stacks of as many members as fit (halving then compares the
        settings trained in the same pass)."""
        if self.mem_bytes is None:
            return [groups]
        passes: list[list[list[SweepMember]]] = [[]]
        used = 0
        for group in groups:
            each = 5 * 4 * _head_numel(replace(self.base, head=group[0].head), self)
            per_stack = max(1, self.mem_bytes // max(1, each))
            for start in range(0, len(group), per_stack):
                chunk = group[start:start + per_stack]
                need = each * len(chunk)
                if passes[-1] and used + need > self.mem_bytes:
                    passes.append([])
                    used = 0
                passes[-1].append(chunk)
                used += need
        return passes

    def _build(self, groups: list[list[SweepMember]]) -> tuple[list[_Stack], dict[str, _Feed]]:
        stacks: list[_Stack] = []
        feeds: dict[str, _Feed] = {}
        for group in groups:
            first = group[0]
            parts = self.assemble(first.config(self.base))
            if not parts.frozen_feed.cached:
                raise ValueError(f"a sweep trains on cached features, and this run cannot use "
                                 f"them ({parts.feature_cache.get('why_not')})")
            key = f"{first.seed}:{parts.feature_cache.get('path') or ''}:" \
                  f"{'original' if first.head == 'original' else 'features'}"
            if key not in feeds:
                feeds[key] = _Feed(parts.frozen_feed, parts.sampler, parts.schedule,
                                   parts.eval_batch_size, first.seed)
            self.costs[(first.head, first.seed)] = dict(parts.costs)
            heads = StackedHeads(
                [parts.model.head] * len(group), [m.weight_decay for m in group],
                partial(make_optimizer, cfg=self.base), step_seed(first.seed),
                label_smoothing=self.base.label_smoothing, clip_grad=self.base.clip_grad,
                amp_dtype=_sweep_amp(self.system["amp_dtype"]), device=self.system["device"])
            stacks.append(_Stack(heads, list(group), key))
            del parts
        lengths = {len(f.sampler) for f in feeds.values()}
        if len(lengths) > 1:
            raise ValueError(f"the seeds' training sets give different steps per epoch "
                             f"({sorted(lengths)}); a sweep needs the same training-set size "
                             "for every seed")
        return stacks, feeds

    def _fit(self, stacks: list[_Stack], feeds: dict[str, _Feed], halving: Halving,
             first: int = 0, save: Any = None) -> None:
        """Epochs ``first`` ... of the stacks: steps, metrics, halving; ``save(epochs done)``
        after each epoch but the last (it writes the progress when due)."""
        epochs = self.base.epochs
        steps = len(next(iter(feeds.values())).sampler)
        bar = (progress_bar(epochs * steps, "sweep", "step", initial=first * steps,
                            per_update=False) if self.progress else None)
        for epoch in range(first, epochs):
            alive = [s for s in stacks if len(s.heads)]
            if not alive:
                break
            self._epoch_steps(alive, feeds, epoch, bar)
            _epoch_rows(alive, feeds, epoch, peak_mem_mb(self.system["device"]))
            if epoch + 1 in halving.rungs:
                _prune(alive, halving, epoch + 1)
            if save is not None and epoch + 1 < epochs:
                save(epoch + 1)
        if bar is not None:
            bar.close()

    def _epoch_steps(self, stacks: list[_Stack], feeds: dict[str, _Feed], epoch: int,
                     bar: Any) -> None:
        cfg = self.base
        iters = {k: f.sampler.batches(epoch) for k, f in feeds.items()}
        augs = {k: ckpt.epoch_aug_rng(f.seed, epoch, 0) for k, f in feeds.items()}
        for s in stacks:
            s.running, s.seen = [0.0] * len(s.heads), 0
        steps = len(next(iter(feeds.values())).sampler)
        for step in range(steps):
            batches = {}
            for key, f in feeds.items():
                idx = next(iters[key])
                idx_d = idx.to(f.feed.train_x.device)
                x = f.feed.transform(f.feed.train_x[idx_d], train=True, generator=augs[key])
                batches[key] = (x, f.feed.train_y[idx_d].to(x.device), len(idx))
            for s in stacks:
                if not len(s.heads):
                    continue
                sched = feeds[s.feed].schedule
                gstep = epoch * steps + step
                factors = [lr_factor(gstep, sched.total_steps, sched.warmup_steps,
                                     cfg.min_lr / m.lr) for m in s.members]
                lrs = [m.lr * 1.0 * f for m, f in zip(s.members, factors, strict=True)]
                x, y, n = batches[s.feed]
                t = time.perf_counter()
                losses = s.heads.train_step(x, y, lrs).tolist()
                s.seen += n
                share = (time.perf_counter() - t) / len(s.members)
                s.last_lrs = [m.lr * f for m, f in zip(s.members, factors, strict=True)]
                bad = []
                for i, (m, v) in enumerate(zip(s.members, losses, strict=True)):
                    s.running[i] += v * n
                    m.totals["train_time_s"] += share
                    m.totals["time_s"] += share
                    m.totals["train_images"] += n
                    if not math.isfinite(s.running[i]):
                        bad.append(i)
                        m.status = "diverged"
                        m.stopped = (f"training loss became NaN or inf at epoch {epoch + 1}, "
                                     f"step {step + 1}")
                if bad:
                    _drop(s, bad)
            if bar is not None:
                bar.update(1)

def _epoch_rows(stacks: list[_Stack], feeds: dict[str, _Feed], epoch: int, peak: float) -> None:
    """Evaluate every member on its training sample and validation split; its metrics row,
    best epoch and weights; members whose weights are not finite stop, diverged."""
    for s in stacks:
        if not len(s.heads):
            continue
        f = feeds[s.feed].feed
        t = time.perf_counter()
        train = _evaluate_stack(s.heads, *f.train_eval, f.transform,
                                feeds[s.feed].eval_batch_size)
        val = _evaluate_stack(s.heads, *f.val, f.transform, feeds[s.feed].eval_batch_size)
        share = (time.perf_counter() - t) / len(s.members)
        finite = s.heads.finite().tolist()
        bad = []
        for i, m in enumerate(s.members):
            m.totals["time_s"] += share
            row = {"epoch": epoch + 1, "lr": s.last_lrs[i], "train_loss": train[i][0],
                   "train_acc": train[i][1], "val_loss": val[i][0], "val_acc": val[i][1],
                   "gap_acc": train[i][1] - val[i][1], "gap_loss": val[i][0] - train[i][0],
                   "train_loss_running": s.running[i] / max(1, s.seen),
                   "epoch_time_s": m.totals["time_s"] - sum(r["epoch_time_s"]
                                                            for r in m.history),
                   "img_per_s": m.totals["train_images"] / max(m.totals["train_time_s"],
                                                               1e-9),
                   "peak_mem_mb": peak}
            m.history.append(row)
            if not finite[i]:
                m.status, m.stopped = "diverged", (f"weights became NaN or inf after "
                                                   f"epoch {epoch + 1}")
                bad.append(i)
            elif row["val_acc"] > m.best["val_acc"]:
                m.best = {"val_acc": row["val_acc"], "epoch": epoch + 1}
                m.best_state = s.heads.state_dict(i)
        if bad:
            _drop(s, bad)


def _prune(stacks: list[_Stack], halving: Halving, epoch: int) -> None:
    training = [m for s in stacks for m in s.members]
    keep = halving.survivors(training)
    for s in stacks:
        out = [i for i, m in enumerate(s.members) if m.setting not in keep]
        for i in out:
            s.members[i].status = "pruned"
            s.members[i].stopped = f"pruned after epoch {epoch} (successive halving)"
        if out:
            _drop(s, out)


def _drop(stack: _Stack, out: Sequence[int]) -> None:
    """Stop the members at positions ``out`` of the stack (their records stay)."""
    n, gone = len(stack.members), set(out)
    keep = [i for i in range(n) if i not in gone]
    stack.heads.keep(keep)
    stack.members = [stack.members[i] for i in keep]
    if len(stack.running) == n:
        stack.running = [stack.running[i] for i in keep]
    if len(stack.last_lrs) == n:
        stack.last_lrs = [stack.last_lrs[i] for i in keep]


@torch.inference_mode()
def _evaluate_stack(heads: StackedHeads, x: Any, y: torch.Tensor, transform: Any,
                    batch_size: int) -> list[tuple[float, float]]:
    """Mean cross-entropy and accuracy of every member on ``(x, y)``, as analysis.training
    .evaluate gives them for each run alone."""
    if len(y) == 0:
        return [(float("nan"), float("nan"))] * len(heads)
    sums = torch.zeros(len(heads), 2, dtype=torch.float64)
    for sl in iterate(len(y), batch_size):
        yb = y[sl].to(transform.device)
        logits = heads.logits(transform(x[sl], train=False))  # (members, b, classes)
        members, b, k = logits.shape
        ce = torch.nn.functional.cross_entropy(logits.reshape(members * b, k), yb.repeat(members),
                                               reduction="none").view(members, b).sum(1)
        sums[:, 0] += ce.double().cpu()
        sums[:, 1] += (logits.argmax(2) == yb).sum(1).double().cpu()
    return [(loss / len(y), acc / len(y)) for loss, acc in sums.tolist()]


def _sweep_amp(amp: torch.dtype | None) -> torch.dtype | None:
    """bfloat16 autocast as a run alone uses it; float16 would need a gradient scaler per
    member, so a sweep trains in float32 instead."""
    return amp if amp == torch.bfloat16 else None


_NUMEL: dict[str, int] = {}


def _head_numel(cfg: TrainConfig, sweep: Sweep) -> int:
    """Parameters of ``cfg``'s head, counted on the meta device (no weights, no compute)."""
    key = f"{cfg.model}|{cfg.head}|{cfg.timm_options}|{cfg.img_size}"
    if key not in _NUMEL:
        data = sweep.data(cfg.seed)
        img_size = cfg.img_size or data.image_size[0]
        with torch.device("meta"):
            backbone = build_backbone(replace(cfg, pretrained=False, checkpoint=None), data,
                                      img_size)
            model = surgery.swap_head(backbone, head=cfg.head_spec(),
                                      num_classes=data.num_classes, input_size=img_size)
        _NUMEL[key] = sum(p.numel() for p in model.head.parameters())
    return _NUMEL[key]
