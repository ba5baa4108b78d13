"""Zoo coverage checks: does every head kind work on one timm architecture?

For one architecture, :func:`check_architecture` builds the backbone on the meta device (no
memory, no compute; real weights as fallback), swaps in each head kind and checks that a batch of
two at the model's default input size gives ``(2, num_classes)`` logits. :func:`summarize` turns
the per-architecture records into per-head totals and a list of failures with their reasons.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from surgery import HEADS, FeatureInfo, load_backbone, one_line, probe_features, swap_head
from surgery.layout import default_input_size

__all__ = ["check_architecture", "check_timm_max", "merge_records", "summarize"]

BATCH = 2


def _run(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return module(x)


def _shape_record(out: torch.Tensor, num_classes: int) -> dict[str, Any]:
    ok = tuple(out.shape) == (BATCH, num_classes)
    record: dict[str, Any] = {"ok": ok, "output_shape": list(out.shape)}
    if not ok:
        record["error"] = f"output shape {tuple(out.shape)}, expected {(BATCH, num_classes)}"
    return record


def _check_heads(backbone: torch.nn.Module, heads: Sequence[str], num_classes: int
                 ) -> tuple[dict[str, Any], FeatureInfo | None]:
    """Swap each head kind onto a copy of ``backbone``; the features are computed once.

    One probe serves every swap; the pooling heads share one backbone forward per feature source
    (their backbones are pruned the same way); ``original`` changes the backbone (timm's
    reset_classifier) and runs whole.
    """
    results: dict[str, Any] = {}
    info = None
    feats: dict[str, torch.Tensor] = {}  # by feature source (the token head on PiT differs)
    try:
        probe = probe_features(backbone)  # once: every swap below reuses it
    except Exception as err:
        return {h: {"ok": False, "error": one_line(err)} for h in heads}, None
    for head in heads:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model = swap_head(copy.deepcopy(backbone), head=head, num_classes=num_classes,
                                  probe=probe)
                info = model.features
                device = next(model.parameters()).device
                make = torch.empty if device.type == "meta" else torch.randn
                x = make(BATCH, model.recipe["in_chans"], *info.input_size, device=device)
                if head == "original":
                    out = _run(model, x)
                else:
                    if info.source not in feats:
                        with torch.no_grad():
                            feats[info.source] = model.eval().forward_features(x)
                    out = _run(model.head, feats[info.source])
            results[head] = _shape_record(out, num_classes)
            notes = sorted({str(w.message).split(";")[0] for w in caught
                            if "1x1" in str(w.message)})
            if notes:
                results[head]["warning"] = notes[0]
        except Exception as err:  # recorded per head, reported in the coverage file
            results[head] = {"ok": False, "error": one_line(err)}
    return results, info


def check_timm_max(name: str, num_classes: int = 10) -> dict[str, Any]:
    """timm's own route to a max-pooled head, for comparison: ``reset_classifier(num_classes,
    global_pool='max')`` on the meta device, then a forward pass; ok when the shape is right.

    A right shape does not mean timm pooled by max over patch positions (several families
    reinterpret ``'max'``); it is the most this check can say without weights.
    """
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                model = load_backbone(name)
                model.reset_classifier(num_classes, global_pool="max")  # type: ignore[operator]
            out = _run(model, torch.empty(BATCH, 3, *default_input_size(model), device="meta"))
        record = _shape_record(out, num_classes)
    except Exception as err:  # recorded: this is what timm does with the request
        record = {"ok": False, "error": one_line(err)}
    return {"model": name, **record, "seconds": round(time.perf_counter() - start, 3)}


def check_architecture(name: str, heads: Sequence[str] | None = None,
                       num_classes: int = 10) -> dict[str, Any]:
    """Swap every head kind onto ``name`` and check the output shape; never raises."""
    heads = list(heads or HEADS)
    start = time.perf_counter()
    record: dict[str, Any] = {"model": name, "device": "meta", "heads": {}}
    for device in ("meta", "cpu"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with torch.device(device):
                    backbone = load_backbone(name)
        except Exception as err:
            record.setdefault("build_errors", {})[device] = one_line(err)
            record["heads"] = {h: {"ok": False, "error": f"could not build: {one_line(err)}"}
                               for h in heads}
            continue
        record["device"] = device
        record["heads"], info = _check_heads(backbone, heads, num_classes)
        if info is not None:
            record["features"] = info.to_dict()
        if all(r["ok"] for r in record["heads"].values()):
            break
        errors = {h: r.get("error", "") for h, r in record["heads"].items() if not r["ok"]}
        if all(e.startswith("ValueError") for e in errors.values()):
            break  # headswap's own refusals: real weights would not change them
        if device == "meta":  # an operator without a meta kernel: retry with real weights
            record["meta_errors"] = errors
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def merge_records(earlier: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """An earlier record of one architecture completed by a later check of more head kinds:
    the head results side by side, the time added, built on the CPU if either check was."""
    if earlier is None:
        return new
    merged = {**earlier, **{k: v for k, v in new.items() if k not in ("heads", "seconds")}}
    merged["heads"] = {**earlier["heads"], **new["heads"]}
    merged["seconds"] = round(earlier.get("seconds", 0.0) + new.get("seconds", 0.0), 3)
    if "cpu" in (earlier.get("device"), new.get("device")):
        merged["device"] = "cpu"
    for key in ("build_errors", "meta_errors"):
        if key in earlier or key in new:
            merged[key] = {**earlier.get(key, {}), **new.get(key, {})}
    return merged


# a refusal that is the right answer: the head kind does not exist for that architecture
# (``original`` on feature encoders without a classifier; ``token`` without a class token)
NOT_APPLICABLE = ("has no classifier of its own", "has no class token")


def _not_applicable(error: str) -> bool:
    return any(marker in error for marker in NOT_APPLICABLE)


def summarize(records: Iterable[dict[str, Any]], heads: Sequence[str] | None = None
              ) -> dict[str, Any]:
    """Per-head counts of working architectures, failures with reasons, layouts and devices.

    A head that does not exist for an architecture (``original`` on timm's feature encoders,
    which have no classifier to reset; ``token`` on models without a class token) is counted as
    not applicable, with its reason, and left out of the percentage; so is a head an interrupted
    sweep has not checked yet on an architecture (``not_checked``: rerun to resume).
    """
    records = sorted(records, key=lambda r: r["model"])
    heads = list(heads or HEADS)
    per_head = {}
    failures: dict[str, list[dict[str, str]]] = {h: [] for h in heads}
    not_applicable: dict[str, list[dict[str, str]]] = {h: [] for h in heads}
    for head in heads:
        ok = unchecked = 0
        for r in records:
            res = r["heads"].get(head)
            if res is None:
                unchecked += 1
                continue
            if res["ok"]:
                ok += 1
                continue
            entry = {"model": r["model"], "error": res.get("error", "?")}
            (not_applicable if _not_applicable(entry["error"]) else failures)[head].append(entry)
        applicable = len(records) - len(not_applicable[head]) - unchecked
        per_head[head] = {"ok": ok, "total": len(records), "not_applicable": len(not_applicable[head]),
                          "percent": round(100.0 * ok / max(1, applicable), 2)}
        if unchecked:
            per_head[head]["not_checked"] = unchecked
    layouts = Counter(r.get("features", {}).get("layout", "unknown") for r in records)
    devices = Counter(r.get("device", "?") for r in records)
    single = sorted(r["model"] for r in records
                    if any("1x1" in res.get("warning", "") for res in r["heads"].values()))
    return {"architectures": len(records), "per_head": per_head, "failures": failures,
            "not_applicable": not_applicable, "layouts": dict(layouts), "devices": dict(devices),
            "single_position": single}
