#!/usr/bin/env python
"""Replace the classifier of a timm backbone and show what changed.

    python tools/swap_head.py resnet18 --head gmp
    python tools/swap_head.py resnet18 --head gem:p=3:learn_p=0
    python tools/swap_head.py vit_small_patch16_224 --head token --num-classes 10 --format json
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from _cli import CliParser, positive_int, run

from analysis.training import add_model_options
from surgery import (
    check_timm_options,
    check_writable,
    parse_options,
    save,
    swap_head,
    swap_report,
)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", help="any name of timm.list_models() (e.g. resnet18, vit_small_patch16_224)")
    g = add_model_options(p, head="gap", in_chans=3, num_classes=10)
    g.add_argument("--input-size", type=positive_int, default=None,
                   help="square input size the head is built for (default: the model's)")
    o = p.add_argument_group("output")
    o.add_argument("--sizes", type=positive_int, nargs="*", default=None,
                   help="input sizes to try (default: the built size, ~0.75x and ~1.25x)")
    o.add_argument("--save", type=Path, default=None, help="write the swapped model here")
    o.add_argument("--format", choices=("text", "json"), default="text")
    return p


def _text(report: dict) -> str:
    p = report["params"]
    f = report["features"]
    lines = [
        f"model      {report['model']}  (features: {f['layout']}, {f['channels']} channels, grid "
        f"{'x'.join(map(str, f['grid']))}"
        + (f", {f['num_prefix_tokens']} prefix tokens" if f["num_prefix_tokens"] else "") + ")",
        f"removed    {report['removed']}",
        f"head       {report['head_spec']}: " + report["head_module"].replace("\n", "\n           "),
        f"params     backbone {p['backbone']:,} | head {p['head']:,} | total {p['total']:,}",
        "sizes",
    ]
    for s in report["sizes"]:
        size = "x".join(map(str, s["input_size"]))
        lines.append(f"  {size:>9}  " + (f"ok     -> {tuple(s['output_shape'])}" if s["ok"]
                                         else f"refuses: {s['error']}"))
    lines.append(f"note       {report['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    timm_options = parse_options(args.timm_option, "--timm-option")
    check_timm_options(timm_options, "--timm-option")
    if args.save is not None:
        check_writable(args.save, "--save")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        model = swap_head(args.model, head=args.head, num_classes=args.num_classes,
                          hidden=None if args.hidden is None else tuple(args.hidden),
                          dropout=args.dropout, input_size=args.input_size,
                          pretrained=args.pretrained, checkpoint=args.checkpoint,
                          in_chans=args.in_chans, **timm_options)
    report = swap_report(model, args.sizes)
    report["warnings"] = sorted({str(w.message) for w in caught
                                 if "1x1" in str(w.message) or "gem clamps" in str(w.message)})
    if args.save:
        report["saved"] = str(save(model, args.save))
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
        for w in report["warnings"]:
            print(f"warning    {w}")
        if args.save:
            print(f"saved      {report['saved']}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
