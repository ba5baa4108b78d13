"""What each head costs: one row per model x head with params, GMACs and the sizes it runs at.

    python tools/param_flop_table.py resnet18 mobilenetv3_large_100 vit_small_patch16_224 \\
        --heads gap gmp flatten --num-classes 10 --sizes 224 288 [--measure] \\
        [--format github|latex|csv|json|...] [--out FILE]

MACs follow fvcore's convention (one fused multiply-add = one; tables say GMACs), per image, at
the first ``--sizes`` entry (the model's default input size without ``--sizes``); the flatten
head is built for that size. Models accept timm wildcards ('resnet*'). A row that fails says why
in its ``error`` column and does not stop the others.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import timm
import torch
from tqdm import tqdm

import surgery
from analysis.costs import FLOP_COUNTERS, count_flops, count_params, measure
from analysis.reporting import TABLE_FORMATS, format_table

__all__ = ["build_parser", "main", "expand_models", "table_row"]

_MEASURE_KEYS = ("infer_latency_ms", "infer_throughput", "infer_peak_mib", "train_latency_ms",
                 "train_throughput", "train_peak_mib")
_HEADERS = {"params_total": "params", "params_head": "head params", "head_share_pct": "head %",
            "gmacs_total": "GMACs", "gmacs_head": "head GMACs", "input_size": "input",
            "infer_latency_ms": "ms/batch", "infer_throughput": "img/s",
            "infer_peak_mib": "peak MiB", "train_latency_ms": "train ms/step",
            "train_throughput": "train img/s", "train_peak_mib": "train peak MiB"}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: message`` on stderr, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="param_flop_table.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="timm model names or wildcards ('resnet*')")
    what = parser.add_argument_group("what to compare")
    what.add_argument("--heads", nargs="+", default=["gap", "gmp", "flatten"],
                      choices=list(surgery.HEADS), metavar="HEAD",
                      help=f"head kinds, from: {', '.join(surgery.HEADS)} (default: gap gmp flatten)")
    what.add_argument("--num-classes", type=_positive_int, default=1000,
                      help="classes of the new head (default: 1000)")
    what.add_argument("--sizes", nargs="+", type=_positive_int, default=None, metavar="PX",
                      help="input sizes to try; the first is the one counted and the one the "
                           "flatten head is built for (default: the model's own)")
    what.add_argument("--counter", choices=list(FLOP_COUNTERS), default="fvcore",
                      help="MAC counter (default: fvcore; torch runs on the meta device)")
    meas = parser.add_argument_group("measuring (opt-in)")
    meas.add_argument("--measure", action="store_true",
                      help="also time inference and one training step (median latency, img/s, "
                           "peak memory)")
    meas.add_argument("--batch-size", type=_positive_int, default=1, help="batch for --measure")
    meas.add_argument("--device", default="cpu", help="device for --measure (default: cpu)")
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=TABLE_FORMATS, default="github", metavar="FORMAT",
                     help="csv, json or any tabulate format (github, latex, ...; default github)")
    out.add_argument("--out", type=Path, default=None, help="write the table to FILE")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--strict", action="store_true", help="exit 1 if any row failed")
    return parser


def expand_models(patterns: Sequence[str]) -> list[str]:
    """timm names and wildcards -> architecture names, in order, without repeats.

    Raises ValueError naming the closest models for a name timm does not know.
    """
    names: dict[str, None] = {}
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            found = timm.list_models(pattern)
            if not found:
                raise ValueError(f"no timm model matches {pattern!r}")
            names.update(dict.fromkeys(found))
        elif timm.is_model(pattern):
            names[pattern] = None
        else:
            close = surgery.closest_model_names(pattern)
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown model {pattern!r}{hint}")
    return list(names)


def _runs_at(model: torch.nn.Module, chw: tuple[int, ...], device: torch.device) -> str | None:
    """None if ``model`` runs on a (channels, height, width) input, else why not (one line)."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, *chw, device=device))
    except Exception as err:  # noqa: BLE001 - any failure is the answer
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def table_row(name: str, head: str, num_classes: int, sizes: Sequence[int] | None,
              counter: str = "fvcore", do_measure: bool = False, batch_size: int = 1,
              device: str = "cpu") -> dict[str, Any]:
    """One table row (plain dict, the JSON object) for ``name`` with ``head``; never raises.

    Counted at ``sizes[0]`` (the model's default input size when ``sizes`` is empty), which is
    also the size the flatten head is built for; every size is then tried with a forward pass.
    """
    sizes = list(sizes or [])
    base = sizes[0] if sizes else None
    row: dict[str, Any] = {"model": name, "head": head, "input_size": base,
                           "params_total": None, "params_head": None, "head_share_pct": None,
                           "gmacs_total": None, "gmacs_head": None,
                           "sizes": {s: False for s in sizes}, "size_errors": {}, "error": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx = torch.device("meta") if counter == "torch" else torch.device("cpu")
            with ctx:
                model = surgery.swap_head(name, head=head, num_classes=num_classes,
                                          input_size=base)
            model.eval()
            hw = tuple(model.features.input_size)
            chw = (int(model.recipe.get("in_chans", 3)), *hw)
            if base is None:  # the model's own size
                base = hw[0] if hw[0] == hw[1] else "x".join(map(str, hw))
                row["input_size"], row["sizes"], sizes = base, {base: False}, [base]
            params = count_params(model)
            macs = count_flops(model, chw, counter=counter)
            for s in sizes:
                reason = _runs_at(model, (chw[0], *hw) if s == base else (chw[0], s, s), ctx)
                row["sizes"][s] = reason is None
                if reason:
                    row["size_errors"][s] = reason
        row.update(params_total=params["total"], params_head=params["head"],
                   head_share_pct=100.0 * params["head"] / max(params["total"], 1),
                   gmacs_total=macs["total"] / 1e9, gmacs_head=macs["head"] / 1e9)
        if do_measure:
            if counter == "torch":
                model = surgery.swap_head(name, head=head, num_classes=num_classes,
                                          input_size=base)
            figures = measure(model, chw, batch_size, device)
            row.update({k: figures[k] for k in _MEASURE_KEYS})
    except Exception as err:  # noqa: BLE001 - a failing row says why and the others go on
        message = str(err).splitlines()[0] if str(err) else ""
        row["error"] = f"{type(err).__name__}: {message}"
    return row


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
    try:
        names = expand_models(args.models)
    except ValueError as err:
        print(f"param_flop_table.py: error: {err}", file=sys.stderr)
        return 2
    jobs = [(n, h) for n in names for h in args.heads]
    rows = [table_row(n, h, args.num_classes, args.sizes, args.counter, args.measure,
                      args.batch_size, args.device)
            for n, h in tqdm(jobs, desc="rows", unit="row", disable=args.no_progress,
                             file=sys.stderr)]
    text = render(rows, args.format)
    if args.out is not None:
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text if text.endswith("\n") else text + "\n")
        except OSError as err:
            print(f"param_flop_table.py: error: cannot write {args.out}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {len(rows)} rows to {args.out}")
    else:
        print(text)
    return 1 if args.strict and any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    from _cli import run  # tools/_cli.py: path set-up, user errors -> one line, exit 2

    sys.exit(run(main))
