"""Export coverage rows -> totals per head and layout, and the committed markdown report.

:func:`summarise` counts, per head and over all pairs, how many export, verify and keep dynamic
height and width; "not applicable" pairs (a head the backbone cannot take) are left out of the
shares. :func:`render_markdown` formats that and every row last, without computing anything.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

__all__ = ["TARGET_PERCENT", "fixed_reason_kind", "layout_of", "render_markdown", "summarise"]

TARGET_PERCENT = 95.0
_NA = "not applicable"


def layout_of(row: dict[str, Any]) -> str:
    """The layout stratum of a row: what the probe saw (lists of token sequences apart), else
    the layout the sample chose it for."""
    layout = row.get("layout")
    if layout is None:
        return str(row.get("sample_layout", "?"))
    if layout == "NLC":
        return "lists" if row.get("from_list") else "tokens"
    return str(layout)


def fixed_reason_kind(reason: str | None) -> str | None:
    """A fixed-size reason in one of a few words, for counting."""
    if reason is None:
        return None
    for needle, kind in (("head is built for", "Flatten head (by design)"),
                         ("refuses other input sizes", "backbone refuses other sizes (timm)"),
                         ("torch.export specialised", "torch.export specialised H/W (exporter)"),
                         ("fails at", "dynamic graph fails at another size (exporter)")):
        if needle in reason:
            return kind
    return "other: " + reason[:80]


def _why_not_dynamic(row: dict[str, Any]) -> str:
    """Why a verified pair does not count as dynamic in height and width."""
    if "height" in row["dynamic_axes"]:  # the file is dynamic; no other size could be checked
        return "H/W dynamic in the file, the other size checked refused by the model (unverified)"
    return fixed_reason_kind(row["fixed_reason"]) or "other: no reason recorded"


def _counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    applicable = [r for r in rows if r.get("limitation") != _NA]
    n = len(applicable)
    verified = sum(1 for r in applicable if r["verified"])
    dynamic = sum(1 for r in applicable if r["verified"] and r["dynamic_hw"])
    return {
        "pairs": len(rows), "applicable": n,
        "exported": sum(1 for r in applicable if r["exported"]),
        "verified": verified, "dynamic_hw": dynamic,
        "dynamo": sum(1 for r in applicable if r["exporter"] == "dynamo"),
        "torchscript": sum(1 for r in applicable if r["exporter"] == "torchscript"),
        "percent_verified": 100.0 * verified / n if n else 0.0,
        "percent_dynamic_hw": 100.0 * dynamic / n if n else 0.0,
    }


def summarise(rows: Sequence[dict[str, Any]], heads: Sequence[str]) -> dict[str, Any]:
    """Totals per head, per layout and overall; failures and fixed-size reasons, counted."""
    by_layout: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_layout[layout_of(r)].append(r)
    failures = [{k: r.get(k) for k in ("model", "head", "stage", "limitation", "error")}
                for r in rows if not r["verified"] and r.get("limitation") != _NA]
    total = _counts(rows)
    return {
        "architectures": len({r["model"] for r in rows}),
        "total": total,
        "target_met": total["percent_verified"] >= TARGET_PERCENT,
        "per_head": {h: _counts([r for r in rows if r["head"] == h]) for h in heads},
        "per_layout": {k: {**_counts(v), "architectures": len({r["model"] for r in v})}
                       for k, v in sorted(by_layout.items())},
        "fixed_reasons": dict(Counter(_why_not_dynamic(r) for r in rows
                                      if r["verified"] and not r["dynamic_hw"]).most_common()),
        "limitations": dict(Counter(f["limitation"] for f in failures).most_common()),
        "failures": failures,
        "not_applicable": [{"model": r["model"], "head": r["head"]} for r in rows
                           if r.get("limitation") == _NA],
    }


def _pct(part: int, whole: int) -> str:
    return f"{part} ({100.0 * part / whole:.1f}%)" if whole else "0"


def _summary_table(summary: dict[str, Any], heads: Sequence[str]) -> str:
    rows = []
    for name, c in [*((h, summary["per_head"][h]) for h in heads), ("all", summary["total"])]:
        rows.append([name, c["applicable"], _pct(c["exported"], c["applicable"]),
                     _pct(c["verified"], c["applicable"]), _pct(c["dynamic_hw"], c["applicable"]),
                     c["dynamo"], c["torchscript"]])
    return tabulate(rows, headers=["head", "pairs", "exported", "exported + verified",
                                   "dynamic H and W (verified)", "dynamo", "TorchScript"],
                    tablefmt="github")


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return ""
    if row.get("limitation") == _NA:
        return "n/a"
    if not row["verified"]:
        return f"✗ {row.get('stage') or 'verify'}"
    axes = "B·H·W" if row["dynamic_hw"] else ("B" if "batch" in row["dynamic_axes"] else "fixed")
    return f"✓ {axes}" + (" (TS)" if row["exporter"] == "torchscript" else "")


def _architecture_table(rows: Sequence[dict[str, Any]], heads: Sequence[str]) -> str:
    by_model: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_model[r["model"]][r["head"]] = r
    table = []
    for model in sorted(by_model):
        cells = by_model[model]
        first = next(iter(cells.values()))
        params = first.get("params")
        table.append([model, layout_of(first), f"{params / 1e6:.1f}" if params else "",
                      first.get("input_size") or "", *(_cell(cells.get(h)) for h in heads)])
    return tabulate(table, headers=["architecture", "layout", "params (M)", "input", *heads],
                    tablefmt="github")


def _failure_lines(summary: dict[str, Any]) -> list[str]:
    if not summary["failures"]:
        return ["None: every applicable pair exported and verified.", ""]
    rows = [[f["model"], f["head"], f["stage"], f["limitation"], str(f["error"]).replace("|", "/")]
            for f in summary["failures"]]
    return [tabulate(rows, headers=["architecture", "head", "stage", "whose limitation",
                                    "reason"], tablefmt="github"), ""]


def _fallback_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Pairs the TorchScript exporter wrote, with the dynamo exporter's reason (a limitation
    of torch.export / the dynamo exporter, named as such)."""
    fell = [[r["model"], r["head"], str(r.get("fallback_reason") or "").replace("|", "/")]
            for r in rows if r.get("exporter") == "torchscript"]
    if not fell:
        return ["None: the dynamo exporter wrote every exported pair.", ""]
    return [tabulate(fell, headers=["architecture", "head", "why the dynamo exporter failed"],
                     tablefmt="github"), ""]


def _selection(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    selected = meta.get("selected") or []
    n = len(selected) or summary["architectures"]
    if not meta.get("sampled", True):
        text = f"Architectures: the {n} named on the command line."
    else:
        text = (f"Sample: {n} architectures of the {meta['candidates']} with at most "
                f"{meta['max_params'] / 1e6:.0f} M backbone parameters (docs/zoo_table.csv), "
                "chosen deterministically per feature layout (every layout present; one "
                "architecture per timm module in turn, in SHA-256 order).")
    if summary["architectures"] < n:
        text += (f" **Rows so far for {summary['architectures']} of the {n}** (they run "
                 "layout by layout in turn, smallest first); the others are listed at the end.")
    return text


def _pending_lines(rows: Sequence[dict[str, Any]], heads: Sequence[str],
                   meta: dict[str, Any]) -> list[str]:
    """What the command has not computed yet: architectures without rows, and per head how
    many architectures it has rows for."""
    done = {(r["model"], r["head"]) for r in rows}
    selected = list(meta.get("selected") or [])
    if not selected or len(done) >= len(selected) * len(heads):
        return []
    per_head = ", ".join(f"{h} {sum((m, h) in done for m in selected)}" for h in heads)
    missing = [m for m in selected if not any((m, h) in done for h in heads)]
    lines = ["## Not computed yet", "",
             f"Architectures with a row, per head: {per_head} (of {len(selected)}).", ""]
    if missing:
        lines += [f"No row yet ({len(missing)}): " + ", ".join(missing) + ".", ""]
    return lines


def _invocation_lines(invocations: Sequence[dict[str, Any]]) -> list[str]:
    """The commands whose rows the report holds, when it took more than one (a resumed run)."""
    if len(invocations) < 2:
        return []
    notes = any(v.get("note") for v in invocations)  # e.g. why a run was stopped
    table = [[i + 1, f"`{v['command']}`", v["pairs"], v.get("minutes"), v["jobs"], v["finished"],
              *([v.get("note") or ""] if notes else [])] for i, v in enumerate(invocations)]
    headers = ["#", "command", "pairs", "minutes", "jobs", "finished", *(["note"] if notes else [])]
    return ["The rows were computed by these invocations (each resumed the one before):", "",
            tabulate(table, headers=headers, tablefmt="github", missingval="?"), ""]


def render_markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any],
                    heads: Sequence[str], meta: dict[str, Any]) -> str:
    """The committed report: how it was made, totals, reasons for fixed sizes and failures,
    and one line per architecture."""
    t = summary["total"]
    verdict = "met" if summary["target_met"] else "not met"
    layouts = [[k, v["architectures"], v["applicable"], _pct(v["verified"], v["applicable"]),
                _pct(v["dynamic_hw"], v["applicable"])] for k, v in summary["per_layout"].items()]
    fixed = [[k, n] for k, n in summary["fixed_reasons"].items()]
    return "\n".join([
        "# Export coverage: ONNX export and onnxruntime verification",
        "",
        f"Produced by `{meta['command']}` on {meta['machine']}; onnx {meta['onnx']}, onnxscript "
        f"{meta['onnxscript']}, onnxruntime {meta['onnxruntime']}, opset {meta['opset']}. "
        f"{meta['timing']}",
        "",
        *_invocation_lines(meta.get("invocations") or []),
        _selection(summary, meta) + " Heads: " + ", ".join(heads) + ". Each pair is built "
        "with random weights (seed 0) at the architecture's default input size, exported with "
        "`--dynamic auto` (dynamo exporter first, TorchScript as fallback) and run in "
        "onnxruntime (CPU) against torch (eval) at that size and about 0.75x of it, batch 3; a "
        "size passes when max |diff| <= 1e-4 x max |torch| + 1e-5. Verified: every size the "
        "file and the model take passes (fixed-size exports count). Dynamic H and W: verified "
        "at a size other than the one traced.",
        "",
        f"**{t['verified']} of {t['applicable']} pairs ({t['percent_verified']:.1f}%) export "
        f"and verify** (target {TARGET_PERCENT:.0f}%: {verdict}); **{t['dynamic_hw']} "
        f"({t['percent_dynamic_hw']:.1f}%) with dynamic height and width**.",
        "",
        _summary_table(summary, heads),
        "",
        "## By feature layout",
        "",
        tabulate(layouts, headers=["layout", "architectures", "pairs", "exported + verified",
                                   "dynamic H and W"], tablefmt="github"),
        "",
        "## Why height and width are fixed (verified pairs)",
        "",
        tabulate(fixed, headers=["reason", "pairs"], tablefmt="github") if fixed else "None.",
        "",
        "## TorchScript fallbacks: where the dynamo exporter failed (exporter limitation)",
        "",
        *_fallback_lines(rows),
        "## Failures, and whose limitation each is",
        "",
        *_failure_lines(summary),
        "## Every architecture",
        "",
        "✓ B·H·W: verified, dynamic batch, height and width; ✓ B: verified, dynamic batch, fixed "
        "height and width; (TS): the TorchScript exporter was used; ✗ stage: failed there (see "
        "Failures); n/a: the head does not apply. Full rows (exporter, reasons, differences per "
        "size, seconds) in export_coverage.json.",
        "",
        _architecture_table(rows, heads),
        "",
        *_pending_lines(rows, heads, meta),
    ])
