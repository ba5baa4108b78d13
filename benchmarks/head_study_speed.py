#!/usr/bin/env python
"""A linear-probe head study with and without the feature cache, in one process.

    python benchmarks/head_study_speed.py [--threads 1] [--uncached-runs 1]

The grid: resnet18 at 64 px on Fashion-MNIST, 4,096 training images per seed (validation drawn
from a fixed pool of 4,551), heads gap gmp gapmp flatten nin original x seeds 0 1 2 x 10
epochs, tested on a fixed 2,000-image subset of the test split; the backbone's weights come
from one file (random initialisation, seed 0, unless --checkpoint), so every seed shares them.

  cached    the study as tools/compare_heads.py runs it (in-process): features extracted once
            (timed: the extraction share), then all 18 runs train their heads on them;
  uncached  the same runs with --feature-cache off: the backbone runs every step. They cost the
            same whatever the head, so --uncached-runs of them (default 1: gap, seed 0) are
            timed and the total is scaled to 18 runs; the report says so and shows each
            measured run and the per-epoch spread.

Reported: wall times, the ratio, the extraction share, peak memory (RSS sampled every 0.2 s)
of each half, the load average before and after (the machine may be shared). Written to
docs/benchmarks/head_study_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.features import clear_memory  # noqa: E402
from analysis.machine import describe_machine, machine_info  # noqa: E402
from analysis.reporting import format_table  # noqa: E402
from analysis.studies import StudySpec, pool_for, run_study  # noqa: E402
from surgery import parse_head  # noqa: E402

HEADS = ("gap", "gmp", "gapmp", "flatten", "nin", "original")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=4096)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--heads", nargs="+", default=list(HEADS))
    p.add_argument("--uncached-runs", type=int, default=1,
                   help="uncached runs to time (head x seed in grid order), scaled to the grid")
    p.add_argument("--checkpoint", default=None,
                   help="backbone weights (default: random initialisation, seed 0, saved once)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST location")
    p.add_argument("--work", type=Path, default=None, help="run directories (default: a temp dir)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "head_study_speed.md")
    return p


class PeakRss:
    """Peak resident memory (MiB) of this process while the block runs, sampled every 0.2 s."""

    def __enter__(self) -> PeakRss:
        self.peak, self._stop = 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            with open("/proc/self/statm") as f:
                self.peak = max(self.peak, int(f.read().split()[1]) * page / 2**20)
            if self._stop.wait(0.2):
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _spec(args: argparse.Namespace, heads: list[str], seeds: list[int], cache: str,
          checkpoint: str) -> StudySpec:
    pool, n_val = pool_for(args.train_size, 0.1)
    base = {"dataset": "fashion-mnist", "data_dir": args.data_dir, "img_size": args.img_size,
            "regime": "linear-probe", "epochs": args.epochs, "checkpoint": checkpoint,
            "pool_size": pool, "val_size": n_val, "feature_cache": cache}
    return StudySpec((args.model,), tuple(parse_head(h) for h in heads), tuple(seeds),
                     (args.train_size,), base, test_size=args.test_size, robustness=False)


def _cached_half(args: argparse.Namespace, work: Path, checkpoint: str) -> dict[str, Any]:
    clear_memory()
    with PeakRss() as rss:
        t0 = time.perf_counter()
        result = run_study(_spec(args, args.heads, args.seeds, "auto", checkpoint),
                           work / "cached", jobs=0, progress=True)
        wall = time.perf_counter() - t0
    runs = result["report"]["meta"]["runs"]
    extract = sum(c["extract_s"] for c in result["feature_caches"])
    times = [json.loads((work / "cached" / "runs" / n / "summary.json").read_text())["time_s"]
             for n in result["ran"]]
    return {"wall_s": wall, "runs": runs, "extract_s": extract,
            "extract_share": extract / wall, "peak_rss_mib": rss.peak,
            "images_extracted": sum(c["images"] for c in result["feature_caches"]),
            "run_time_s": {"min": min(times), "median": statistics.median(times),
                           "max": max(times)}}


def _uncached_half(args: argparse.Namespace, work: Path, checkpoint: str) -> dict[str, Any]:
    grid = [(h, s) for s in args.seeds for h in args.heads][: args.uncached_runs]
    measured = []
    with PeakRss() as rss:
        for head, seed in grid:
            t0 = time.perf_counter()
            result = run_study(_spec(args, [head], [seed], "off", checkpoint),
                               work / f"uncached-{head}-s{seed}", jobs=0, progress=True)
            wall = time.perf_counter() - t0
            run_dir = work / f"uncached-{head}-s{seed}" / "runs" / result["ran"][0]
            epochs = [json.loads(x)["epoch_time_s"]
                      for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            measured.append({"head": head, "seed": seed, "wall_s": wall,
                             "epoch_s_min": min(epochs), "epoch_s_max": max(epochs)})
    per_run = statistics.mean(m["wall_s"] for m in measured)
    total_runs = len(args.heads) * len(args.seeds)
    return {"measured": measured, "per_run_s": per_run, "runs_scaled_to": total_runs,
            "wall_s": per_run * total_runs, "peak_rss_mib": rss.peak}


def _report(args: argparse.Namespace, cached: dict[str, Any], uncached: dict[str, Any],
            command: str, loads: tuple[str, str], checkpoint_note: str) -> str:
    ratio = uncached["wall_s"] / cached["wall_s"]
    fastest = min(m["epoch_s_min"] for m in uncached["measured"])
    floor = fastest * args.epochs * uncached["runs_scaled_to"] / cached["wall_s"]
    rows = [{"": "cached (whole grid)", "runs": cached["runs"], "wall s": cached["wall_s"],
             "extraction s": cached["extract_s"],
             "extraction share": f"{100 * cached['extract_share']:.0f}%",
             "peak RSS MiB": cached["peak_rss_mib"]},
            {"": f"uncached ({len(uncached['measured'])} run(s) measured, x "
                 f"{uncached['runs_scaled_to'] / len(uncached['measured']):g})",
             "runs": uncached["runs_scaled_to"], "wall s": uncached["wall_s"],
             "extraction s": None, "extraction share": None,
             "peak RSS MiB": uncached["peak_rss_mib"]}]
    measured = [{"uncached run": f"{m['head']} seed {m['seed']}", "wall s": m["wall_s"],
                 "epoch s min": m["epoch_s_min"], "epoch s max": m["epoch_s_max"]}
                for m in uncached["measured"]]
    rt = cached["run_time_s"]
    return "\n".join([
        "# Head study speed: the feature cache against running the backbone every step", "",
        f"Command: `{command}`", "",
        f"Machine: {describe_machine()}; load average {loads[0]} before and {loads[1]} after "
        "(1, 5, 15 min; the machine is shared with other engineers' jobs, which slow both "
        "halves)", "",
        f"Grid: {args.model} at {args.img_size} px, linear probe, {args.train_size} "
        f"Fashion-MNIST training images per seed, heads {' '.join(args.heads)} x seeds "
        f"{' '.join(map(str, args.seeds))} x {args.epochs} epochs, tested on {args.test_size} "
        f"test images; {checkpoint_note}.", "",
        format_table(rows, floatfmt=".1f"), "",
        f"**{ratio:.1f}x faster with the cache** (uncached wall time / cached wall time). "
        f"Counting every uncached epoch at the fastest one measured ({fastest:.1f} s), the "
        f"least that other load on the machine can have added: {floor:.1f}x.", "",
        f"The cached grid extracted {cached['images_extracted']:,} images once (the seeds' "
        "training subsets and validation splits, all drawn from one pool, and the test subset), "
        f"then trained {cached['runs']} heads: per run {rt['min']:.1f} s to {rt['max']:.1f} s "
        f"(median {rt['median']:.1f} s; training, evaluation and checkpoints, from "
        "summary.json).", "",
        "The uncached runs cost the same for every head (the backbone dominates), so the "
        "uncached total is the mean of the measured runs times the grid's "
        f"{uncached['runs_scaled_to']} runs:", "",
        format_table(measured, floatfmt=".1f"), ""])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/head_study_speed.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="head_study_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, note = args.checkpoint, f"backbone weights from {args.checkpoint}"
    if checkpoint is None:
        import timm

        torch.manual_seed(0)
        checkpoint = str(work / f"{args.model}-random-seed0.pth")
        torch.save(timm.create_model(args.model).state_dict(), checkpoint)
        note = ("backbone weights: timm's random initialisation (seed 0) saved to a file, so "
                "all seeds share one backbone (no pretrained weights can be downloaded here)")
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached = _cached_half(args, work, checkpoint)
        uncached = _uncached_half(args, work, checkpoint)
    load_after = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = _report(args, cached, uncached, command, (load_before, load_after), note)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    record = {"command": command, "machine": machine_info(), "threads": torch.get_num_threads(),
              "load_before": load_before, "load_after": load_after, "cached": cached,
              "uncached": uncached, "ratio": uncached["wall_s"] / cached["wall_s"]}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
