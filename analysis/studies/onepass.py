"""A study's frozen-backbone runs through one pass: every head at its own best learning rate.

For each (model, training-set size) of a linear-probe study on cached features,
:func:`sweep_pending` trains every head x learning rate x weight decay x seed together
(analysis.training.sweep), chooses each head's setting on validation (analysis.studies.lr_grid)
and writes each head's chosen member of every seed as the study's run directory, so the rest of
the study reads them as if each had trained alone. ``sweeps/MODEL-nN/`` keeps what the pass
measured and the chosen weights (``chosen.pt``), so an interrupted invocation resumes without
training again (or from ``state.pt``, analysis.training.sweep_state, if it was still training).
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from surgery import atomic_write, atomic_write_bytes, read_json, write_json

from ..reporting import plot_lr_curves, to_csv
from ..runtime import lock_run_dir
from ..training import TrainConfig
from ..training.sweep import Halving, Sweep, SweepMember
from ..training.sweep_runs import write_member_run
from .lr_grid import choose_settings, default_lrs, extension, lr_curves, sweep_rows
from .spec import Combo, StudySpec, combinations

__all__ = ["SWEEPS_DIR", "add_sweep_options", "one_pass_applies", "sweep_dir", "sweep_pending",
           "sweep_settings"]

SWEEPS_DIR = "sweeps"


def add_sweep_options(parser: argparse.ArgumentParser, *, grid_by_default: bool) -> None:
    """The one pass's options (pick_head and compare_heads): the learning-rate and
    weight-decay grids, successive halving, the memory budget, and the way back to one run
    per head. ``grid_by_default``: without ``--lrs`` search :func:`default_lrs` (pick_head)
    rather than the one ``--lr`` (compare_heads)."""
    s = parser.add_argument_group("each head at its own best setting (frozen backbone, one pass)")
    grid = " ".join(f"{v:g}" for v in default_lrs("adamw"))
    s.add_argument("--lrs", nargs="+", type=float, default=None, metavar="LR",
                   help="learning rates searched for every head, each head keeping the best on "
                        "validation (mean over seeds); a head whose best is an end of the grid "
                        "gets one more value that way. Default: "
                        + (f"{grid} (AdamW; SGD a decade higher)" if grid_by_default
                           else "--lr alone"))
    s.add_argument("--weight-decays", nargs="+", type=float, default=None, metavar="WD",
                   help="weight decays searched with each learning rate (default: "
                        "--weight-decay alone)")
    s.add_argument("--prune-at", nargs="*", type=float, default=[0.25, 0.5], metavar="F",
                   help="successive halving: after these fractions of the epochs keep the "
                        "better --prune-keep of each head's settings (none: no pruning; "
                        "default 0.25 0.5)")
    s.add_argument("--prune-keep", type=float, default=0.5,
                   help="fraction of each head's settings kept at each halving (default 0.5)")
    s.add_argument("--sweep-mem-gb", type=float, default=None, metavar="G",
                   help="memory for the heads trained at once (weights, gradients, optimiser "
                        "state); more are trained in further passes (default: half of what is "
                        "available)")
    s.add_argument("--no-one-pass", dest="one_pass", action="store_false",
                   help="train one run per head and seed instead (at one --lr), as studies did "
                        "before the one pass")


def sweep_settings(args: argparse.Namespace, *, grid_by_default: bool) -> dict[str, Any]:
    """The StudySpec fields of :func:`add_sweep_options`'s arguments."""
    lrs = args.lrs
    if lrs is None and grid_by_default and args.one_pass and args.regime == "linear-probe":
        lrs = default_lrs(args.optimizer)
    return {"lrs": tuple(lrs or ()), "weight_decays": tuple(args.weight_decays or ()),
            "one_pass": args.one_pass, "prune_at": tuple(args.prune_at),
            "prune_keep": args.prune_keep}


def one_pass_applies(spec: StudySpec) -> bool:
    """Whether the study's runs train through one pass: a linear probe on cached features
    (no per-epoch augmentation without views) and not turned off (``one_pass``)."""
    b = spec.base
    return (spec.one_pass and b.get("regime") == "linear-probe"
            and b.get("feature_cache", "auto") == "auto"
            and not (b.get("augment") and not b.get("feature_cache_views")))


def sweep_dir(out: str | Path, model: str, train_size: int | None) -> Path:
    return Path(out) / SWEEPS_DIR / f"{model}-n{train_size or 'all'}"


def _grid(spec: StudySpec) -> tuple[tuple[float, ...], tuple[float, ...]]:
    lrs = spec.lrs or (float(spec.base.get("lr", TrainConfig.lr)),)
    wds = spec.weight_decays or (float(spec.base.get("weight_decay", TrainConfig.weight_decay)),)
    return tuple(lrs), tuple(wds)


def _halving(spec: StudySpec, epochs: int) -> Halving:
    return Halving.at_fractions(epochs, spec.prune_at, keep=spec.prune_keep)


def sweep_pending(spec: StudySpec, out: str | Path, pending: Sequence[str], *,
                  progress: bool = True, mem_bytes: int | None = None) -> dict[str, Any]:
    """Train the groups of ``spec`` that have a pending run (by name) in one pass each and write
    those runs. Returns ``{"written": [names], "failed": [(name, why)], "groups": [info]}``."""
    out = Path(out)
    result: dict[str, Any] = {"written": [], "failed": [], "groups": []}
    combos = combinations(spec)
    for model in spec.models:
        for n in spec.train_sizes:
            group = [c for c in combos if c.model == model and c.train_size == n]
            names = {c: str(c.config(spec, out / "runs").name) for c in group}
            todo = [c for c in group if names[c] in set(pending)]
            if not todo:
                continue
            info = _sweep_group(spec, out, model, n, todo, names, progress, mem_bytes)
            result["written"] += info.pop("written")
            result["failed"] += info.pop("failed")
            result["groups"].append(info)
    return result


def _sweep_group(spec: StudySpec, out: Path, model: str, n: int | None, todo: list[Combo],
                 names: dict[Combo, str], progress: bool,
                 mem_bytes: int | None) -> dict[str, Any]:
    """One (model, train size): train (or reread) the sweep, then write the pending runs."""
    where = sweep_dir(out, model, n)
    base = _base_config(spec, todo[0], out)
    sweep = Sweep(base, run_dir=out, progress=progress, mem_bytes=mem_bytes)
    t0 = time.perf_counter()
    chosen = _reread(where) if (where / "chosen.pt").is_file() else None
    if chosen is None:
        members = _train_grid(spec, sweep, base, where)
        chosen = _record(where, spec, members, base, time.perf_counter() - t0)
        for name in ("state.pt", "state-extension.pt"):  # the progress of a finished sweep
            (where / name).unlink(missing_ok=True)
    written, failed = [], []
    for combo in todo:
        member = chosen.get((combo.head.label, combo.seed))
        name = names[combo]
        if member is None:
            failed.append((name, f"no learning rate of {combo.head.label} finished on every "
                                  f"seed (see {where / 'sweep.csv'})"))
            continue
        run_dir = out / "runs" / name
        with lock_run_dir(run_dir, create=True):
            write_member_run(sweep, member, run_dir)
        written.append(name)
    shutil.rmtree(where / "best_heads", ignore_errors=True)  # chosen.pt keeps the chosen
    info = dict(read_json(where / "sweep.json"))
    info.pop("members", None)
    return {**info, "written": written, "failed": failed, "dir": str(where),
            "seconds": time.perf_counter() - t0}


def _base_config(spec: StudySpec, combo: Combo, out: Path) -> TrainConfig:
    """The group's shared settings (the first pending run's config; heads and seeds vary)."""
    cfg = combo.config(spec, out / "runs")
    return replace(cfg, name=None, progress=False)


def _train_grid(spec: StudySpec, sweep: Sweep, base: TrainConfig,
                where: Path) -> list[SweepMember]:
    """Every head x setting x seed, then one more learning rate for heads chosen at an end
    (each part's progress in ``where``, so an interrupted sweep resumes)."""
    lrs, wds = _grid(spec)
    members = [SweepMember(str(h), lr, wd, s) for h in spec.heads for lr in lrs for wd in wds
               for s in spec.seeds]
    sweep.state_path = where / "state.pt"
    sweep.train(members, _halving(spec, base.epochs))
    extra = []
    for choice in choose_settings(members).values():
        lr = extension(choice) if len(lrs) > 1 else None
        if lr is None:
            continue
        head = next(str(h) for h in spec.heads if h.label == choice.head)
        extra += [SweepMember(head, lr, choice.weight_decay, s) for s in spec.seeds]
    if extra:
        sweep.state_path = where / "state-extension.pt"
        sweep.train(extra)
    return members + extra


def _record(where: Path, spec: StudySpec, members: list[SweepMember], base: TrainConfig,
            seconds: float) -> dict[tuple[str, int], SweepMember]:
    """Write sweep.json / sweep.csv / lr.png and the chosen members' weights; return them."""
    where.mkdir(parents=True, exist_ok=True)
    choices = choose_settings(members)
    lrs0, wds = _grid(spec)
    chosen = {(m.label, m.seed): m for m in members
              if m.label in choices and m.setting == (m.label, choices[m.label].lr,
                                                      choices[m.label].weight_decay)}
    grid = sorted({m.lr for m in members})
    doc: dict[str, Any] = {"model": base.model, "train_size": base.train_size, "lrs": grid,
           "lrs_asked": list(lrs0), "weight_decays": list(wds), "seeds": list(spec.seeds),
           "epochs": base.epochs, "min_steps": base.min_steps,
           "prune_at": list(spec.prune_at), "prune_keep": spec.prune_keep,
           "train_s": seconds, "members_trained": len(members),
           "status": {s: sum(m.status == s for m in members) for s in ("ok", "diverged", "pruned")},
           "head_time_s": {label: sum(m.totals["time_s"] for m in members if m.label == label)
                           for label in dict.fromkeys(m.label for m in members)},
           "choices": {k: {"lr": c.lr, "weight_decay": c.weight_decay,
                           "val_acc_mean": c.val_acc_mean, "val_acc_std": c.val_acc_std,
                           "edge": c.edge, "extended": c.lrs != tuple(lrs0)
                           and any(lr not in lrs0 for lr in c.lrs)}
                       for k, c in choices.items()},
           "curves": lr_curves(members),
           "members": [{k: v for k, v in m.record().items() if k != "history"} for m in members]}
    write_json(where / "sweep.json", doc)
    atomic_write_bytes(where / "sweep.csv", to_csv(sweep_rows(members)).encode())
    plot_lr_curves(doc["curves"], where / "lr.png",
                   f"{base.model}, n={base.train_size}: best validation accuracy by learning rate",
                   {k: c["lr"] for k, c in doc["choices"].items()})
    payload = {f"{label}|{seed}": {"member": m.record(), "state": m.head_state(), "best": m.best,
                                   "totals": m.totals}
               for (label, seed), m in chosen.items()}
    atomic_write(where / "chosen.pt", lambda f: torch.save(payload, f))
    return chosen


def _reread(where: Path) -> dict[tuple[str, int], SweepMember] | None:
    """The chosen members of a finished sweep, from ``chosen.pt`` (None if unreadable)."""
    try:
        payload = torch.load(where / "chosen.pt", map_location="cpu", weights_only=True)
    except Exception:
        return None
    out = {}
    for key, item in payload.items():
        label, seed = key.rsplit("|", 1)
        rec = item["member"]
        m = SweepMember(rec["head_spec"], rec["lr"], rec["weight_decay"], rec["seed"],
                        rec["status"], rec["stopped"], rec["history"], item["best"],
                        item["state"], item["totals"])
        out[(label, int(seed))] = m
    return out
