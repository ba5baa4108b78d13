#!/usr/bin/env python
"""Loading an image folder: today's single-process decode vs the decode cache, and a study on it.

    python benchmarks/data_load.py --images 10000 --img-size 224 --study-runs 6

Generates a photo-like folder (``--images`` JPEGs of 500x375, 10 classes, Fashion-MNIST items
tinted and laid on textured backgrounds, or random shapes without Fashion-MNIST; written by
analysis.data.write_photo_folder) in a temporary directory (or ``--folder``), then measures in
one process:
  today     the single-process decode image folders had before the decode cache (PIL: open,
            convert, squash to --img-size, one tensor in memory), as the reader did it;
  first     the first load through the decode cache: every core decodes into the memory-mapped
            array (a fresh cache directory), then the splits are drawn;
  reopen    the image-folder reader again (the folder scanned and matched against the cache's
            manifest, the array opened memory-mapped), the cache complete and the page cache
            warm (median of 3);
  study     ``--study-runs`` runs of a head comparison study (analysis.studies, one worker
            process running them in turn, as tools/compare_heads.py --jobs 1) on the folder; the
            study process opens (here: finds complete) the cache before its worker starts, and
            each run records the seconds its own data load took (``config.json``:
            resolved.data.load_s).
Wall and CPU seconds (this process and its children) are recorded for each phase, with the load
average, since other jobs may share the machine. Figures go to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.data import DATASETS, load_dataset, write_photo_folder  # noqa: E402
from analysis.machine import describe_machine  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", type=int, default=20_000, help="JPEGs in the generated folder")
    p.add_argument("--img-size", type=int, default=224, help="decode (and training) size, px")
    p.add_argument("--folder", type=Path, default=None,
                   help="generate into (or reuse) this folder instead of a temporary one")
    p.add_argument("--baseline-images", type=int, default=None,
                   help="time today's decode on this many images and scale up (default: all)")
    p.add_argument("--study-runs", type=int, default=6, help="runs of the study (0: no study)")
    p.add_argument("--study-model", default="test_resnet")
    p.add_argument("--study-train-size", type=int, default=500,
                   help="training images per run (200 validation, 500 test)")
    p.add_argument("--study-epochs", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "data_load.md")
    return p


# ---------------------------------------------------------------- the phases
class _Clock:
    """Wall and CPU seconds (this process and its waited-for children) of a block, and the load."""

    def __enter__(self) -> _Clock:
        self.t0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = self._cpu() - self.c0
        self.load = os.getloadavg()[0]

    @staticmethod
    def _cpu() -> float:
        own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    def row(self, **extra: Any) -> dict[str, Any]:
        # at least 0.01 s: a phase faster than the rounding (a tiny folder) still divides
        return {"wall_s": max(round(self.wall, 2), 0.01), "cpu_s": round(self.cpu, 2),
                "load_1min": round(self.load, 1), **extra}


def today_decode(files: list[Path], size: int) -> Any:
    """The image-folder read before the decode cache: one process, PIL convert + squash, the
    bytes into a tensor per image, one stack at the end (as analysis.data.readers did)."""
    import torch
    from PIL import Image

    xs = []
    for path in files:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            data = im.tobytes()
        xs.append(torch.frombuffer(bytearray(data), dtype=torch.uint8)
                  .reshape(size, size, -1).permute(2, 0, 1))
    return torch.stack(xs)


def _rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_today(folder: Path, size: int, limit: int | None) -> dict[str, Any]:
    files = sorted(folder.rglob("*.jpg"))
    part = files[:limit] if limit else files
    before = _rss_anon_mib()
    with _Clock() as c:
        x = today_decode(part, size)
    held = _rss_anon_mib() - before
    del x
    scale = len(files) / len(part)
    return c.row(images=len(files), timed_images=len(part), wall_s=round(c.wall * scale, 2),
                 cpu_s=round(c.cpu * scale, 2), img_per_s=round(len(part) / c.wall, 1),
                 rss_anon_mib=round(held * scale, 1))


def measure_cache(folder: Path, size: int, cache: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The first load (decoding into a fresh cache) and reopens of the complete cache."""
    options = dict(data_dir=folder, image_size=size, cache_dir=cache, val_size=0.1)
    before = _rss_anon_mib()
    with _Clock() as c:
        data = load_dataset("imagefolder", **options)
    first = c.row(images=len(data.train_y) + len(data.val_y) + len(data.test_y),
                  img_per_s=round(len(data.train_y) / c.wall, 1), workers=os.cpu_count(),
                  rss_anon_mib=round(_rss_anon_mib() - before, 1))
    del data
    rounds = []
    for _ in range(3):  # the reader itself: load_dataset keeps the last data set it read
        with _Clock() as c:
            DATASETS["imagefolder"](folder, False, image_size=size, cache_dir=cache)
        rounds.append(c.row())
    reopen = dict(min(rounds, key=lambda r: abs(r["wall_s"] - statistics.median(
        x["wall_s"] for x in rounds))), rounds=[r["wall_s"] for r in rounds])
    return first, reopen


def measure_study(folder: Path, size: int, cache: Path, work: Path, images: int,
                  args: argparse.Namespace) -> dict[str, Any]:
    """A head comparison study of ``--study-runs`` runs on the folder, in one worker process (as
    tools/compare_heads.py --jobs 1); each run's data load is read from its config.json."""
    from analysis.studies import StudySpec, run_study
    from surgery import parse_head

    heads = tuple(parse_head(h) for h in ("gap", "gmp", "gapmp"))[:args.study_runs]
    seeds = tuple(range(-(-args.study_runs // len(heads))))
    base = dict(dataset="imagefolder", data_dir=str(folder), img_size=size,
                epochs=args.study_epochs, batch_size=64, val_size=min(200, images // 10),
                data_cache_dir=str(cache))
    spec = StudySpec((args.study_model,), heads, seeds, (args.study_train_size,), base,
                     robust_sizes=(size,), robust_images=200, test_size=500)
    with _Clock() as c:
        result = run_study(spec, work / "study", jobs=1, progress=False)
    loads = []
    for name in result["ran"]:
        record = json.loads((work / "study" / "runs" / name / "config.json").read_text())
        loads.append(float(record["resolved"]["data"]["load_s"]))
    parent = result["timing"]["data_load_s"]
    total = sum(loads) + parent
    return c.row(runs=len(result["ran"]), failed=[f for f, _ in result["failed"]],
                 model=args.study_model, train_size=args.study_train_size,
                 epochs=args.study_epochs, data_load_s=round(total, 2),
                 parent_load_s=round(parent, 2), overhead_s=round(result["timing"]["overhead_s"], 2),
                 run_load_s=[round(x, 2) for x in loads], share=round(total / c.wall, 4))


# ---------------------------------------------------------------- the report
def _targets(r: dict[str, Any]) -> list[list[Any]]:
    today, first, reopen = r["today"], r["first"], r["reopen"]
    rows = [["first decode >= 1.6x faster than today's", f"{today['wall_s'] / first['wall_s']:.2f}x",
             today["wall_s"] / first["wall_s"] >= 1.6],
            ["warm reopen >= 20x faster than today's decode",
             f"{today['wall_s'] / reopen['wall_s']:.0f}x", today["wall_s"] / reopen["wall_s"] >= 20]]
    if r.get("study"):
        s = r["study"]
        rows.append([f"{s['runs']}-run study < 10% of its wall time in data loading",
                     f"{100 * s['share']:.2f}%", s["share"] < 0.10])
    return rows


def _phase_rows(r: dict[str, Any]) -> list[list[Any]]:
    today = r["today"]["wall_s"]
    names = {"today": "today: one process, PIL, into memory",
             "first": "first load: decode cache, every core",
             "reopen": "reopen: cache complete, page cache warm"}
    return [[names[k], r[k]["wall_s"], r[k]["cpu_s"], round(r["images"] / r[k]["wall_s"], 1),
             f"{today / r[k]['wall_s']:.2f}x", r[k].get("rss_anon_mib", ""), r[k]["load_1min"]]
            for k in ("today", "first", "reopen")]


def markdown(r: dict[str, Any]) -> str:
    from tabulate import tabulate

    phases = tabulate(_phase_rows(r), headers=["phase", "wall s", "CPU s", "img/s", "vs today",
                                               "RssAnon MiB", "load (1 min)"],
                      tablefmt="github")
    targets = tabulate(_targets(r), headers=["target", "measured", "met"], tablefmt="github")
    text = (f"# Loading an image folder: today's decode vs the decode cache\n\nCommand: "
            f"`{r['command']}`\n\nMachine: {r['machine_start']} at the start; {r['machine_end']} "
            f"at the end. The machine is shared with other engineers' jobs: the load average "
            f"(runnable processes; 2 cores) is recorded for each phase.\n\nData: {r['images']} "
            f"JPEGs of 500x375 ({r['what']}; {r['folder_mib']:.0f} MiB), decoded to "
            f"{r['img_size']} px.\n\n{phases}\n\n{targets}\n")
    if r.get("study"):
        s = r["study"]
        text += (f"\nStudy: {s['runs']} runs ({s['model']}, gap / gmp / gapmp x seeds, "
                 f"{s['train_size']} training images, {s['epochs']} epoch(s), 200 validation, 500 "
                 f"test and 200 robustness images, batch 64, one worker process) "
                 f"in {s['wall_s']:.0f} s; data loading {s['data_load_s']:.1f} s in all "
                 f"({s['parent_load_s']:.1f} s in the study process before the runs, then per "
                 f"run: {', '.join(map(str, s['run_load_s']))} s). With today's decode every run "
                 f"would decode the folder itself: about {r['study_today_share']:.0%} of the "
                 f"study. Counting the first decode as part of the study: "
                 f"{r['study_first_share']:.1%}.\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = "python benchmarks/data_load.py " + " ".join(sys.argv[1:] if argv is None else argv)
    work = Path(tempfile.mkdtemp(prefix="headswap-data-load-"))
    folder = args.folder or work / "photos"
    r: dict[str, Any] = {"command": command.strip(), "img_size": args.img_size,
                         "machine_start": describe_machine(with_load=True)}
    try:
        made = write_photo_folder(folder, args.images)
        r["what"], r["images"], r["folder_mib"] = made.what, made.images, made.bytes / 2**20
        r["today"] = measure_today(folder, args.img_size, args.baseline_images)
        r["first"], r["reopen"] = measure_cache(folder, args.img_size, work / "cache")
        if args.study_runs:
            r["study"] = s = measure_study(folder, args.img_size, work / "cache", work, r["images"],
                                             args)
            today_total = s["runs"] * r["today"]["wall_s"]
            r["study_today_share"] = today_total / (s["wall_s"] - s["data_load_s"] + today_total)
            r["study_first_share"] = ((r["first"]["wall_s"] + s["data_load_s"])
                                      / (r["first"]["wall_s"] + s["wall_s"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the cache, the study (and a generated folder)
    r["machine_end"] = describe_machine(with_load=True)
    text = markdown(r)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
