"""Export coverage checks: which architecture x head pairs export to ONNX and verify in
onnxruntime.

A deterministic sample of timm's zoo (at most ``max_params`` backbone parameters) covering every
feature layout (NCHW maps, NHWC maps, token sequences, lists of token sequences, channels-first
sequences NCL) is exported with each head through :func:`export_verified` and checked at the
size it is built for and a smaller one. Each pair gives one row: exported (and by which
exporter), which input axes are dynamic, verified, and for every failure the stage and whose
limitation it is (timm, the exporters, onnxruntime, numerics, or headswap itself).
"""

from __future__ import annotations

import copy
import csv
import fnmatch
import hashlib
import tempfile
import time
import traceback
import warnings
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

import surgery
from surgery.report import neighbour_sizes

from ..export import ExportError, ExportSource, export_verified, is_refused, source_from_name

__all__ = ["BASE_HEADS", "LAYOUTS", "LIST_OUTPUT", "Candidate", "coverage_heads",
           "coverage_rows", "failure_row", "sample_architectures", "zoo_candidates"]

BASE_HEADS = ("gap", "gmp", "flatten", "nin")
# the registry when export coverage was written; kinds registered since are "newer" heads
_FIRST_KINDS = frozenset({"gap", "gmp", "gapmp", "flatten", "nin", "original"})
LAYOUTS = ("NCHW", "NHWC", "tokens", "lists", "NCL")
# architectures whose forward_features returns a list of token sequences (timm 1.0.31, found by
# probing on the meta device: 1,062 of the 1,184 architectures of at most 300 M parameters, and
# one of each timm module among the other 122). EfficientViM returns a list too, of NCL maps: it
# stays in the NCL stratum. Each row records what the probe sees again, so a stale entry shows.
LIST_OUTPUT = ("coat_mini", "coat_small", "coat_tiny", "crossvit_*")
_ZOO_LAYOUT = {"NCHW": "NCHW", "NHWC": "NHWC", "NLC": "tokens", "NCL": "NCL"}


@dataclass(frozen=True)
class Candidate:
    """An architecture the sample may take: its layout stratum, parameters, timm module."""

    name: str
    layout: str
    params: int
    family: str


def coverage_heads() -> list[str]:
    """gap, gmp, flatten and nin, then every head kind registered after them (the newer
    pooling heads, once they exist), read from ``surgery.HEADS`` now."""
    return [*BASE_HEADS, *(h for h in surgery.HEADS if h not in _FIRST_KINDS)]


def _families() -> dict[str, str]:
    return {n: m for m in timm.list_modules() for n in timm.list_models(module=m)}


def zoo_candidates(zoo_table: str | Path, zoo_coverage: str | Path,
                   max_params: float = 300e6) -> list[Candidate]:
    """Architectures of the committed zoo table (backbone parameters) and zoo coverage (feature
    layout) with at most ``max_params`` parameters that this timm still has (timm's ``test_*``
    toy configurations left out)."""
    layouts = {r["model"]: (r.get("features") or {}).get("layout")
               for r in surgery.read_json(zoo_coverage)["records"]}
    families = _families()
    found = []
    with open(zoo_table, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            name, params = row["model"], row.get("params_backbone") or ""
            if row.get("error") or not params or name not in families or name.startswith("test_"):
                continue  # test_*: timm's own toy configurations for its unit tests
            if float(params) > max_params or layouts.get(name) not in _ZOO_LAYOUT:
                continue
            listed = any(fnmatch.fnmatchcase(name, p) for p in LIST_OUTPUT)
            layout = "lists" if listed else _ZOO_LAYOUT[str(layouts[name])]
            found.append(Candidate(name, layout, int(float(params)), families[name]))
    return found


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """Per-layout sample sizes: each layout at least ``max(4, n // 25)`` (or all it has), the
    rest in proportion to what is left of each (largest remainder)."""
    floor = max(4, n // 25)
    quota = {k: min(c, floor) for k, c in counts.items()}
    left = n - sum(quota.values())
    room = {k: counts[k] - quota[k] for k in counts}
    total = sum(room.values())
    if left <= 0 or total == 0:
        return quota
    share = {k: left * room[k] / total for k in counts}
    for k in counts:
        quota[k] += int(share[k])
    for k in sorted(counts, key=lambda k: (int(share[k]) - share[k], k)):
        if sum(quota.values()) >= min(n, sum(counts.values())):
            break
        if quota[k] < counts[k]:
            quota[k] += 1
    return quota


def sample_architectures(candidates: Sequence[Candidate], n: int) -> list[Candidate]:
    """``n`` candidates, the same ones every time: per-layout quotas (every layout present),
    and inside a layout one architecture per timm module (family) in turn, families in the
    order of their SHA-256 and each family's smallest architecture first (by parameters): the
    sample spreads over the families' code, and each costs the least to export."""
    if n < 1:
        raise ValueError(f"the sample size must be >= 1, got {n}")
    by_layout: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_layout[c.layout].append(c)
    quota = _quotas({k: len(v) for k, v in by_layout.items()}, n)
    chosen: list[Candidate] = []
    for layout in LAYOUTS:
        families: dict[str, list[Candidate]] = defaultdict(list)
        for c in sorted(by_layout.get(layout, []), key=lambda c: (c.params, c.name)):
            families[c.family].append(c)
        order = sorted(families, key=_key)
        taken: list[Candidate] = []
        while len(taken) < quota.get(layout, 0):
            for fam in order:
                if families[fam] and len(taken) < quota[layout]:
                    taken.append(families[fam].pop(0))
        chosen += taken
    return sorted(chosen, key=lambda c: c.name)


# innermost traceback frame -> whose limitation the exception shows (first match wins)
_ORIGINS = (("/torch/onnx/", "exporter"), ("/torch/export/", "exporter"),
            ("/torch/_export/", "exporter"), ("/torch/_dynamo/", "exporter"),
            ("/torch/fx/", "exporter"), ("/onnxscript/", "exporter"), ("/onnx/", "exporter"),
            ("/onnxruntime/", "onnxruntime"), ("/timm/", "timm"), ("/torch/", "torch"),
            ("/surgery/", "headswap"), ("/analysis/", "headswap"))


def _limitation(err: BaseException) -> str:
    """Whose limitation an exception shows: the package of the innermost traceback frame."""
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = frame.filename.replace("\\", "/")
        for part, who in _ORIGINS:
            if part in path:
                return who
    return "headswap"


def _not_applicable(head: str, err: BaseException) -> bool:
    """A head that needs what the backbone lacks (a class token) refuses at build time."""
    kind = surgery.HEADS.get(head)
    return isinstance(err, ValueError) and bool(getattr(kind, "needs_class_token", False))


def _verdict(row: dict[str, Any], rows: list[dict[str, Any]], built: int) -> None:
    """Fill ``verified``, ``dynamic_hw`` and, for a failure, ``error`` and ``limitation``."""
    failed = [r for r in rows if not r["ok"] and not is_refused(r)]
    passed = [r for r in rows if r["ok"]]
    row["verified"] = bool(passed) and not failed
    row["dynamic_hw"] = "height" in row["dynamic_axes"] and any(
        r["input_size"][0] != built for r in passed)
    if failed:
        err = str(failed[0]["error"])
        row["stage"] = "verify"
        row["limitation"] = "onnxruntime" if err.startswith("onnxruntime") else "numerics"
        row["error"] = f"{'x'.join(map(str, failed[0]['input_size']))}: {err}"
    elif not passed:
        row.update(stage="verify", limitation="headswap", error="no size verified")


def _export_row(source: ExportSource, sizes: Sequence[int], opset: int,
                dynamo_budget: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"stage": "export"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="headswap-coverage-") as tmp:
        try:
            result, rows = export_verified(source, Path(tmp) / "model.onnx", sizes, opset=opset,
                                           dynamo_budget=dynamo_budget)
        except ExportError as err:
            return {**row, "error": surgery.one_line(err, 600), "limitation": "exporter"}
        except Exception as err:  # noqa: BLE001 - a failing pair is a row, not a crash
            return {**row, "error": surgery.one_line(err), "limitation": _limitation(err)}
    row.update(stage=None, exported=True, exporter=result.exporter,
               fallback_reason=result.fallback_reason, dynamic_axes=result.dynamic_axes,
               fixed_reason=result.fixed_reason, file_mib=round(result.file_bytes / 2**20, 1),
               verify=rows, export_seconds=round(time.perf_counter() - start, 1))
    _verdict(row, rows, source.input_size[0])
    return row


def failure_row(name: str, head: str, stage: str | None = None, limitation: str | None = None,
                error: str | None = None) -> dict[str, Any]:
    """A row with nothing exported (yet): every key a finished row has."""
    return {"model": name, "head": head, "exported": False, "exporter": None,
            "fallback_reason": None, "dynamic_axes": [], "dynamic_hw": False,
            "fixed_reason": None, "verified": False, "verify": [], "stage": stage,
            "limitation": limitation, "error": error}


def coverage_rows(name: str, heads: Sequence[str], opset: int = 18,
                  num_classes: int = 10, dynamo_budget: float | None = None
                  ) -> Iterator[dict[str, Any]]:
    """One row per head for architecture ``name`` (random weights, seed 0, its default input
    size), checked at that size and about 0.75x of it, yielded as each head finishes (a caller
    can time each one). The backbone is built once and copied for each head. Failures are
    rows with ``stage``, ``limitation`` and ``error``, not exceptions. ``dynamo_budget``: CPU
    seconds the dynamo exporter may take per export before TorchScript is used instead."""
    try:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            backbone = surgery.load_backbone(name).eval()
    except Exception as err:  # noqa: BLE001
        for h in heads:
            yield failure_row(name, h, "build", _limitation(err), surgery.one_line(err))
        return
    for head in heads:
        yield _head_row(backbone, name, head, opset, num_classes, dynamo_budget)


def _head_row(backbone: torch.nn.Module, name: str, head: str, opset: int,
              num_classes: int, dynamo_budget: float | None = None) -> dict[str, Any]:
    row = failure_row(name, head)
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = source_from_name(copy.deepcopy(backbone), head, num_classes)
    except Exception as err:  # noqa: BLE001
        who = "not applicable" if _not_applicable(head, err) else _limitation(err)
        return failure_row(name, head, "build", who, surgery.one_line(err))
    h = source.input_size[0]
    row.update(layout=source.model.features.layout,
               from_list=source.model.features.from_sequence, input_size=h)
    sizes = list(dict.fromkeys([h, neighbour_sizes(h)[0]]))
    row.update(_export_row(source, sizes, opset, dynamo_budget))
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row
