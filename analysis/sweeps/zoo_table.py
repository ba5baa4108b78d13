"""The zoo table as a sweep: params and GMACs of every timm architecture with each head.

Each architecture is built on the meta device (no memory for weights, nothing computed) at its
default input size, its backbone counted once with the torch counter (fvcore's MAC convention:
one multiply-add = 1), and each head built on the backbone's features and counted on its own;
a head's total is backbone + head. Heads are specs with options (``gem:p=2``, column
``gmacs_gem-p2``); a head that does not apply (token without a class token) leaves its cells
empty. :func:`zoo_table_sweep` appends rows to a JSONL cache as they finish (an interrupted run
resumes where it stopped), each architecture under a wall-clock limit, and writes
``zoo_table.md`` and ``zoo_table.csv``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch

import surgery

from ..costs import FLOP_COUNTERS, MacCounterMode, count_flops, count_params
from ..machine import describe_machine
from ..reporting import format_table
from ..runtime import (
    ItemBudget,
    JsonlStore,
    WallBudgetExceeded,
    one_torch_thread,
    run_sweep,
    write_files,
)

__all__ = ["COLUMNS", "DEFAULT_HEADS", "ZooTableSettings", "columns", "zoo_row",
           "zoo_table_sweep"]

DEFAULT_HEADS = ("gap", "gmp", "flatten", "gem", "attn", "token", "spp")
_MAX_TASKS_PER_CHILD = 100  # a fresh worker every so many architectures


def columns(heads: Sequence[str]) -> list[str]:
    """Column order of the table for ``heads`` (specs; columns named by their labels)."""
    labels = [surgery.head_label(h) for h in heads]
    return (["model", "input", "features", "params_backbone"]
            + [f"params_{h}" for h in labels] + ["gmacs_backbone"]
            + [f"gmacs_{h}" for h in labels] + ["error"])


COLUMNS = columns(DEFAULT_HEADS)


@dataclass
class ZooTableSettings:
    """What tools/zoo_table.py asks for: its flags by name, with the tool's
    defaults (declared once, in its parser)."""

    models: list[str]
    heads: list[str]
    num_classes: int
    counter: str
    jobs: int
    timeout: int
    cache: Path
    retry_errors: bool
    no_progress: bool
    out_dir: Path
    command: str | None


def _swap_and_count(backbone: torch.nn.Module, head: str, num_classes: int, counter: str
                    ) -> tuple[surgery.HeadSwapped, int]:
    """Swap the head and count the backbone's MACs, in one meta forward pass where possible.

    swap_head probes the backbone with one ``forward_features`` pass on the meta device; with
    the torch counter that pass is counted as it runs. When the probe took another route (a
    second pass through ``forward_intermediates``, as for PiT, or none on meta), the backbone
    is counted separately with :func:`count_flops`.
    """
    calls: Counter[str] = Counter()
    spied = [m for m in ("forward_features", "forward_intermediates") if hasattr(backbone, m)]

    def spy(method: str) -> Any:
        original = getattr(backbone, method)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[method] += 1
            return original(*args, **kwargs)
        return call

    single_pass = counter == "torch"
    mode = MacCounterMode()
    try:
        if single_pass:
            for method in spied:  # instance attributes shadow the methods for the probe only
                setattr(backbone, method, spy(method))
        with mode if single_pass else contextlib.nullcontext():
            model = surgery.swap_head(backbone, head=head, num_classes=num_classes)
    finally:
        for method in spied:
            backbone.__dict__.pop(method, None)
    if single_pass and calls == Counter(forward_features=1):
        return model, sum(mode.take()[0].values()) // 2
    chans = int(model.recipe.get("in_chans", 3))
    macs = count_flops(model, (chans, *model.features.input_size), counter=counter)
    return model, int(macs["backbone"])


def _head_costs(name: str, head: str, info: surgery.FeatureInfo, backbone_macs: int,
                num_classes: int, counter: str) -> tuple[int | None, int] | None:
    """Head parameters and backbone + head MACs; None where the head does not apply.

    The token head is swapped onto a fresh backbone, as swap_head builds it: it takes the
    model's post-pooling norm along (fc_norm), and on PiT reads another output of the backbone
    (forward_features' class tokens, not the last feature map), counted on its own.
    """
    spec = surgery.parse_head(head)
    if not surgery.HEADS[spec.kind].needs_class_token:
        module = surgery.build_head(spec.kind, info, num_classes, spec.hidden, spec.dropout,
                                    **spec.kind_options)
        macs = FLOP_COUNTERS[counter](module, tuple(info.shape))["total"]
        return sum(p.numel() for p in module.parameters()), backbone_macs + macs
    if not info.class_token and info.source != "intermediates":
        return None  # no class token: the token head does not apply
    try:
        model = surgery.swap_head(surgery.load_backbone(name), head=spec, num_classes=num_classes)
    except ValueError:
        return None
    chans = int(model.recipe.get("in_chans", 3))
    if model.features.source == info.source:
        own = FLOP_COUNTERS[counter](model.head, tuple(model.features.shape))
        macs = backbone_macs + own["total"]
    else:
        macs = count_flops(model, (chans, *model.features.input_size), counter=counter)["total"]
    return count_params(model)["head"], macs


def zoo_row(name: str, heads: Sequence[str] = DEFAULT_HEADS, num_classes: int = 1000,
            counter: str = "torch") -> dict[str, Any]:
    """One row: params and MACs of ``name`` with each head, at its default input size.

    The backbone is counted once; each head is counted alone on a features tensor of the
    backbone's output shape. Never raises: failures go to ``error``.
    """
    row: dict[str, Any] = {"model": name, "error": None}
    device = torch.device("meta" if counter == "torch" else "cpu")
    try:
        # everything under the device context: heads too (a flatten head can hold 1e9 params)
        with warnings.catch_warnings(), torch.device(device):
            warnings.simplefilter("ignore")
            backbone = surgery.load_backbone(name)
            model, backbone_macs = _swap_and_count(backbone, heads[0], num_classes, counter)
            info = model.features
            row.update(input="x".join(map(str, info.input_size)),
                       features=f"{info.channels}x" + "x".join(map(str, info.grid)),
                       params_backbone=count_params(model)["backbone"],
                       gmacs_backbone=backbone_macs / 1e9)
            for head in heads:
                label = surgery.head_label(head)
                counted = _head_costs(name, head, info, backbone_macs, num_classes, counter)
                params, macs = counted if counted else (None, None)
                row[f"params_{label}"] = None if params is None else row["params_backbone"] + params
                row[f"gmacs_{label}"] = None if macs is None else macs / 1e9
    except WallBudgetExceeded:
        row["error"] = "timeout"
    except Exception as err:  # noqa: BLE001 - a failing architecture is a row, not a crash
        row["error"] = surgery.one_line(err)
    return row


def _count(task: tuple[str, tuple[str, ...], int, str, int]) -> dict[str, Any]:
    """Worker: one architecture under a wall-clock limit. The row also gets ``cpu_seconds``
    (this process's CPU time, which, unlike wall-clock time, does not grow when other jobs share
    the machine) and ``seconds`` (wall)."""
    name, heads, num_classes, counter, timeout = task
    item = ItemBudget("wall", timeout)
    try:
        with item:
            row = zoo_row(name, heads, num_classes, counter)
    except WallBudgetExceeded:
        row = {"model": name, "error": f"timeout after {timeout} s"}
    row["cpu_seconds"] = round(item.cpu_seconds, 3)
    row["seconds"] = round(item.seconds, 3)
    return row


def _report(rows: list[dict[str, Any]], heads: Sequence[str], command: str, counter: str,
            seconds: float | None) -> str:
    failed = [r for r in rows if r.get("error")]
    labels = [surgery.head_label(h) for h in heads]
    head_cols = ", ".join(f"`params_{h}`/`gmacs_{h}`" for h in labels)
    token = [surgery.head_label(h) for h in heads if surgery.parse_head(h).kind == "token"]
    na = (f" `params_{token[0]}`/`gmacs_{token[0]}` are empty where the model has no class token "
          f"({sum(1 for r in rows if r.get(f'gmacs_{token[0]}') is None)} architectures): the "
          "token head does not apply there." if token else "")
    lines = [
        "# Zoo table: params and GMACs per head",
        "",
        f"timm {timm.__version__}, torch {torch.__version__}, {len(rows)} architectures "
        f"({len(rows) - len(failed)} counted, {len(failed)} failed); counter: `{counter}`.",
        f"Produced by `{command}` on {describe_machine()}"
        + (f", in {seconds / 60:.1f} min (this invocation)" if seconds else "") + ".",
        "",
        "MACs follow fvcore's convention (one fused multiply-add = 1; GMACs = 1e9 MACs) for one "
        "image at the model's default input size; normalisation and pooling count as fvcore "
        "counts them (pooling: one per input element). "
        f"{head_cols}: the whole model with that head (backbone + head), "
        "`features`: channels x final grid the heads see. Params are exact." + na,
        "",
    ]
    return "\n".join(lines) + format_table(rows, "github", columns(heads), floatfmt=".4f") + "\n"


def _check(settings: ZooTableSettings) -> tuple[list[str], tuple[str, ...]]:
    """The architectures and heads asked for; ValueError for what cannot be counted."""
    if settings.jobs < 1 or settings.num_classes < 1 or settings.timeout < 1:
        raise ValueError("--jobs, --num-classes and --timeout must be >= 1")
    surgery.check_writable(settings.out_dir, "--out-dir", directory=True)
    names = surgery.expand_model_names(settings.models)
    heads = tuple(settings.heads)
    for head in heads:
        if surgery.parse_head(head).kind == "original":
            raise ValueError("--heads: the original head has no features-only cost; choose "
                             "from " + ", ".join(h for h in surgery.HEADS if h != "original"))
    return names, heads


def zoo_table_sweep(settings: ZooTableSettings, command: str) -> dict[str, Any]:
    """Count every architecture not in the cache yet (or with a new head, or an error to
    retry), then write ``zoo_table.md`` and ``zoo_table.csv``. Returns ``{"rows", "counted",
    "failed", "seconds", "files"}``; ``command``: the command line the report records."""
    names, heads = _check(settings)
    labels = [surgery.head_label(h) for h in heads]
    store = JsonlStore(settings.cache, key=lambda r: r["model"])
    cache = store.load()
    todo = [n for n in names if n not in cache
            or (settings.retry_errors and cache[n].get("error"))
            or any(f"gmacs_{h}" not in cache[n] for h in labels if not cache[n].get("error"))]
    tasks = [(n, heads, settings.num_classes, settings.counter, settings.timeout) for n in todo]
    run = run_sweep(_count, tasks, store, jobs=settings.jobs, start="fork",
                    max_tasks_per_child=_MAX_TASKS_PER_CHILD, initializer=one_torch_thread,
                    desc="architectures", unit="arch", progress=not settings.no_progress)
    if run.interrupted:
        raise KeyboardInterrupt
    rows = [store.rows[n] for n in sorted(names)]
    files = write_files(settings.out_dir, {
        "zoo_table.md": _report(rows, heads, command, settings.counter,
                                run.seconds if todo else None),
        "zoo_table.csv": format_table(rows, "csv", columns(heads))})
    return {"rows": rows, "counted": len(todo), "failed": sum(1 for r in rows if r.get("error")),
            "seconds": run.seconds, "files": files}
