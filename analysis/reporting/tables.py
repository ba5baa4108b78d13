"""Rows -> formatted text: every tabulate format, plus csv and json. Pure functions, no printing.

Rows are plain dicts (one per model x head, say). JSON keeps them as they are, nested values
included; the flat formats (tabulate's and CSV) spread a nested dict into one column per key
(``sizes: {224: True}`` -> column ``sizes@224``). Numbers are never rounded in CSV or JSON, so
both parse back to the same values; tabulate formats show integers with thousands separators.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import tabulate as _tabulate

__all__ = ["TABLE_FORMATS", "columns_of", "flatten_row", "format_table", "macs_text", "readable",
           "to_csv", "to_json"]

#: every accepted ``fmt``: csv, json and all of tabulate's formats
TABLE_FORMATS: tuple[str, ...] = ("csv", "json", *_tabulate.tabulate_formats)


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def readable(value: float | None, unit: str = "") -> str:
    """A count as a person reads it, in three significant digits with an SI prefix:
    ``2565`` -> ``2.56 k``, ``11181642`` -> ``11.2 M``, ``7168, "MACs"`` -> ``7.17 kMACs``
    (empty for None). The one formatter of counts and MACs in tables, plots and reports;
    CSV and JSON keep the exact numbers."""
    if value is None:
        return ""
    value = float(value)
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".rstrip()


def macs_text(gmacs: float | None) -> str:
    """GMACs as a person reads them: ``7.17 kMACs``, ``1.45 MMACs``, ``1.82 GMACs``."""
    return "" if gmacs is None else readable(float(gmacs) * 1e9, "MACs")


def flatten_row(row: Mapping[str, Any], sep: str = "@") -> dict[str, Any]:
    """One level of nesting spread into columns: ``{'sizes': {224: True}}`` -> ``sizes@224``."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                flat[f"{key}{sep}{sub}"] = v
        else:
            flat[key] = value
    return flat


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Column names in order of first appearance across all rows."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any) -> Any:
    """A value as CSV writes it: None -> empty, bools as true/false, floats unrounded."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return value


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text with a header line (nested dicts flattened, see :func:`flatten_row`)."""
    flat = [flatten_row(r) for r in rows]
    cols = list(columns) if columns is not None else columns_of(flat)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in flat:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json(rows: Sequence[Mapping[str, Any]], indent: int | None = 2) -> str:
    """Rows as a JSON list of objects (nested dicts kept; keys become strings)."""
    return json.dumps([_json_safe(r) for r in rows], indent=indent)


def _display(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return value


def format_table(rows: Sequence[Mapping[str, Any]], fmt: str = "github",
                 columns: Sequence[str] | None = None,
                 headers: Mapping[str, str] | None = None, floatfmt: str = ".3f") -> str:
    """Render ``rows`` in ``fmt`` (any of :data:`TABLE_FORMATS`).

    ``columns`` picks and orders the columns (default: all, in order of appearance; ignored by
    json); ``headers`` renames them for display in tabulate formats (CSV keeps the keys, so it
    parses back to the same names as JSON).
    """
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose from {', '.join(TABLE_FORMATS)}")
    if fmt == "json":
        return to_json(rows)
    if fmt == "csv":
        return to_csv(rows, columns)
    flat = [flatten_row(r) for r in rows]
    cols = list(columns) if columns is not None else columns_of(flat)
    names = [(headers or {}).get(c, c) for c in cols]
    body = [[_display(r.get(c)) for c in cols] for r in flat]
    return _tabulate.tabulate(body, headers=names, tablefmt=fmt, floatfmt=floatfmt, intfmt=",",
                              disable_numparse=False)
