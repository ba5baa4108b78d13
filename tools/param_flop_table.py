"""What each head costs: one row per model x head with params, GMACs and the sizes it runs at.

    python tools/param_flop_table.py resnet18 mobilenetv3_large_100 vit_small_patch16_224 \\
        --heads gap gmp flatten gem:p=3 attn:num_heads=4 spp:levels=1x2x4 --num-classes 10 \\
        --sizes 224 288 [--measure] \\
        [--format github|latex|csv|json|...] [--out FILE]

MACs follow fvcore's convention (one fused multiply-add = one; tables say GMACs), per image, at
the first ``--sizes`` entry (the model's default input size without ``--sizes``); the flatten
head is built for that size. Heads are specs with options (``gem:p=3:learn_p=0``); models accept
timm wildcards ('resnet*'). A row that fails (or a head that does not apply, such as token on a
model without a class token) says why in its ``error`` column and does not stop the others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _cli import CliParser, positive_int, run
from tqdm import tqdm

import surgery
from analysis.costs import FLOP_COUNTERS, cost_row
from analysis.machine import resolve_device
from analysis.reporting import TABLE_FORMATS, format_table
from analysis.training import add_num_classes

__all__ = ["build_parser", "main", "render"]

_HEADERS = {"params_total": "params", "params_head": "head params", "head_share_pct": "head %",
            "gmacs_total": "GMACs", "gmacs_head": "head GMACs", "input_size": "input",
            "infer_latency_ms": "ms/batch", "infer_throughput": "img/s",
            "infer_peak_mib": "peak MiB", "train_latency_ms": "train ms/step",
            "train_throughput": "train img/s", "train_peak_mib": "train peak MiB"}


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="param_flop_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="timm model names or wildcards ('resnet*')")
    what = parser.add_argument_group("what to compare")
    what.add_argument("--heads", nargs="+", default=["gap", "gmp", "flatten"], metavar="SPEC",
                      help=f"heads, each {surgery.spec_help()} (default: gap gmp flatten)")
    add_num_classes(what, 1000)
    what.add_argument("--sizes", nargs="+", type=positive_int, default=None, metavar="PX",
                      help="input sizes to try; the first is the one counted and the one the "
                           "flatten head is built for (default: the model's own)")
    what.add_argument("--counter", choices=list(FLOP_COUNTERS), default="fvcore",
                      help="MAC counter (default: fvcore; torch runs on the meta device)")
    meas = parser.add_argument_group("measuring (opt-in)")
    meas.add_argument("--measure", action="store_true",
                      help="also time inference and one training step (median latency, img/s, "
                           "peak memory)")
    meas.add_argument("--batch-size", type=positive_int, default=1, help="batch for --measure")
    meas.add_argument("--device", default="cpu",
                      help="device for --measure: cpu, cuda, cuda:1 or auto (default: cpu)")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=TABLE_FORMATS, default="github", metavar="FORMAT",
                     help="csv, json or any tabulate format (github, latex, ...; default github)")
    out.add_argument("--out", type=Path, default=None, help="write the table to FILE")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--strict", action="store_true", help="exit 1 if any row failed")
    return parser


def _display_rows(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the flat formats: sizes as columns, size errors folded into ``notes``."""
    shown = []
    for row in rows:
        r = {k: v for k, v in row.items() if k not in ("size_errors", "error")}
        notes = [f"{s}px: {msg}" for s, msg in row["size_errors"].items()]
        r["notes"] = "; ".join(([row["error"]] if row["error"] else []) + notes) or None
        shown.append(r)
    columns = list(dict.fromkeys(k if not isinstance(v, dict) else f"{k}@{s}"
                                 for r in shown for k, v in r.items()
                                 for s in (v if isinstance(v, dict) else [None])))
    return shown, columns


def render(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """The table text: JSON rows as they are; CSV and tabulate formats flattened."""
    if fmt == "json":
        return format_table(rows, "json")
    shown, columns = _display_rows(rows)
    if fmt == "csv":
        return format_table(shown, "csv", columns)
    return format_table(shown, fmt, columns, headers=_HEADERS, floatfmt=".4g")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is not None:
        surgery.check_writable(args.out, "--out")
    names = surgery.expand_model_names(args.models)
    try:
        heads = [str(surgery.parse_head(h)) for h in args.heads]  # canonical: gem:learn_p=0
    except ValueError as err:
        raise ValueError(f"--heads: {err}") from None
    # a device that cannot work is one error up front, not the same error in every row
    device = str(resolve_device(args.device)) if args.measure else args.device
    jobs = [(n, h) for n in names for h in heads]
    rows = [cost_row(n, h, args.num_classes, args.sizes, args.counter, args.measure,
                      args.batch_size, device)
            for n, h in tqdm(jobs, desc="rows", unit="row", disable=args.no_progress,
                             file=sys.stderr)]
    text = render(rows, args.format)
    if args.out is not None:
        try:
            surgery.atomic_write_bytes(args.out, (text.rstrip("\n") + "\n").encode())
        except OSError as err:
            raise ValueError(f"cannot write {args.out}: {err}") from None
        print(f"wrote {len(rows)} rows to {args.out}")
    else:
        print(text)
    return 1 if args.strict and any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(run(main))
