"""analysis.reporting tables: every format renders every number; CSV, JSON and the display
formats parse back to the same numbers."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

from analysis.reporting import TABLE_FORMATS, flatten_row, format_table

ROWS = [
    {"model": "resnet18", "head": "gap", "params_total": 11_181_642, "gmacs_total": 1.819361792,
     "sizes": {224: True, 288: True}, "error": None},
    {"model": "resnet18", "head": "flatten", "params_total": 11_427_402,
     "gmacs_total": 1.819582464, "sizes": {224: True, 288: False}, "error": None},
    {"model": "vit_small_patch16_224", "head": "gap", "params_total": None,
     "gmacs_total": None, "sizes": {224: False, 288: False}, "error": "ValueError: boom, \"x\""},
]


# formats users are told they can pass (csv, json and some of tabulate's documented names),
# spelled out: each must be accepted, along with everything TABLE_FORMATS lists
KNOWN_FORMATS = ("csv", "json", "github", "plain", "simple", "pipe", "grid", "latex", "html",
                 "tsv", "rst")


@pytest.mark.parametrize("fmt", sorted(set(TABLE_FORMATS) | set(KNOWN_FORMATS)))
def test_every_format_renders_every_row_and_number(fmt: str) -> None:
    text = format_table(ROWS, fmt)
    assert text.count("resnet18") == 2
    assert "vit_small_patch16_224" in text.replace("\\_", "_")  # latex escapes underscores
    digits = text.replace(",", "")  # display formats group thousands
    assert "11181642" in digits and "11427402" in digits
    assert ("1.819361792" if fmt in ("csv", "json") else "1.819") in text


# resnet18 at 224 px, 10 classes (README): backbone + head = total, the figures a cost table shows
COSTS = [
    {"head": "gap", "params_backbone": 11_176_512, "params_head": 5_130,
     "params_total": 11_181_642},
    {"head": "flatten", "params_backbone": 11_176_512, "params_head": 250_890,
     "params_total": 11_427_402},
]


@pytest.mark.parametrize("fmt", ["github", "pipe", "plain", "simple", "tsv"])
def test_display_table_parses_back_and_its_columns_add_up(fmt: str) -> None:
    lines = [line for line in format_table(COSTS, fmt).splitlines()
             if line.strip() and not set(line) <= set("|-:+ ")]  # drop rules
    cells = [[c.strip() for c in re.split(r"[|\t]|\s{2,}", line) if c.strip()] for line in lines]
    header, body = cells[0], cells[1:]
    assert header == list(COSTS[0])
    parsed = [dict(zip(header, row, strict=True)) for row in body]
    for row, ref in zip(parsed, COSTS, strict=True):
        numbers = {k: int(v.replace(",", "")) for k, v in row.items() if k != "head"}
        assert numbers == {k: v for k, v in ref.items() if k != "head"}
        assert numbers["params_backbone"] + numbers["params_head"] == numbers["params_total"]


def test_csv_parses_back_to_the_same_numbers() -> None:
    parsed = list(csv.DictReader(io.StringIO(format_table(ROWS, "csv"))))
    assert [r["model"] for r in parsed] == [r["model"] for r in ROWS]
    assert int(parsed[0]["params_total"]) == 11_181_642
    assert float(parsed[1]["gmacs_total"]) == ROWS[1]["gmacs_total"]  # not rounded
    assert parsed[1]["sizes@288"] == "false" and parsed[0]["sizes@288"] == "true"
    assert parsed[2]["params_total"] == "" and parsed[2]["error"] == ROWS[2]["error"]


def test_json_parses_back_to_the_same_rows() -> None:
    parsed = json.loads(format_table(ROWS, "json"))
    assert parsed[0]["gmacs_total"] == ROWS[0]["gmacs_total"]
    assert parsed[1]["sizes"] == {"224": True, "288": False}
    assert parsed[2]["error"] == ROWS[2]["error"] and parsed[2]["params_total"] is None


def test_columns_and_headers() -> None:
    text = format_table(ROWS, "github", columns=["head", "params_total"],
                        headers={"params_total": "params"})
    header = text.splitlines()[0]
    assert header.index("head") < header.index("params") and "model" not in header
    assert "11,181,642" in text  # thousands separators in display formats
    assert format_table(ROWS, "csv", columns=["head"]).splitlines() == ["head", "gap", "flatten",
                                                                        "gap"]


def test_flatten_row() -> None:
    assert flatten_row({"a": 1, "s": {64: True}}) == {"a": 1, "s@64": True}


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown table format 'docx'; choose from csv, json"):
        format_table(ROWS, "docx")
