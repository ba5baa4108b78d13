#!/usr/bin/env python
"""Export a swapped model to ONNX, verify it in onnxruntime against torch, time both.

    python tools/export.py resnet18 --head gap --num-classes 10 --out resnet18-gap.onnx
    python tools/export.py resnet18 --head spp:levels=1x2x4 --out resnet18-spp.onnx
    python tools/export.py vit_small_patch16_224 --head gap --timm-option dynamic_img_size=True \\
        --out vit.onnx --sizes 160 224 288
    python tools/export.py --model runs/RUN --out model.onnx --format json

The dynamo exporter is tried first, the TorchScript exporter when it fails. ``--dynamic auto``
makes the batch dynamic, and height and width too where the head and the backbone take any size.
Exit code 0 when every size the file takes matches torch, 1 when one does not, 2 for bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from _cli import CliParser, positive_float, positive_int, run
from tabulate import tabulate

import surgery
from analysis.export import (
    DEFAULT_OPSET,
    DYNAMIC_MODES,
    ExportSource,
    check_opset,
    compare_latency,
    export_onnx,
    export_verified,
    is_refused,
    require_export,
    source_from_name,
    source_from_path,
)
from analysis.training import add_model_options
from surgery.report import neighbour_sizes
from surgery.spec import SPEC_SYNTAX

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="export.py", description=__doc__,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", default=None,
                   help="a timm architecture to swap a head onto (or use --model)")
    p.add_argument("--model", type=Path, default=None, metavar="FILE_OR_RUN_DIR",
                   help="a headswap model file (surgery.save) or a fine-tuning run directory "
                        "(its best.pt; class names and mean/std from its config.json)")
    add_model_options(p, head=None, in_chans=3, num_classes=None)  # with a model name
    e = p.add_argument_group("export")
    e.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    e.add_argument("--input-size", type=positive_int, default=None,
                   help="square input size the model is built for and traced at "
                        "(default: the model's, or the size a run trained at)")
    e.add_argument("--dynamic", choices=DYNAMIC_MODES, default="auto",
                   help="auto: batch, plus height/width where the head and backbone allow; "
                        "batch; none (default auto)")
    e.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                   help=f"ONNX opset (default {DEFAULT_OPSET}; dynamo 18-23, TorchScript 7-20)")
    e.add_argument("--dynamo-budget", type=positive_float, default=None, metavar="CPU_SECONDS",
                   help="CPU seconds the dynamo exporter may take before the TorchScript "
                        "exporter is used instead (default: no limit)")
    c = p.add_argument_group("checks")
    c.add_argument("--sizes", type=positive_int, nargs="+", default=None,
                   help="input sizes to verify (default: ~0.75x, 1x and ~1.25x the input size, "
                        "e.g. 160 224 288)")
    c.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    c.add_argument("--no-bench", action="store_true", help="skip the latency comparison")
    c.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch and onnxruntime alike (default: torch's)")
    c.add_argument("--format", choices=("text", "json"), default="text")
    return p


def _source(args: argparse.Namespace) -> ExportSource:
    if (args.name is None) == (args.model is None):
        raise ValueError("give either a model name (with --head) or --model FILE_OR_RUN_DIR")
    if args.model is not None:
        given = [f for f, v in (("--head", args.head), ("--num-classes", args.num_classes),
                                ("--hidden", args.hidden), ("--dropout", args.dropout),
                                ("--timm-option", args.timm_option or None),
                                ("--checkpoint", args.checkpoint),
                                ("--pretrained", args.pretrained or None)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to a model name; a model file or run "
                             "directory already has its head and options")
        return source_from_path(args.model, args.input_size)
    if args.head is None:
        raise ValueError(f"--head is needed with a model name; choose from "
                         f"{', '.join(surgery.HEADS)} (a head spec {SPEC_SYNTAX})")
    timm_options = surgery.parse_options(args.timm_option, "--timm-option")
    surgery.check_timm_options(timm_options, "--timm-option")
    return source_from_name(args.name, args.head, num_classes=args.num_classes or 10,
                            hidden=args.hidden, dropout=args.dropout, input_size=args.input_size,
                            pretrained=args.pretrained, checkpoint=args.checkpoint,
                            in_chans=args.in_chans, **timm_options)


def _sizes(args: argparse.Namespace, source: ExportSource) -> list[int]:
    if args.sizes:
        if any(s < 8 for s in args.sizes):
            raise ValueError(f"--sizes must be >= 8 pixels, got {args.sizes}")
        return list(dict.fromkeys(args.sizes))
    h = source.input_size[0]
    return sorted({*neighbour_sizes(h, step=32 if h >= 128 else 16), h})


def export_report(args: argparse.Namespace) -> dict[str, Any]:
    """Export, verify and time as ``args`` say; the report in the JSON layout of the docs."""
    require_export(verify=not (args.no_verify and args.no_bench))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    check_opset(args.opset)
    surgery.check_writable(args.out, "--out")  # before building the model
    source = _source(args)
    sizes = _sizes(args, source)
    verify: list[dict[str, Any]] = []
    if args.no_verify:
        result = export_onnx(source, args.out, dynamic=args.dynamic, opset=args.opset,
                             dynamo_budget=args.dynamo_budget)
    else:
        result, verify = export_verified(source, args.out, sizes, dynamic=args.dynamic,
                                         opset=args.opset, dynamo_budget=args.dynamo_budget)
    latency = None if args.no_bench else compare_latency(source.model, result.path,
                                                         source.input_size, source.in_chans)
    return {
        "model": source.name,
        "head": source.head_spec or source.head,
        "onnx": str(result.path),
        "exporter": {"name": result.exporter, "fallback_reason": result.fallback_reason},
        "opset": result.opset,
        "dynamic": {"mode": args.dynamic, "axes": result.dynamic_axes,
                    "fixed_reason": result.fixed_reason},
        "inputs": result.inputs,
        "outputs": result.outputs,
        "verify": verify,
        "latency_ms": latency,
        "file_bytes": result.file_bytes,
    }


def _tensor(t: dict[str, Any]) -> str:
    return f"{t['name']}: {t['dtype']} [{', '.join(map(str, t['shape']))}]"


def _verify_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["verify     onnxruntime (CPU) vs torch (eval); pass: max |diff| <= 1e-4 x "
             "max |torch| + 1e-5"]
    for r in rows:
        size = "x".join(map(str, r["input_size"]))
        if r["ok"]:
            status = f"ok       max |diff| {r['max_abs_diff']:.2e} (relative {r['max_rel_diff']:.2e})"
        elif is_refused(r):
            status = "refused  " + r["error"].removeprefix("refused: ")
        else:
            status = f"FAILED   {r['error']}"
        lines.append(f"  {size:>9}  {status}")
    return lines


def _latency_lines(latency: dict[str, dict[str, float | None]]) -> list[str]:
    keys = list(latency["torch"])
    rows = [[who] + [latency[who][k] for k in keys] for who in ("torch", "onnxruntime")]
    rows[0][0] = "torch eager"
    table = tabulate(rows, headers=["median ms", *[f"batch {k[1:]}" for k in keys]],
                     floatfmt=".1f", missingval="n/a")
    threads = torch.get_num_threads()
    return [f"latency    this machine (CPU), {threads} thread{'s' * (threads > 1)} for both"] + [
        "  " + line for line in table.splitlines()]


def format_text(report: dict[str, Any]) -> str:
    """The report as ``tools/export.py`` prints it."""
    ex, dyn = report["exporter"], report["dynamic"]
    lines = [
        f"model      {report['model']} with the {report['head']} head",
        f"onnx       {report['onnx']} ({report['file_bytes'] / 2**20:.1f} MiB, "
        f"{report['file_bytes']:,} bytes)",
        f"exporter   {ex['name']}, opset {report['opset']}"
        + (f" (the dynamo exporter failed: {ex['fallback_reason']})" if ex["fallback_reason"] else ""),
        f"dynamic    {', '.join(dyn['axes']) or 'nothing'}"
        + (f"; fixed because {dyn['fixed_reason']}" if dyn["fixed_reason"] else ""),
        *(f"input      {_tensor(t)}" for t in report["inputs"]),
        *(f"output     {_tensor(t)}" for t in report["outputs"]),
    ]
    if report["verify"]:
        lines += _verify_lines(report["verify"])
    if report["latency_ms"]:
        lines += _latency_lines(report["latency_ms"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = export_report(args)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(format_text(report))
    failed = [r for r in report["verify"] if not r["ok"] and not is_refused(r)]
    if failed:
        print(f"export.py: {len(failed)} size(s) do not match torch; the file is written but "
              "not verified", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(main))
