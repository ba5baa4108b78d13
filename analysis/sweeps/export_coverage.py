"""Export coverage as a sweep: ONNX export + onnxruntime verification over a sample of the zoo.

Each architecture x head of the sample (analysis.sweeps.export_checks) is exported and verified, one
architecture per worker task; rows are appended to a JSONL cache as they finish, so an
interrupted run, or a run with a new head, resumes: only missing pairs are computed.
Architectures run layout by layout in turn, each layout's smallest first (a run cut short has
covered every layout and the most architectures), each head under a limit of CPU seconds
(other jobs on the machine slow a pair down, not time it out). :func:`export_coverage_sweep`
writes ``export_coverage.json`` and ``export_coverage.md``.
"""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import surgery

from ..export import require_export
from ..machine import describe_machine
from ..runtime import (
    CpuBudgetExceeded,
    ItemBudget,
    JsonlStore,
    one_torch_thread,
    run_sweep,
    write_files,
)
from .export_checks import (
    LAYOUTS,
    Candidate,
    coverage_heads,
    coverage_rows,
    failure_row,
    sample_architectures,
    zoo_candidates,
)
from .export_coverage_report import render_markdown, summarise

__all__ = ["ExportCoverageSettings", "Task", "export_coverage_sweep", "export_pairs", "run_order"]

Task = tuple[Candidate, tuple[str, ...], int, int]
_MAX_TASKS_PER_CHILD = 4  # exports leave memory behind: a fresh worker every few architectures


@dataclass
class ExportCoverageSettings:
    """What tools/export_coverage.py asks for: its flags by name, with the tool's
    defaults (declared once, in its parser)."""

    sample: int
    models: list[str] | None
    heads: list[str] | None
    max_params: float
    opset: int
    zoo_table: Path
    zoo_coverage: Path
    jobs: int
    timeout: int
    cache: Path | None
    retry_errors: bool
    no_progress: bool
    report_only: bool
    out_dir: Path
    command: str | None


def export_pairs(task: Task) -> list[dict[str, Any]]:
    """Worker: one architecture, each head under its own CPU-time limit (SIGPROF); a head past
    it is a ``timeout`` row and the next head starts on a fresh backbone."""
    candidate, heads, opset, timeout = task
    rows: list[dict[str, Any]] = []
    todo = list(heads)
    while todo:
        rows_iter = coverage_rows(candidate.name, tuple(todo), opset=opset,
                                  dynamo_budget=timeout / 3)
        try:
            while todo:
                with ItemBudget("cpu", timeout) as item:
                    rows.append(next(rows_iter))
                rows[-1]["cpu_seconds"] = round(item.cpu_seconds, 1)
                todo.pop(0)
        except CpuBudgetExceeded:
            rows.append(failure_row(candidate.name, todo.pop(0), "timeout", "timeout",
                                    f"no result within {timeout} CPU s"))
    for r in rows:
        r.update(sample_layout=candidate.layout, params=candidate.params)
    return rows


def run_order(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The order architectures run in: the layouts in turn, each layout's smallest first, so
    a run cut short has covered every layout and as many architectures as it could."""
    queues = [sorted((c for c in candidates if c.layout == layout),
                     key=lambda c: (c.params, c.name))
              for layout in sorted({c.layout for c in candidates}, key=_layout_rank)]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _layout_rank(layout: str) -> tuple[int, str]:
    return (LAYOUTS.index(layout) if layout in LAYOUTS else len(LAYOUTS), layout)


def _candidates(settings: ExportCoverageSettings) -> tuple[list[Candidate], int]:
    """The architectures to export (the named ones, or the sample) and how many the zoo
    offered."""
    pool = zoo_candidates(settings.zoo_table, settings.zoo_coverage, settings.max_params)
    if settings.models:
        names = set(surgery.expand_model_names(settings.models))
        chosen = [c for c in pool if c.name in names]
        unknown = sorted(names - {c.name for c in chosen})
        chosen += [Candidate(n, "?", 0, "?") for n in unknown]
        return sorted(chosen, key=lambda c: c.name), len(pool)
    return sample_architectures(pool, settings.sample), len(pool)


def _versions() -> dict[str, str]:
    return {k: importlib.metadata.version(k) for k in ("onnx", "onnxscript", "onnxruntime")}


def _invocations(report: Path, command: str, computed: int, elapsed: float,
                 jobs: int, interrupted: bool = False) -> list[dict[str, Any]]:
    """Every invocation that computed rows of the report, oldest first: the previous report's
    list, plus this one when it computed anything (a resumed report names all its commands)."""
    try:
        before = list(surgery.read_json(report)["meta"].get("invocations") or [])
    except (OSError, ValueError, KeyError, TypeError):
        before = []
    if computed:
        before.append({"command": command, "pairs": computed, "minutes": round(elapsed / 60, 1),
                       "jobs": jobs, "finished": time.strftime("%Y-%m-%d %H:%M"),
                       **({"note": "interrupted"} if interrupted else {})})
    return before


def _timing(rows: list[dict[str, Any]], computed: int, elapsed: float, jobs: int,
            expected: int) -> str:
    wall = sum(r.get("seconds") or 0 for r in rows) / 60
    cpu = sum(r.get("cpu_seconds") or 0 for r in rows) / 60
    text = (f"This invocation computed {computed} pairs in {elapsed / 60:.1f} min with {jobs} "
            f"jobs; all rows add up to {wall:.1f} worker-minutes of wall time and {cpu:.1f} of "
            "CPU time (one thread per worker; CPU time does not grow when other jobs share the "
            "machine).")
    timed = sorted(r["cpu_seconds"] for r in rows if r.get("cpu_seconds"))
    if len(timed) >= 2:
        p90 = statistics.quantiles(timed, n=10)[-1]
        text += (f" CPU time per pair ({len(timed)} timed): median {statistics.median(timed):.0f} "
                 f"s, 90th percentile {p90:.0f} s, longest {timed[-1]:.0f} s.")
    if len(rows) < expected:
        text += (f" **Partial: {len(rows)} of {expected} pairs done; the same command resumes "
                 "from export_coverage.jsonl.**")
    return text


def _tasks(settings: ExportCoverageSettings, chosen: list[Candidate], heads: tuple[str, ...],
           cache: dict[Any, dict[str, Any]]) -> list[Task]:
    """One task per architecture with the heads it still lacks (or failed, to retry)."""
    def missing(c: Candidate) -> tuple[str, ...]:
        return tuple(h for h in heads if (c.name, h) not in cache or (
            settings.retry_errors and not cache[(c.name, h)]["verified"]))

    if settings.report_only:
        return []
    return [(c, missing(c), settings.opset, settings.timeout) for c in run_order(chosen)
            if missing(c)]


def export_coverage_sweep(settings: ExportCoverageSettings, command: str) -> dict[str, Any]:
    """Export and verify every missing pair, resuming from the JSONL cache, then write
    ``export_coverage.json`` / ``.md``. Returns ``{"summary", "computed", "interrupted",
    "cache"}``; an interrupt (Ctrl-C, SIGTERM) keeps the rows computed and still writes the
    report. ``command``: the command line the report records."""
    require_export()
    heads = tuple(settings.heads or coverage_heads())
    store = JsonlStore(settings.cache or settings.out_dir / "export_coverage.jsonl",
                       key=lambda r: (r["model"], r["head"]))
    chosen, n_pool = _candidates(settings)
    tasks = _tasks(settings, chosen, heads, store.load())
    run = run_sweep(export_pairs, tasks, store, jobs=settings.jobs, rows=list, start="spawn",
                    max_tasks_per_child=_MAX_TASKS_PER_CHILD, initializer=one_torch_thread,
                    total=sum(len(t[1]) for t in tasks), desc="export", unit="pair",
                    progress=not settings.no_progress)
    rows = [store.rows[(c.name, h)] for c in chosen for h in heads if (c.name, h) in store.rows]
    report = settings.out_dir / "export_coverage.json"
    meta = {**_versions(), "opset": settings.opset, "candidates": n_pool,
            "sampled": not settings.models, "selected": [c.name for c in chosen],
            "max_params": settings.max_params, "machine": describe_machine(with_load=True),
            "command": command,
            "invocations": _invocations(report, command, run.computed, run.seconds,
                                        settings.jobs, run.interrupted),
            "timing": _timing(rows, run.computed, run.seconds, settings.jobs,
                              len(chosen) * len(heads))}
    summary = summarise(rows, heads)
    write_files(settings.out_dir, {
        "export_coverage.json": {"meta": meta, "summary": summary, "records": rows},
        "export_coverage.md": render_markdown(rows, summary, heads, meta)})
    return {"summary": summary, "computed": run.computed, "interrupted": run.interrupted,
            "cache": store.path}
