"""Reading a study's finished runs back, and merging shard directories into one report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from surgery import read_json, write_json

from ..data import decodes_files
from .committed import committed_records
from .report import write_report
from .shifts import SHIFT_FILE
from .spec import STUDY_FILE, Combo, StudySpec, combinations

__all__ = ["collect", "is_done", "load_records", "settings_mismatch", "study_records"]


# options that change how data is loaded, never what a run computes
_HOW_NOT_WHAT = ("decode_workers", "data_cache_dir")


def _comparable(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """``base`` without the how-not-what options; a study from before ``--resize`` existed
    squashed image files (and the policy means nothing for data sets that decode none)."""
    base = {k: v for k, v in base.items() if k not in _HOW_NOT_WHAT}
    if "resize" not in base:
        if decodes_files(str(base.get("dataset", other.get("dataset")))):
            base["resize"] = "squash"
        elif "resize" in other:
            base["resize"] = other["resize"]
    return base


def settings_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two ``study.json`` settings (shared base and evaluation options)."""
    old_base = _comparable(old["base"], new["base"])
    new_base = _comparable(new["base"], old["base"])
    keys = sorted(set(old_base) | set(new_base))
    diff = [f"{k} {old_base.get(k)!r} -> {new_base.get(k)!r}" for k in keys
            if old_base.get(k) != new_base.get(k)]
    for k in ("robust_sizes", "robust_images", "test_size", "robustness", "shifts",
              "shift_images"):
        if old.get(k) != new.get(k):
            diff.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    if (old.get("head_lr") or {}) != (new.get("head_lr") or {}):  # absent in older studies
        diff.append(f"head_lr {old.get('head_lr') or {}!r} -> {new.get('head_lr') or {}!r}")
    for k in ("lrs", "weight_decays", "prune_at", "prune_keep"):  # the grid a study searched
        if k in old and old.get(k) != new.get(k):
            diff.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return diff


def is_done(run_dir: Path, shifts: bool = False) -> bool:
    """A run counts as finished when it was trained and evaluated at the robustness sizes (and,
    with ``shifts``, at the pixel shifts)."""
    return ((run_dir / "summary.json").is_file() and (run_dir / "robustness.json").is_file()
            and (not shifts or (run_dir / SHIFT_FILE).is_file()))


def load_records(dirs: Sequence[str | Path], spec: StudySpec) -> list[dict[str, Any]]:
    """The finished runs of ``spec`` (``summary.json`` and ``robustness.json`` written) found under
    ``DIR/runs/`` of each of ``dirs``, in the grid's order; a run present in several directories
    counts once (the first)."""
    records = []
    for combo in combinations(spec):
        name = combo.config(spec, Path(".")).name
        for d in dirs:
            run_dir = Path(d) / "runs" / str(name)
            if is_done(run_dir, bool(spec.shifts)):  # trained and evaluated
                records.append(_record(run_dir, combo))
                break
    return records


def _record(run_dir: Path, combo: Combo) -> dict[str, Any]:
    rec = dict(read_json(run_dir / "summary.json"))
    rec["head_label"] = combo.head.label
    rec["run"] = run_dir.name
    hist = run_dir / "metrics.jsonl"
    rec["history"] = ([json.loads(ln) for ln in hist.read_text().splitlines() if ln.strip()]
                      if hist.is_file() else [])
    rob = run_dir / "robustness.json"
    rec["robustness"] = read_json(rob) if rob.is_file() else []
    shifted = run_dir / SHIFT_FILE
    rec["shifts"] = read_json(shifted) if shifted.is_file() else []
    where = run_dir / "placement.json"  # written by the study's job (older runs: none)
    rec["ran_on"] = read_json(where) if where.is_file() else {}
    return rec


def study_records(directory: str | Path) -> tuple[StudySpec, list[dict[str, Any]]]:
    """A study directory's spec (its ``study.json``) and the records of its finished runs: from
    its run directories, or where none are here (they are not committed) from its committed
    tables (analysis.studies.committed)."""
    path = Path(directory) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} is not a study directory (no {STUDY_FILE})")
    spec = StudySpec.from_dict(read_json(path))
    return spec, load_records([directory], spec) or committed_records(directory)


def collect(dirs: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Merge shard directories of one study into ``out``: check they hold the same study, write
    the report of all their runs, and list the combinations none of them finished."""
    if not dirs:
        raise ValueError("--collect needs at least one study directory")
    specs = []
    for d in dirs:
        path = Path(d) / STUDY_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{str(d)!r} is not a study directory (no {STUDY_FILE})")
        specs.append(read_json(path))
    first = specs[0]
    for d, s in zip(dirs[1:], specs[1:], strict=True):
        grid = ("models", "heads", "seeds", "train_sizes")
        diff = settings_mismatch(first, s) + [k for k in grid if first[k] != s[k]]
        if diff:
            raise ValueError(f"{str(d)!r} holds a different study than {str(dirs[0])!r} "
                             f"({'; '.join(diff)}); collect shards of one study only")
    spec = StudySpec.from_dict(first)
    out = Path(out)
    write_json(out / STUDY_FILE, dict(spec.to_dict(), shard=None, collected_from=[str(d) for d in dirs]))
    records = load_records(dirs, spec)
    done = {r["run"] for r in records}
    missing = [str(n) for n in (c.config(spec, Path(".")).name for c in combinations(spec))
               if n not in done]
    report = write_report(out, records, spec, missing=missing)
    return {"records": len(records), "missing": missing, "report": report}
