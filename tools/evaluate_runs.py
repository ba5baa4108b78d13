"""Evaluate finished runs again, without training: the full test split, other input sizes, shifts.

    python tools/evaluate_runs.py docs/studies/transfer-finetune --shifts 0 2 4 8 \
        --out docs/studies/transfer-finetune/full_test

Takes run directories or study directories (their runs/*), reads each run's best.pt with the
input size, channels and normalisation it trained with, and tests it on the whole test split
(--test-size N: a stratified subset of N images, the same for every run), at --sizes, and on
--shift-images of the test images shifted by each of --shifts pixels (zero fill). A study that
tested on a subset to bound its cost reports its checkpoints on the whole split this way.
Writes OUT.csv (one row per run) and OUT.md (mean ± std over seeds per head and size).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.reporting import format_table
from analysis.studies import find_runs, reevaluate_runs, summarise_reevaluation
from surgery import atomic_write_bytes


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_STUDY_DIR")
    p.add_argument("--test-size", type=int, default=0,
                   help="stratified test images (0: the whole test split; default 0)")
    p.add_argument("--sizes", nargs="+", type=int, default=[], metavar="PX",
                   help="other input sizes to test at (default: none)")
    p.add_argument("--shifts", nargs="+", type=int, default=[], metavar="PX",
                   help="pixel shifts of the stored test images, e.g. 0 2 4 8 (default: none)")
    p.add_argument("--shift-images", type=int, default=2000,
                   help="test images for the shifts (0: all; default 2000)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--out", type=Path, default=None,
                   help="write OUT.csv and OUT.md (default: print only)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value in (("--test-size", args.test_size), ("--shift-images", args.shift_images)):
        if value < 0:
            raise ValueError(f"{flag} must be >= 0 (0: all), got {value}")
    if any(s < 1 for s in args.sizes) or any(s < 0 for s in args.shifts):
        raise ValueError("--sizes must be >= 1 and --shifts >= 0 pixels")
    runs = find_runs(args.paths)
    rows = reevaluate_runs(runs, test_size=args.test_size or None, sizes=args.sizes,
                           shifts=args.shifts, shift_images=args.shift_images or None,
                           device=args.device, progress=args.progress)
    table = format_table(summarise_reevaluation(rows))
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        out_csv = args.out.with_name(args.out.name + ".csv")
        with out_csv.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        command = "python tools/evaluate_runs.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        text = (f"# Runs evaluated again\n\nCommand: `{command}`\n\nMean ± sample std over "
                f"seeds, test accuracy in percent (`test_acc` at the trained size on "
                f"{rows[0]['test_images']} test images; `shift_Spx` on {args.shift_images or 'all'} "
                f"of them shifted by S pixels; per run: {out_csv.name}).\n\n{table}\n")
        atomic_write_bytes(args.out.with_name(args.out.name + ".md"), text.encode())
        print(f"-> {out_csv}, {args.out.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
