"""Head comparison studies: every model x head x train size x seed, through the fine-tuning harness.

A study directory holds ``study.json`` (the grid and the settings every run shares), one run
directory per combination under ``runs/`` (analysis.train's files plus ``robustness.json``), and
the report written by analysis.study_report.write_report: ``summary.md/.csv/.json``, ``runs.csv``,
``robustness.csv/.json``, ``comparisons.csv`` and the plots of analysis.plots.

Resuming is the default: a combination whose run directory has ``summary.json`` (and
``robustness.json``) is skipped, an interrupted one continues from its ``last.pt``. ``shard=(i, n)``
runs only combinations ``i, i + n, i + 2n, ...`` (0-based) of the fixed order, so n machines split
one study; :func:`collect` merges their directories into one report. With ``jobs >= 1`` each run is
its own child process (its peak memory is then its own, and a crash loses one run); ``jobs=0``
runs in this process (tests; memory figures are then the process's peak so far).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .machine import machine_info  # noqa: F401  (analysis.study.machine_info, as before)
from .rundir import read_json, write_json
from .study_report import write_report

__all__ = ["HeadSpec", "parse_head", "StudySpec", "Combo", "combinations", "parse_shard",
           "select_shard", "run_study", "collect", "load_records", "write_report", "STUDY_FILE"]

STUDY_FILE = "study.json"
_OPTION_KEYS = {"hidden": "hidden", "h": "hidden", "dropout": "dropout", "d": "dropout"}


@dataclass(frozen=True)
class HeadSpec:
    """A head as a study compares it: a kind from ``surgery.HEADS`` plus its MLP options."""

    head: str
    hidden: tuple[int, ...] = ()
    dropout: float = 0.0

    @property
    def label(self) -> str:
        """The name in tables and run directories: ``flatten-h256-d0.5`` (as train.run_name)."""
        parts = [self.head]
        if self.hidden:
            parts.append("h" + "x".join(map(str, self.hidden)))
        if self.dropout:
            parts.append(f"d{self.dropout:g}")
        return "-".join(parts)

    def __str__(self) -> str:
        return self.label


def parse_head(text: str) -> HeadSpec:
    """``gap``, ``flatten:hidden=256:dropout=0.5``, ``flatten:hidden=512x256``, ``gap:d=0.2``."""
    from surgery import HEADS
    from surgery.heads import check_head_args

    kind, *opts = text.split(":")
    if kind not in HEADS:
        raise ValueError(f"unknown head {kind!r} in {text!r}; choose from {', '.join(HEADS)} "
                         "(options: KIND:hidden=256:dropout=0.5)")
    values: dict[str, Any] = {}
    for opt in opts:
        key, sep, val = opt.partition("=")
        if not sep or key not in _OPTION_KEYS:
            raise ValueError(f"bad head option {opt!r} in {text!r}; expected hidden=W[xW...] or "
                             "dropout=P, e.g. flatten:hidden=256:dropout=0.5")
        try:
            if _OPTION_KEYS[key] == "hidden":
                values["hidden"] = tuple(int(w) for w in val.split("x"))
            else:
                values["dropout"] = float(val)
        except ValueError:
            raise ValueError(f"bad value in head option {opt!r} of {text!r}") from None
    spec = HeadSpec(kind, **values)
    check_head_args(spec.head, 2, spec.hidden, spec.dropout)
    return spec


@dataclass
class StudySpec:
    """The grid and the settings every run shares.

    ``base`` holds analysis.train.TrainConfig fields (dataset, epochs, img_size, lr, ...);
    ``robust_sizes`` the input sizes (px) each trained model is evaluated at (empty: around the
    training size, see analysis.robustness.default_sizes), ``robust_images`` how many test
    images that uses (None: all); ``test_size`` a stratified subset of the official test split,
    the same images for every run (None: all of it), to bound the cost of testing on a CPU.
    """

    models: tuple[str, ...]
    heads: tuple[HeadSpec, ...]
    seeds: tuple[int, ...] = (0,)
    train_sizes: tuple[int | None, ...] = (None,)
    base: dict[str, Any] = field(default_factory=dict)
    robust_sizes: tuple[int, ...] = ()
    robust_images: int | None = 2000
    test_size: int | None = None
    command: str = ""

    def check(self) -> None:
        """Raise ValueError for an empty or ambiguous grid, or a setting train() rejects."""
        for name in ("models", "heads", "seeds", "train_sizes"):
            if not getattr(self, name):
                raise ValueError(f"a study needs at least one of {name}")
        labels = [h.label for h in self.heads]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"head {', '.join(dupes)} is listed twice")
        if any(s is not None and s < 1 for s in self.train_sizes):
            raise ValueError(f"train sizes must be >= 1, got {list(self.train_sizes)}")
        for model in self.models:  # names and settings, before any data is read
            for head in self.heads:
                Combo(model, head, self.train_sizes[0], self.seeds[0]).config(self, Path(".")).check()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = [h.label for h in self.heads]
        d["head_specs"] = [asdict(h) for h in self.heads]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        heads = tuple(HeadSpec(h["head"], tuple(h["hidden"]), float(h["dropout"]))
                      for h in d["head_specs"])
        return cls(tuple(d["models"]), heads, tuple(d["seeds"]), tuple(d["train_sizes"]),
                   dict(d["base"]), tuple(d.get("robust_sizes") or ()), d.get("robust_images"),
                   d.get("test_size"), d.get("command", ""))


@dataclass(frozen=True)
class Combo:
    """One run of the grid."""

    model: str
    head: HeadSpec
    train_size: int | None
    seed: int

    def config(self, spec: StudySpec, runs_dir: Path) -> Any:
        """The analysis.train.TrainConfig of this run, named by train.run_name."""
        from .train import TrainConfig, run_name

        cfg = TrainConfig.from_dict({**spec.base, "model": self.model, "head": self.head.head,
                                     "hidden": self.head.hidden, "dropout": self.head.dropout,
                                     "train_size": self.train_size, "seed": self.seed,
                                     "out": str(runs_dir), "progress": False})
        cfg.name = run_name(cfg)
        return cfg


def combinations(spec: StudySpec) -> list[Combo]:
    """Every run, in the fixed order model > train size > seed > head (heads of one seed are
    neighbours, so a partly finished study already holds complete paired comparisons)."""
    return [Combo(m, h, n, s) for m in spec.models for n in spec.train_sizes
            for s in spec.seeds for h in spec.heads]


def parse_shard(text: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)``: shard I (0-based) of N."""
    i, sep, n = text.partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (-1, 0)
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard expects I/N with 0 <= I < N (e.g. 0/2 and 1/2), got {text!r}")
    return shard


def select_shard(combos: Sequence[Combo], shard: tuple[int, int] | None) -> list[Combo]:
    """This shard's share: every n-th combination from the i-th (all of them for None)."""
    if shard is None:
        return list(combos)
    i, n = shard
    return list(combos[i::n])


# ------------------------------------------------------------------------------ running
def _base_mismatch(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old["base"]) | set(new["base"]))
    diff = [f"{k} {old['base'].get(k)!r} -> {new['base'].get(k)!r}" for k in keys
            if old["base"].get(k) != new["base"].get(k)]
    for k in ("robust_sizes", "robust_images", "test_size"):
        if old.get(k) != new.get(k):
            diff.append(f"{k} {old.get(k)!r} -> {new.get(k)!r}")
    return diff


def _open_study(spec: StudySpec, out: Path, shard: tuple[int, int] | None) -> None:
    """Write ``study.json``, refusing a directory that holds a study with other settings."""
    new = json.loads(json.dumps(dict(spec.to_dict(), shard=list(shard) if shard else None)))
    if (out / STUDY_FILE).is_file():
        diff = _base_mismatch(read_json(out / STUDY_FILE), new)
        if diff:
            raise ValueError(f"{str(out)!r} holds a study with other settings ({'; '.join(diff)}); "
                             "its runs would not be comparable: use another --out")
    write_json(out / STUDY_FILE, new)


def _job(combo: Combo, spec: StudySpec, out: Path) -> dict[str, Any]:
    cfg = combo.config(spec, out / "runs")
    return {"config": asdict(cfg), "robust_sizes": list(spec.robust_sizes),
            "robust_images": spec.robust_images, "test_size": spec.test_size}


def _is_done(run_dir: Path) -> bool:
    return (run_dir / "summary.json").is_file() and (run_dir / "robustness.json").is_file()


def _load_data(cfg: Any, test_size: int | None) -> Any:
    """The run's splits with the test split cut to ``test_size`` images (stratified, seed 0:
    the same images for every run of the study); None (train() loads) when no cut is asked."""
    if not test_size:
        return None
    from .data import load_dataset, stratified_indices

    data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, download=cfg.download,
                        train_size=cfg.train_size, val_size=cfg.val_size, seed=cfg.seed,
                        **cfg.data_options)
    if test_size < len(data.test_y):
        idx = stratified_indices(data.test_y, test_size, seed=0)
        data = replace(data, test_x=data.test_x[idx], test_y=data.test_y[idx],
                       info=dict(data.info, test=test_size))
    return data


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume, or skip) one run and evaluate it at the robustness sizes."""
    from .robustness import evaluate_run
    from .train import TrainConfig, train

    cfg = TrainConfig.from_dict(job["config"])
    run_dir = Path(cfg.out) / str(cfg.name)
    data = _load_data(cfg, job.get("test_size"))
    if (run_dir / "config.json").is_file():
        summary = train(resume=run_dir, data=data)
    else:
        cfg.overwrite = True
        summary = train(cfg, data=data)
    if not (run_dir / "robustness.json").is_file():
        rows = evaluate_run(run_dir, job["robust_sizes"] or None, job["robust_images"],
                            data=data, device=cfg.device)
        write_json(run_dir / "robustness.json", rows)
    return summary


def _spawn(job: dict[str, Any], log: Path, threads: int) -> tuple[int, str]:
    """Run one job in a child process (``python -m analysis.study JOB``); (exit code, last line)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as f:
        code = subprocess.call([sys.executable, "-m", "analysis.study", json.dumps(job)],
                               stdout=f, stderr=subprocess.STDOUT, env=env)
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln]
    return code, (lines[-1] if lines else "")


def run_study(spec: StudySpec, out: str | Path, *, jobs: int = 1,
              shard: tuple[int, int] | None = None, progress: bool = True,
              threads: int | None = None) -> dict[str, Any]:
    """Run this shard's combinations not yet done, then write the report of the directory.

    Returns ``{"ran": [...], "skipped": [...], "failed": [(name, message), ...], "report": {...}}``
    (run names). ``threads``: torch threads per child (default: cores / jobs; on a shared,
    busy CPU 1 is faster). In-process (``jobs=0``) errors propagate; in child processes a failed run is
    recorded with the last line of its log (``logs/NAME.log``) and the others continue.
    """
    spec.check()
    out = Path(out)
    _open_study(spec, out, shard)
    result: dict[str, Any] = {"ran": [], "skipped": [], "failed": []}
    pending = []
    for combo in select_shard(combinations(spec), shard):
        job = _job(combo, spec, out)
        name = job["config"]["name"]
        if _is_done(out / "runs" / name):
            result["skipped"].append(name)
        else:
            pending.append((name, job))
    bar = _bar(len(pending), progress)
    if jobs <= 0:
        for name, job in pending:
            run_job(job)
            result["ran"].append(name)
            bar.update(1)
    else:
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_spawn, job, out / "logs" / f"{name}.log", threads): name
                       for name, job in pending}
            for fut in as_completed(futures):
                code, last = fut.result()
                name = futures[fut]
                if code == 0 and not _is_done(out / "runs" / name):
                    code, last = -1, "the child process exited without finishing the run"
                if code == 0:
                    result["ran"].append(name)
                else:
                    result["failed"].append((name, f"exit {code}: {last}"))
                bar.update(1)
    bar.close()
    result["report"] = write_report(out, load_records([out], spec), spec)
    return result


def _bar(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="study runs", unit="run", disable=not enabled or total == 0,
                dynamic_ncols=True)


# ------------------------------------------------------------------------------ records
def load_records(dirs: Sequence[str | Path], spec: StudySpec) -> list[dict[str, Any]]:
    """The finished runs of ``spec`` (``summary.json`` and ``robustness.json`` written) found under
    ``DIR/runs/`` of each of ``dirs``, in the grid's order; a run present in several directories
    counts once (the first)."""
    records = []
    for combo in combinations(spec):
        name = combo.config(spec, Path(".")).name
        for d in dirs:
            run_dir = Path(d) / "runs" / str(name)
            if _is_done(run_dir):  # trained and evaluated at the robustness sizes
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
    return rec


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
        diff = _base_mismatch(first, s) + [k for k in grid if first[k] != s[k]]
        if diff:
            raise ValueError(f"{str(d)!r} holds a different study than {str(dirs[0])!r} "
                             f"({'; '.join(diff)}); collect shards of one study only")
    spec = StudySpec.from_dict(first)
    out = Path(out)
    write_json(out / STUDY_FILE, dict(spec.to_dict(), shard=None, collected_from=[str(d) for d in dirs]))
    records = load_records(dirs, spec)
    done = {r["run"] for r in records}
    missing = [n for n in (c.config(spec, Path(".")).name for c in combinations(spec))
               if n not in done]
    report = write_report(out, records, spec, missing=missing)
    return {"records": len(records), "missing": missing, "report": report}


def _child_main(argv: list[str]) -> int:
    """Entry point of a child process: one job, given as JSON on the command line."""
    import torch

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads:
        torch.set_num_threads(threads)
    run_job(json.loads(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
