"""Rebuild the claims table from finished studies: each claim a paired comparison of two heads.

    python tools/claims_table.py docs/studies/transfer-linear-probe \\
        docs/studies/transfer-finetune --out docs/studies/claims.md

For every claim of analysis.studies.CLAIMS and every study and training-set size where both of
its heads ran, the table gives both heads' mean ± std over seeds, the paired difference in the
claimed direction and the verdict (the rule: analysis.studies.verdicts, stated in
docs/studies/README.md). Writes the markdown (one table per claim, then a one-row-per-claim
summary) and, next to it, the rows as JSON.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.reporting import format_table, to_json
from analysis.studies import claim_rows, claims_markdown, claims_summary, study_records
from surgery import atomic_write_bytes


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", type=Path, metavar="STUDY_DIR",
                   help="finished study directories (tools/compare_heads.py --out)")
    p.add_argument("--out", type=Path, default=None,
                   help="markdown file to write (and .json next to it); default: print only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rows = []
    for directory in args.studies:
        spec, records = study_records(directory)
        name = f"{directory.name} ({spec.base.get('regime', 'full')})"
        rows += claim_rows(records, study=name)
    if not rows:
        raise ValueError("no claim could be measured: none of these studies ran both heads of "
                         "any claim (e.g. gap and flatten)")
    summary = format_table(claims_summary(rows))
    text = (f"# Claims, measured\n\nThe verdict rule: [README.md](README.md#verdict-rule). "
            f"Studies: {', '.join(d.name for d in args.studies)}.\n\n## Summary\n\n{summary}\n\n"
            f"## Every setting\n\n{claims_markdown(rows)}")
    print(summary)
    if args.out is not None:
        atomic_write_bytes(args.out, text.encode())
        atomic_write_bytes(args.out.with_suffix(".json"), (to_json(rows) + "\n").encode())
        print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
