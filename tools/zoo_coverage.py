#!/usr/bin/env python
"""Run every head kind over every timm architecture; write docs/zoo_coverage.{md,json}.

    python tools/zoo_coverage.py --jobs 2            # the whole zoo (resumes from the .jsonl)
    python tools/zoo_coverage.py --models 'vit_*' --out-dir /tmp/cov
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import timm
import torch
from _cli import CliParser, run
from tqdm import tqdm

from analysis.machine import describe_machine
from surgery import HEADS, check_writable, expand_model_names
from surgery.coverage import check_architecture, check_timm_max, merge_records, summarize
from surgery.coverage_report import render_markdown


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="*", default=["*"],
                   help="architectures or timm wildcards (default: all of timm.list_models())")
    p.add_argument("--heads", nargs="*", default=list(HEADS), choices=list(HEADS),
                   help="head kinds to check (default: all)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--jobs", type=int, default=2, help="worker processes")
    p.add_argument("--out-dir", type=Path, default=Path("docs"),
                   help="where zoo_coverage.md/.json (and the resumable .jsonl) go")
    p.add_argument("--fresh", action="store_true", help="ignore results of an earlier run")
    p.add_argument("--redo", nargs="*", default=[],
                   help="architectures or wildcards to check again even if an earlier run did")
    p.add_argument("--timm-max", action="store_true",
                   help="instead: check timm's own reset_classifier(global_pool='max') on every "
                        "architecture, for comparison (writes zoo_timm_max.json)")
    p.add_argument("--report-only", action="store_true",
                   help="write zoo_coverage.md/.json from the records so far, checking nothing "
                        "(an interrupted sweep: heads not checked yet are reported as such)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the architectures where some head failed in an earlier run")
    return p


def _select(patterns: list[str]) -> list[str]:
    return sorted(expand_model_names(patterns))


def _worker(args: tuple[str, list[str], int]) -> dict:
    torch.set_num_threads(1)
    name, heads, k = args
    return check_architecture(name, heads, k)


def _timm_max_worker(args: tuple[str, int]) -> dict:
    torch.set_num_threads(1)
    return check_timm_max(*args)


def _timm_max(names: list[str], args: argparse.Namespace) -> int:
    """timm's own max pooling over the same architectures: how many give the right shape."""
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, maxtasksperchild=50) as pool:
        records = sorted(tqdm(pool.imap_unordered(_timm_max_worker,
                                                  [(n, args.num_classes) for n in names]),
                              total=len(names), desc="timm global_pool='max'", unit="arch"),
                         key=lambda r: r["model"])
    ok = sum(r["ok"] for r in records)
    reasons: dict[str, int] = {}
    for r in records:
        if not r["ok"]:
            reasons[r["error"]] = reasons.get(r["error"], 0) + 1
    result = {"timm": timm.__version__, "architectures": len(records), "ok": ok,
              "command": "python tools/zoo_coverage.py --timm-max", "failure_reasons": reasons,
              "records": records}
    (args.out_dir / "zoo_timm_max.json").write_text(json.dumps(result, indent=1))
    print(f"timm reset_classifier(global_pool='max'): {ok}/{len(records)} give the right shape")
    return 0


def _earlier(partial: Path, args: argparse.Namespace) -> dict[str, dict]:
    """Records of earlier runs (the last line per model wins), minus those to run again."""
    done: dict[str, dict] = {}
    for line in partial.read_text().splitlines():
        rec = json.loads(line)
        failed = not all(r["ok"] for r in rec["heads"].values())
        redo = any(fnmatch.fnmatch(rec["model"], pat) for pat in args.redo)
        if redo or (failed and args.retry_failed):
            done.pop(rec["model"], None)
        else:
            done[rec["model"]] = rec
    return done


def _missing(record: dict | None, heads: list[str]) -> list[str]:
    """The heads an earlier record lacks (all of them without one): a new head kind is checked
    on its own, not with every head again."""
    return list(heads) if record is None else [h for h in heads if h not in record["heads"]]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = _select(args.models)
    check_writable(args.out_dir, "--out-dir", directory=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.timm_max:
        return _timm_max(names, args)
    partial = args.out_dir / "zoo_coverage.jsonl"
    done = _earlier(partial, args) if partial.exists() and not args.fresh else {}
    tasks = [(n, _missing(done.get(n), args.heads), args.num_classes) for n in names]
    tasks = [t for t in tasks if t[1] and not args.report_only]
    start = time.perf_counter()
    with partial.open("a" if not args.fresh else "w") as sink:
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.jobs, maxtasksperchild=20) as pool:
            for rec in tqdm(pool.imap_unordered(_worker, tasks), total=len(tasks),
                            desc="architectures", unit="arch"):
                rec = merge_records(done.get(rec["model"]), rec)
                done[rec["model"]] = rec
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
    elapsed = time.perf_counter() - start
    records = [done[n] for n in names if n in done]
    summary = summarize(records, args.heads)
    meta = {"timm": timm.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": describe_machine(),
            "command": "python tools/zoo_coverage.py " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:]),
            "seconds_this_run": round(elapsed, 1), "num_classes": args.num_classes,
            "worker_minutes": round(sum(r.get("seconds", 0) for r in records) / 60, 1)}
    (args.out_dir / "zoo_coverage.json").write_text(
        json.dumps({"meta": meta, "summary": summary, "records": records}, indent=1))
    timm_max = args.out_dir / "zoo_timm_max.json"
    if timm_max.exists():
        meta["timm_max"] = {k: v for k, v in json.loads(timm_max.read_text()).items()
                            if k != "records"}
    (args.out_dir / "zoo_coverage.md").write_text(render_markdown(summary, meta))
    for head, s in summary["per_head"].items():
        print(f"{head:10s} {s['ok']:5d}/{s['total']} ({s['percent']}%)")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main()))
