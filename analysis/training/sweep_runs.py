"""A sweep member written as a run directory, like one ``train()`` writes.

The chosen member of each head becomes a run that ``surgery.load``, the study tables and
``--resume`` logic read as any other: config, metrics, curves, a whole-model ``best.pt`` and,
last, ``summary.json`` with the test metrics of its best epoch.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from surgery import write_json

from ..reporting import plot_curves
from ..reporting.tensorboard import EpochWriter
from . import checkpoints as ckpt
from .parts import run_config_record
from .rundir import run_summary, write_metrics
from .step import evaluate
from .sweep import Sweep
from .sweep_members import SweepMember

__all__ = ["write_member_run"]


def write_member_run(sweep: Sweep, member: SweepMember, run_dir: str | Path) -> dict[str, Any]:
    """``member`` as a finished run directory: ``config.json``, ``metrics.csv/.jsonl``,
    ``best.pt`` (the whole model at its best epoch), ``curves.png`` and, last,
    ``summary.json`` with the test metrics of that epoch. Returns the summary."""
    best_state = member.head_state()
    if best_state is None:
        raise ValueError(f"{member.label} at lr {member.lr:g} (seed {member.seed}) has no "
                         f"finished epoch to write ({member.stopped or member.status})")
    run_dir = Path(run_dir)
    cfg = replace(member.config(sweep.base), out=str(run_dir.parent), name=run_dir.name)
    parts = sweep.assemble(cfg)
    parts.model.head.load_state_dict(best_state)
    feed = parts.frozen_feed
    test = evaluate(feed.evaluated, *feed.test, feed.transform, parts.eval_batch_size,
                    sweep.system["amp_dtype"]) if feed.test else (float("nan"),) * 2
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", dict(run_config_record(cfg, parts, sweep.system,
                                                               sweep.dist),
                                             sweep={"status": member.status}))
    write_metrics(run_dir, member.history)
    if cfg.tensorboard:
        events = EpochWriter(run_dir)
        for epoch_row in member.history:
            events.add(epoch_row)
        events.close()
    row = member.history[member.best["epoch"] - 1]
    ckpt.save_checkpoint(run_dir / "best.pt", parts.model,
                         {"kind": "best", "epoch": member.best["epoch"], "row": row})
    plot_curves(run_dir / "curves.png", member.history,
                f"{cfg.model} / {cfg.head} / {cfg.dataset}")
    summary = run_summary(cfg, parts, member.history, member.best, member.totals, test,
                          device=sweep.system["device"], world_size=1, run_dir=run_dir)
    write_json(run_dir / "summary.json", summary)
    return summary
