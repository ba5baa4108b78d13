"""Finished runs evaluated again on more test images, without training: the full test split at
the trained input size (and others), and shifted test images.

A study that tested on a subset of the test split to bound its cost on a CPU (``--test-size``)
or ran without ``--shifts`` can then report, for the very same checkpoints, the accuracy on the
whole split and under shifts. Each run's ``best.pt`` is read with the input size, channels and
normalisation it trained with; the test split is read once for all runs that share it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from tqdm import tqdm

import surgery
from surgery import read_json

from ..data import DataSplits
from ..training import config_from_record, load_run_data
from .robustness import evaluate_run
from .shifts import evaluate_run_shifts

__all__ = ["find_runs", "reevaluate_runs", "summarise_reevaluation"]


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories from ``paths``: each a run directory (``config.json`` and ``best.pt``)
    or a study directory (its ``runs/*`` that have a ``best.pt``), in order."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if (p / "config.json").is_file():
            runs.append(p)
        elif (p / "runs").is_dir():
            runs += sorted(d for d in (p / "runs").iterdir() if (d / "best.pt").is_file())
        else:
            raise FileNotFoundError(f"{str(p)!r} is neither a run directory (config.json) nor a "
                                    "study directory (runs/)")
    missing = [str(r) for r in runs if not (r / "best.pt").is_file()]
    if missing:
        raise FileNotFoundError(f"no best.pt in {', '.join(missing)}: only finished runs that "
                                "kept their checkpoint (--keep best or all) can be evaluated")
    return runs


def _test_key(cfg: Any, test_size: int | None) -> str:
    """What a run's test split depends on (not its seed or training subset)."""
    return json.dumps([cfg.dataset, str(cfg.data_dir), cfg.classes, cfg.data_options,
                       cfg.resize, test_size], sort_keys=True, default=str)


def reevaluate_runs(run_dirs: Sequence[str | Path], *, test_size: int | None = None,
                    sizes: Sequence[int] = (), shifts: Sequence[int] = (),
                    shift_images: int | None = 2000, device: str = "auto",
                    progress: bool = True) -> list[dict[str, Any]]:
    """One row per run: its head, training size and seed, the test accuracy it reported
    (``reported_test_acc``, on the test images it was run with), the accuracy of its
    ``best.pt`` on ``test_size`` stratified test images (None: the whole split) at its trained
    size (``test_acc``) and at each of ``sizes`` (``acc_{size}px``; None where the head
    refuses the size), and on ``shift_images`` of them shifted by each of ``shifts`` pixels
    (``shift_{s}px``)."""
    data_for: dict[str, DataSplits] = {}
    rows = []
    for run_dir in tqdm(list(map(Path, run_dirs)), desc="runs", unit="run", disable=not progress):
        meta = read_json(run_dir / "config.json")
        cfg = config_from_record(meta["config"])
        key = _test_key(cfg, test_size)
        if key not in data_for:
            data_for[key] = load_run_data(replace(cfg, test_size=test_size))
        data = data_for[key]
        trained = int(meta["resolved"]["img_size"])
        reported = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() \
            else {}
        row: dict[str, Any] = {
            "run": run_dir.name, "model": cfg.model, "head": surgery.head_label(cfg.head_spec()),
            "train_size": reported.get("train_size", cfg.train_size), "seed": cfg.seed,
            "regime": cfg.regime, "test_images": len(data.test_y),
            "reported_test_acc": reported.get("test_acc")}
        at = evaluate_run(run_dir, sizes=list(dict.fromkeys([trained, *sizes])), max_images=None,
                          data=data, device=device)
        for r in at:
            acc = r["test_acc"] if r["status"] == "ok" else None
            row["test_acc" if r["img_size"] == trained else f"acc_{r['img_size']}px"] = acc
        if shifts:
            for r in evaluate_run_shifts(run_dir, shifts, shift_images, data=data, device=device):
                row[f"shift_{r['shift']}px"] = r["test_acc"]
        rows.append(row)
    return rows


def summarise_reevaluation(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample std over seeds of every accuracy of :func:`reevaluate_runs`' rows, per
    model, head and training size (in percent; ``n`` seeds)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["head"], r["train_size"]), []).append(r)
    metrics = [k for k in rows[0] if k == "test_acc" or k.startswith(("acc_", "shift_"))] \
        if rows else []
    out = []
    for (model, head, size), runs in groups.items():
        s: dict[str, Any] = {"model": model, "head": head, "train_size": size, "n": len(runs),
                             "test_images": runs[0]["test_images"]}
        for m in metrics:
            values = [100 * r[m] for r in runs if r.get(m) is not None]
            s[m] = (f"{mean(values):.1f} ± {stdev(values):.1f}" if len(values) > 1 else
                    f"{values[0]:.1f}" if values else "refused")
        out.append(s)
    return out
