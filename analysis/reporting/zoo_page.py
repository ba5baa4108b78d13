"""The zoo explorer's data: one row per timm architecture x head, for the docs site's zoo/ page.

Built from the zoo table (``docs/zoo_table.csv``: every architecture's parameters and MACs with
each head) and the export coverage report (``docs/export_coverage.json``: which pairs export to
ONNX and with which dynamic axes). Numbers are kept exact for sorting and given readable for
reading (analysis.reporting.readable).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import surgery

from .tables import readable

__all__ = ["COLUMNS", "write_zoo_data", "zoo_rows"]

# (key, header) of each column the page shows, in order
COLUMNS = (("model", "model"), ("head", "head"), ("input", "input"),
           ("head_params", "head params"), ("head_macs", "head MACs"),
           ("model_macs", "model MACs"), ("any_size", "any input size"),
           ("export", "ONNX export"), ("dynamic", "dynamic axes"))


NUMERIC = ("head_params", "head_macs", "model_macs")


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _exports(report: Path | None) -> dict[tuple[str, str], dict[str, Any]]:
    """The export coverage records by (model, head); empty without a report."""
    if report is None or not report.is_file():
        return {}
    records = json.loads(report.read_text()).get("records", [])
    return {(r["model"], r["head"]): r for r in records}


def _export_cells(record: dict[str, Any] | None) -> tuple[str, str]:
    if record is None:
        return "not tried", ""
    if not record.get("exported"):
        return "fails", ""
    status = "verified" if record.get("verified") else "exported"
    return status, ", ".join(record.get("dynamic_axes") or [])


def zoo_rows(table_csv: str | Path, export_report: str | Path | None = None
             ) -> list[dict[str, Any]]:
    """Every architecture x head of the zoo table that has numbers, with its export status."""
    exports = _exports(Path(export_report) if export_report else None)
    rows = []
    with open(table_csv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        heads = [k.removeprefix("params_") for k in reader.fieldnames or ()
                 if k.startswith("params_") and k != "params_backbone"]
        for line in reader:
            base_params = _number(line.get("params_backbone"))
            base_macs = _number(line.get("gmacs_backbone"))
            for head in heads:
                params, gmacs = _number(line[f"params_{head}"]), _number(line.get(f"gmacs_{head}"))
                if params is None or base_params is None:
                    continue  # the head does not apply (token without a class token)
                kind = surgery.HEADS.get(head)
                export, dynamic = _export_cells(exports.get((line["model"], head)))
                rows.append({
                    "model": line["model"], "head": head, "input": line.get("input", ""),
                    "head_params": params - base_params,
                    "head_macs": None if gmacs is None or base_macs is None
                    else (gmacs - base_macs) * 1e9,
                    "model_macs": None if gmacs is None else gmacs * 1e9,
                    "any_size": "yes" if kind is not None and kind.any_input_size else "no",
                    "export": export, "dynamic": dynamic})
    return rows


def write_zoo_data(table_csv: str | Path, export_report: str | Path | None,
                   out: str | Path) -> Path:
    """``zoo.json`` for the page: the column headers and the rows; a text cell is its text, a
    count is ``[readable text, exact value]`` (shown as the one, sorted by the other)."""
    data: dict[str, Any] = {"columns": [header for _, header in COLUMNS], "rows": []}
    for row in zoo_rows(table_csv, export_report):
        cells: list[Any] = []
        for key, _ in COLUMNS:
            value = row[key]
            if key in NUMERIC:
                cells.append([readable(value), None if value is None else round(value)])
            else:
                cells.append(str(value))
        data["rows"].append(cells)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    return out
