"""One row of a cost table: a model with one head, its parameters and MACs, and the input sizes
it runs at (with the reason where it does not), optionally measured latency and memory.

Rows are plain dicts (the JSON objects of ``tools/param_flop_table.py``); formatting them is the
table module's job. A row never raises: a failure is its ``error`` (one line).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

import surgery
from surgery import one_line

from .macs import count_flops
from .params import count_params
from .timing import measure

__all__ = ["MEASURE_KEYS", "cost_row"]

MEASURE_KEYS = ("infer_latency_ms", "infer_throughput", "infer_peak_mib", "train_latency_ms",
                "train_throughput", "train_peak_mib")


def _build_at_first_size(name: str, head: str, num_classes: int, tried: Sequence[Any],
                         ctx: torch.device) -> tuple[surgery.HeadSwapped, Any, dict[Any, str]]:
    """The model built for the first of ``tried`` its backbone runs at (its own size when
    ``tried`` is empty), that size, and why each size before it was refused.

    A size the backbone refuses (a ViT at a size that is no multiple of its patch) must not decide
    the verdict of the others: ``--sizes 50 64`` and ``--sizes 64 50`` give the same answers.
    """
    refused: dict[Any, str] = {}
    for size in list(tried) or [None]:
        try:
            with ctx:
                model = surgery.swap_head(name, head=head, num_classes=num_classes,
                                          input_size=size)
            return model, size, refused
        except ValueError as err:
            if size is None or "cannot run at input" not in str(err):
                raise
            refused[size] = one_line(err, with_type=False)
    sizes = ", ".join(map(str, tried))
    raise ValueError(f"{name} runs at none of the sizes {sizes}: {refused[tried[-1]]}")


def cost_row(name: str, head: str, num_classes: int, sizes: Sequence[int] | None,
              counter: str = "fvcore", do_measure: bool = False, batch_size: int = 1,
              device: str = "cpu") -> dict[str, Any]:
    """One table row (plain dict, the JSON object) for ``name`` with ``head``; never raises.

    Counted at the first of ``sizes`` the backbone runs at (the model's default input size when
    ``sizes`` is empty), which is also the size the flatten head is built for; every other size
    is then tried with a forward pass. ``device`` (for ``do_measure``) should come from
    :func:`analysis.machine.resolve_device`, checked once before the rows.
    """
    tried: list[Any] = list(sizes or [])
    base: Any = tried[0] if tried else None
    row: dict[str, Any] = {"model": name, "head": head, "input_size": base,
                           "params_total": None, "params_head": None, "head_share_pct": None,
                           "gmacs_total": None, "gmacs_head": None,
                           "sizes": {s: False for s in tried}, "size_errors": {}, "error": None}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ctx = torch.device("meta") if counter == "torch" else torch.device("cpu")
            model, base, refused = _build_at_first_size(name, head, num_classes, tried, ctx)
            row["input_size"] = base
            row["size_errors"].update(refused)
            model.eval()
            hw = model.features.input_size
            chw = (int(model.recipe.get("in_chans", 3)), int(hw[0]), int(hw[1]))
            if base is None:  # the model's own size
                base = hw[0] if hw[0] == hw[1] else "x".join(map(str, hw))
                row["input_size"], row["sizes"], tried = base, {base: False}, [base]
            params = count_params(model)
            macs = count_flops(model, chw, counter=counter)
            for s in tried:
                if s in refused:
                    continue
                size = (int(hw[0]), int(hw[1])) if s == base else (int(s), int(s))
                check = surgery.try_input_size(model, size)
                row["sizes"][s] = check["ok"]
                if not check["ok"]:
                    row["size_errors"][s] = check["error"]
        total, head_params = int(params["total"] or 0), int(params["head"] or 0)
        row.update(params_total=total, params_head=head_params,
                   head_share_pct=100.0 * head_params / max(total, 1),
                   gmacs_total=macs["total"] / 1e9, gmacs_head=macs["head"] / 1e9)
        if do_measure:
            if counter == "torch":
                model = surgery.swap_head(name, head=head, num_classes=num_classes,
                                          input_size=base)
            figures = measure(model, chw, batch_size, device)
            row.update({k: figures[k] for k in MEASURE_KEYS})
    except Exception as err:  # noqa: BLE001 - a failing row says why and the others go on
        row["error"] = one_line(err)
    return row
