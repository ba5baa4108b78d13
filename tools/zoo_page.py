#!/usr/bin/env python
"""Build the zoo explorer's data (docs/zoo/zoo.json) from the zoo table and the export report.

    python tools/zoo_page.py [--table docs/zoo_table.csv] [--export docs/export_coverage.json]
        [--out docs/zoo/zoo.json]

``make docs`` runs it before building the site; the page (docs/zoo/index.md, zoo.js) filters
and sorts the rows in the browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _cli import CliParser, run

from analysis.reporting.zoo_page import write_zoo_data

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "zoo_table.csv")
    p.add_argument("--export", type=Path, default=ROOT / "docs" / "export_coverage.json")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "zoo" / "zoo.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.table.is_file():
        raise FileNotFoundError(f"no zoo table at {str(args.table)!r}; write it with "
                                "python tools/zoo_table.py")
    out = write_zoo_data(args.table, args.export, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
