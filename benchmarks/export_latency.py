#!/usr/bin/env python
"""Latency of torch eager against onnxruntime for a few models and their heads, side by side.

    python benchmarks/export_latency.py --models resnet50 mobilenetv3_large_100 \\
        vit_small_patch16_224:dynamic_img_size=True --heads gap gmp flatten nin

Each model x head is exported to ONNX as tools/export.py does it (dynamo exporter first,
TorchScript as fallback, dynamic sizes where the head and backbone allow, verified in
onnxruntime at the built size), then timed at batch 1 and batch 8 at the built size with
analysis.export.compare_latency: torch (eval, no grad) and onnxruntime (CPU, the same number of
threads) alternate per batch size, and ``--rounds`` such passes are taken; the median over the
rounds is reported, so that other load on the machine hits both alike. Random weights (seed 0);
latency does not depend on their values. Figures go to docs/benchmarks/export_latency.md/.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tabulate import tabulate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import surgery  # noqa: E402
from analysis.export import compare_latency, export_verified, source_from_name  # noqa: E402
from analysis.machine import describe_machine  # noqa: E402

DEFAULT_MODELS = ["resnet50", "mobilenetv3_large_100", "vit_small_patch16_224:dynamic_img_size=True"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                   help="timm names, each optionally with timm options: NAME:KEY=VALUE:...")
    p.add_argument("--heads", nargs="+", default=["gap", "gmp", "flatten", "nin"],
                   choices=list(surgery.HEADS), metavar="HEAD")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3, help="passes over both runtimes (median)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per batch and pass")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before each timing")
    p.add_argument("--threads", type=int, default=None, help="threads for both (default torch's)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "export_latency.md")
    return p


def _model_spec(text: str) -> tuple[str, dict[str, Any]]:
    name, *options = text.split(":")
    return name, surgery.parse_options(options, "model option")


def _median(runs: list[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for who in runs[0]:
        out[who] = {}
        for key in runs[0][who]:
            values = [r[who][key] for r in runs if r[who][key] is not None]
            out[who][key] = statistics.median(values) if values else None
    return out


def bench_one(spec: str, head: str, args: argparse.Namespace) -> dict[str, Any]:
    """Export, verify at the built size, then ``args.rounds`` interleaved latency passes."""
    name, options = _model_spec(spec)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = source_from_name(name, head, num_classes=args.num_classes, **options)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result, rows = export_verified(source, Path(tmp) / "m.onnx", [source.input_size[0]])
        seconds = time.perf_counter() - start
        runs = [compare_latency(source.model, result.path, source.input_size, source.in_chans,
                                warmup=args.warmup, repeats=args.repeats)
                for _ in range(args.rounds)]
    return {"model": spec, "head": head, "input_size": list(source.input_size),
            "exporter": result.exporter, "dynamic_axes": result.dynamic_axes,
            "verified": rows[0]["ok"], "max_abs_diff": rows[0]["max_abs_diff"],
            "file_mib": result.file_bytes / 2**20, "export_seconds": seconds,
            "latency_ms": _median(runs)}


def _table(rows: list[dict[str, Any]]) -> str:
    def speedup(t: float | None, o: float | None) -> str:
        return f"{t / o:.2f}x" if t and o else "n/a"

    table = []
    for r in rows:
        lat = r["latency_ms"]
        t1, o1 = lat["torch"]["b1"], lat["onnxruntime"]["b1"]
        t8, o8 = lat["torch"]["b8"], lat["onnxruntime"]["b8"]
        table.append([r["model"].split(":")[0], r["head"], "x".join(map(str, r["input_size"])),
                      r["exporter"], ",".join(a[0].upper() for a in r["dynamic_axes"]),
                      "yes" if r["verified"] else "NO", t1, o1, speedup(t1, o1), t8, o8,
                      speedup(t8, o8), r["file_mib"]])
    return tabulate(table, headers=["model", "head", "input", "exporter", "dynamic", "verified",
                                    "torch b1 ms", "ORT b1 ms", "ORT speed-up", "torch b8 ms",
                                    "ORT b8 ms", "ORT speed-up", "file MiB"],
                    tablefmt="github", floatfmt=".1f")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = describe_machine(with_load=True)
    start = time.perf_counter()
    rows = [bench_one(spec, head, args) for spec in args.models for head in args.heads]
    minutes = (time.perf_counter() - start) / 60
    command = "python benchmarks/export_latency.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "# Export latency: torch eager vs onnxruntime", "",
        f"Produced by `{command}` on {machine} (load average at the start; at the end: "
        f"{describe_machine(with_load=True).rsplit('load average ', 1)[-1]}), in "
        f"{minutes:.1f} min. Median milliseconds per batch at the built input size, "
        f"{args.rounds} interleaved passes x {args.repeats} timed calls after {args.warmup} "
        f"warm-up calls, {torch.get_num_threads()} threads for both runtimes; random weights.",
        "Dynamic: the input axes the ONNX file leaves free (B batch, H height, W width).", "",
        _table(rows), ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    surgery.atomic_write_bytes(args.out, text.encode())
    surgery.write_json(args.out.with_suffix(".json"), {"command": command, "machine": machine,
                                                       "rows": rows})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
