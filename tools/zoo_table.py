"""Params and GMACs of every timm architecture with the gap, gmp, flatten, gem, attn, token
and spp heads.

    python tools/zoo_table.py [--models 'vit_*' ...] [--jobs 2] [--cache runs/zoo_table.jsonl]
                              [--out-dir docs]

Each architecture is built on the meta device (no memory for weights, nothing computed) at its
default input size, its backbone counted once with the torch counter (fvcore's MAC convention:
one multiply-add = 1), and each head built on the backbone's features and counted on its own;
a head's total is backbone + head. Heads are specs with options (``gem:p=2``, column
``gmacs_gem-p2``); a head that does not apply (token without a class token) leaves its cells
empty. Rows are appended to the ``--cache`` JSONL as they finish, so
an interrupted run resumes where it stopped. Writes ``zoo_table.md`` and ``zoo_table.csv``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import signal
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import timm
import torch
from _cli import CliParser, run
from tqdm import tqdm

import surgery
from analysis.costs import FLOP_COUNTERS, MacCounterMode, count_flops, count_params
from analysis.machine import describe_machine
from analysis.reporting import format_table

__all__ = ["build_parser", "main", "zoo_row", "COLUMNS"]

DEFAULT_HEADS = ("gap", "gmp", "flatten", "gem", "attn", "token", "spp")


def columns(heads: Sequence[str]) -> list[str]:
    """Column order of the table for ``heads`` (specs; columns named by their labels)."""
    labels = [surgery.head_label(h) for h in heads]
    return (["model", "input", "features", "params_backbone"]
            + [f"params_{h}" for h in labels] + ["gmacs_backbone"]
            + [f"gmacs_{h}" for h in labels] + ["error"])


COLUMNS = columns(DEFAULT_HEADS)


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(prog="zoo_table.py", description=__doc__.split("\n\n")[0])
    what = parser.add_argument_group("what to count")
    what.add_argument("--models", nargs="+", default=["*"],
                      help="timm names or wildcards (default: the whole zoo)")
    what.add_argument("--heads", nargs="+", default=list(DEFAULT_HEADS), metavar="SPEC",
                      help=f"heads, each {surgery.spec_help()} (not original; default: "
                           f"{' '.join(DEFAULT_HEADS)})")
    what.add_argument("--num-classes", type=int, default=1000, help="classes (default 1000)")
    what.add_argument("--counter", choices=list(FLOP_COUNTERS), default="torch",
                      help="torch (meta device, default) or fvcore (real tensors: slow)")
    run = parser.add_argument_group("running")
    run.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    run.add_argument("--timeout", type=int, default=300, help="seconds per architecture")
    run.add_argument("--cache", type=Path, default=Path("runs/zoo_table.jsonl"),
                     help="JSONL of finished rows; rerunning skips them (resume)")
    run.add_argument("--retry-errors", action="store_true",
                     help="recount architectures whose cached row is an error")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    out = parser.add_argument_group("output")
    out.add_argument("--out-dir", type=Path, default=Path("docs"),
                     help="where zoo_table.md and zoo_table.csv go (default docs)")
    out.add_argument("--command", default=None,
                     help="command line recorded in the report (default: this one)")
    return parser


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> NoReturn:
    raise _Timeout()


def _swap_and_count(backbone: torch.nn.Module, head: str, num_classes: int, counter: str
                    ) -> tuple[torch.nn.Module, int]:
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
                num_classes: int, counter: str) -> tuple[int, int] | None:
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
        macs = backbone_macs + FLOP_COUNTERS[counter](model.head, tuple(model.features.shape))["total"]
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
    except _Timeout:
        row["error"] = "timeout"
    except Exception as err:  # noqa: BLE001 - a failing architecture is a row, not a crash
        row["error"] = surgery.one_line(err)
    return row


def _work(task: tuple[str, tuple[str, ...], int, str, int]) -> tuple[dict[str, Any], float]:
    """Worker: one architecture under a SIGALRM timeout; returns the row and seconds taken.

    The row also gets ``cpu_seconds`` (this process's CPU time), which, unlike wall-clock time,
    does not grow when other jobs share the machine.
    """
    name, heads, num_classes, counter, timeout = task
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    start, cpu = time.perf_counter(), time.process_time()
    try:
        row = zoo_row(name, heads, num_classes, counter)
    except _Timeout:
        row = {"model": name, "error": f"timeout after {timeout} s"}
    finally:
        signal.alarm(0)
    row["cpu_seconds"] = round(time.process_time() - cpu, 3)
    return row, time.perf_counter() - start


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Rows already finished, by model name (later lines win)."""
    rows: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            rows[row["model"]] = row
    return rows


def _run(tasks: list[tuple[str, tuple[str, ...], int, str, int]], jobs: int
         ) -> Iterator[tuple[dict[str, Any], float]]:
    if jobs <= 1:
        yield from map(_work, tasks)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(jobs, maxtasksperchild=100) as pool:
        yield from pool.imap_unordered(_work, tasks, chunksize=1)


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.jobs < 1 or args.num_classes < 1 or args.timeout < 1:
        raise ValueError("--jobs, --num-classes and --timeout must be >= 1")
    surgery.check_writable(args.out_dir, "--out-dir", directory=True)
    names = surgery.expand_model_names(args.models)
    heads = tuple(args.heads)
    for head in heads:
        if surgery.parse_head(head).kind == "original":
            raise ValueError("--heads: the original head has no features-only cost; choose "
                             "from " + ", ".join(h for h in surgery.HEADS if h != "original"))
    labels = [surgery.head_label(h) for h in heads]
    cache = read_cache(args.cache)
    todo = [n for n in names if n not in cache or (args.retry_errors and cache[n].get("error"))
            or any(f"gmacs_{h}" not in cache[n] for h in labels if not cache[n].get("error"))]
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    tasks = [(n, heads, args.num_classes, args.counter, args.timeout) for n in todo]
    with args.cache.open("a") as sink:
        bar = tqdm(total=len(tasks), desc="architectures", unit="arch", file=sys.stderr,
                   disable=args.no_progress)
        for row, seconds in _run(tasks, args.jobs):
            row["seconds"] = round(seconds, 3)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            cache[row["model"]] = row
            bar.update()
        bar.close()
    elapsed = time.perf_counter() - start
    rows = [cache[n] for n in sorted(names)]
    command = args.command or "python tools/zoo_table.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "zoo_table.md").write_text(
        _report(rows, heads, command, args.counter, elapsed if todo else None))
    (args.out_dir / "zoo_table.csv").write_text(format_table(rows, "csv", columns(heads)))
    failed = sum(1 for r in rows if r.get("error"))
    print(f"{len(rows)} architectures ({len(todo)} counted now, {failed} failed) in "
          f"{elapsed:.1f} s -> {args.out_dir / 'zoo_table.md'}, {args.out_dir / 'zoo_table.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
