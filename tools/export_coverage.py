#!/usr/bin/env python
"""Export coverage: ONNX export + onnxruntime verification over a sample of the timm zoo.

    python tools/export_coverage.py --sample 100 --jobs 2        # docs/export_coverage.md/.json
    python tools/export_coverage.py --models resnet18 'vit_tiny_*' --out-dir /tmp/cov

Each architecture x head (gap, gmp, flatten, nin and the pooling heads registered after them)
is exported with the dynamo exporter (TorchScript as fallback) and verified in onnxruntime at
the default input size and about 0.75x of it. Rows are appended to a JSONL cache as they finish,
so an interrupted run, or a run with a new head, resumes: only missing pairs are computed.
Architectures run layout by layout in turn, each layout's smallest first (a run cut short has
covered every layout and the most architectures), each head under a limit of CPU seconds
(other jobs on the machine slow a pair down, not time it out).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import multiprocessing as mp
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from _cli import CliParser, positive_int, run
from tqdm import tqdm

import surgery
from analysis.export import DEFAULT_OPSET, require_export
from analysis.export.coverage import (
    LAYOUTS,
    Candidate,
    coverage_heads,
    coverage_rows,
    failure_row,
    sample_architectures,
    zoo_candidates,
)
from analysis.export.coverage_report import render_markdown, summarise
from analysis.machine import describe_machine
from analysis.runtime import CpuBudgetExceeded, cpu_budget, die_with_parent

__all__ = ["build_parser", "main", "run_order"]

Task = tuple[Candidate, tuple[str, ...], int, int]


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="export_coverage.py", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to export")
    what.add_argument("--sample", type=positive_int, default=100,
                      help="architectures in the deterministic sample (default 100)")
    what.add_argument("--models", nargs="+", default=None,
                      help="timm names or wildcards instead of the sample")
    what.add_argument("--heads", nargs="+", default=None, choices=list(surgery.HEADS),
                      metavar="HEAD", help="head kinds (default: gap gmp flatten nin and every "
                                           "pooling head registered after them)")
    what.add_argument("--max-params", type=float, default=300e6,
                      help="largest backbone in parameters (default 300e6)")
    what.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    src = p.add_argument_group("where the zoo facts come from")
    src.add_argument("--zoo-table", type=Path, default=Path("docs/zoo_table.csv"),
                     help="backbone parameters per architecture")
    src.add_argument("--zoo-coverage", type=Path, default=Path("docs/zoo_coverage.json"),
                     help="feature layout per architecture")
    runs = p.add_argument_group("running")
    runs.add_argument("--jobs", type=positive_int, default=2, help="worker processes (default 2)")
    runs.add_argument("--timeout", type=positive_int, default=900,
                      help="CPU seconds per architecture x head (the worker's own CPU time, so "
                           "a machine loaded by other jobs causes no timeouts; a dynamo export past a "
                           "third of it falls back to TorchScript; default 900)")
    runs.add_argument("--cache", type=Path, default=None,
                      help="JSONL of finished rows (default OUT_DIR/export_coverage.jsonl)")
    runs.add_argument("--retry-errors", action="store_true", help="redo pairs that failed")
    runs.add_argument("--no-progress", action="store_true", help="no progress bar")
    runs.add_argument("--report-only", action="store_true",
                      help="write the report from the cached rows, computing nothing (a "
                           "partial report while a long run goes on)")
    out = p.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=Path("docs"),
                     help="where export_coverage.md/.json go (default docs)")
    out.add_argument("--command", default=None, help="command recorded in the report")
    return p


def _work(task: Task) -> list[dict[str, Any]]:
    """Worker: one architecture, each head under its own CPU-time limit (SIGPROF)."""
    import torch

    candidate, heads, opset, timeout = task
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    todo = list(heads)
    while todo:
        rows_iter = coverage_rows(candidate.name, tuple(todo), opset=opset,
                                  dynamo_budget=timeout / 3)
        try:
            while todo:
                cpu = time.process_time()  # unlike wall time, not inflated by other jobs
                with cpu_budget(timeout):
                    rows.append(next(rows_iter))
                rows[-1]["cpu_seconds"] = round(time.process_time() - cpu, 1)
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


def _read_cache(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Finished rows by (model, head); later lines win; a line cut short is skipped."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[(row["model"], row["head"])] = row
    return rows


def _pool(tasks: Sequence[Any], jobs: int, work: Callable[[Any], Any] = _work) -> Iterator[Any]:
    """``work`` over ``tasks`` in ``jobs`` processes, results as they finish. The workers die
    with this process, however it ends (a SIGTERM to it alone would otherwise leave them
    exporting on)."""
    if jobs <= 1:
        yield from map(work, tasks)
        return
    with mp.get_context("spawn").Pool(jobs, maxtasksperchild=4, initializer=die_with_parent,
                                      initargs=(os.getpid(),)) as pool:
        yield from pool.imap_unordered(work, tasks, chunksize=1)


def _candidates(args: argparse.Namespace) -> tuple[list[Candidate], int]:
    pool = zoo_candidates(args.zoo_table, args.zoo_coverage, args.max_params)
    if args.models:
        names = set(surgery.expand_model_names(args.models))
        chosen = [c for c in pool if c.name in names]
        unknown = sorted(names - {c.name for c in chosen})
        chosen += [Candidate(n, "?", 0, "?") for n in unknown]
        return sorted(chosen, key=lambda c: c.name), len(pool)
    return sample_architectures(pool, args.sample), len(pool)


def _versions() -> dict[str, str]:
    return {k: importlib.metadata.version(k) for k in ("onnx", "onnxscript", "onnxruntime")}


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], heads: Sequence[str],
           meta: dict[str, Any]) -> dict[str, Any]:
    summary = summarise(rows, heads)
    surgery.write_json(args.out_dir / "export_coverage.json",
                       {"meta": meta, "summary": summary, "records": rows})
    text = render_markdown(rows, summary, heads, meta)
    surgery.atomic_write_bytes(args.out_dir / "export_coverage.md", text.encode())
    return summary


def _compute(tasks: list[Task], jobs: int, cache_path: Path, progress: bool,
             cache: dict[tuple[str, str], dict[str, Any]]) -> tuple[int, bool]:
    """Run the tasks, appending each finished row to the JSONL cache as it comes. Returns the
    rows written and whether an interrupt (Ctrl-C, SIGTERM) stopped it: the rows written
    before stay, and the architectures under way are computed again by a resumed run."""
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with cache_path.open("a") as sink, tqdm(total=sum(len(t[1]) for t in tasks), unit="pair",
                                            desc="export", disable=not progress,
                                            file=sys.stderr) as bar:
        results = _pool(tasks, jobs)
        try:
            for rows in results:
                for r in rows:
                    cache[(r["model"], r["head"])] = r
                    sink.write(json.dumps(r) + "\n")
                sink.flush()
                written += len(rows)
                bar.update(len(rows))
        except KeyboardInterrupt:
            return written, True
        finally:
            results.close()  # stops the pool's workers now, not when the generator is collected
    return written, False


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt  # SIGTERM (a scheduler's stop, kill) ends the run as Ctrl-C does


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    require_export()
    heads = tuple(args.heads or coverage_heads())
    cache_path = args.cache or args.out_dir / "export_coverage.jsonl"
    chosen, n_pool = _candidates(args)
    cache = _read_cache(cache_path)

    def missing(c: Candidate) -> tuple[str, ...]:
        return tuple(h for h in heads if (c.name, h) not in cache or (
            args.retry_errors and not cache[(c.name, h)]["verified"]))

    tasks = [] if args.report_only else [(c, missing(c), args.opset, args.timeout)
                                         for c in run_order(chosen) if missing(c)]
    start = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        computed, interrupted = _compute(tasks, args.jobs, cache_path, not args.no_progress, cache)
    finally:
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.perf_counter() - start
    rows = [cache[(c.name, h)] for c in chosen for h in heads if (c.name, h) in cache]
    command = args.command or "python tools/export_coverage.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    meta = {**_versions(), "opset": args.opset, "candidates": n_pool, "sampled": not args.models,
            "selected": [c.name for c in chosen],
            "max_params": args.max_params, "machine": describe_machine(with_load=True),
            "command": command,
            "invocations": _invocations(args.out_dir / "export_coverage.json", command, computed,
                                        elapsed, args.jobs, interrupted),
            "timing": _timing(rows, computed, elapsed, args.jobs, len(chosen) * len(heads))}
    summary = _write(args, rows, heads, meta)
    t = summary["total"]
    print(f"{t['verified']}/{t['applicable']} pairs exported and verified "
          f"({t['percent_verified']:.1f}%), {t['dynamic_hw']} with dynamic H and W "
          f"({t['percent_dynamic_hw']:.1f}%) -> {args.out_dir / 'export_coverage.md'}")
    if interrupted:
        print(f"interrupted: the {computed} pairs computed are in {cache_path} and the report; "
              "the same command resumes", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
