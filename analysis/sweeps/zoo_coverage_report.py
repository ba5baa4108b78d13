"""Markdown rendering of a zoo-coverage summary (analysis.sweeps.zoo_checks.summarize)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from tabulate import tabulate

__all__ = ["render_markdown"]


def _group_failures(failures: list[dict[str, str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in failures:
        groups[f["error"]].append(f["model"])
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _reason(error: str) -> str:
    """A refusal without the model's name, so that one reason groups many architectures:
    'ValueError: vit_x has no class token (...)' -> 'no class token (...)'."""
    text = error.split(": ", 1)[-1]
    for marker in (" has no ",):
        if marker in text:
            return "no " + text.split(marker, 1)[1]
    return text


def _not_applicable_lines(na: dict[str, list[dict[str, str]]]) -> list[str]:
    """Per head, the architectures where it does not exist, grouped by the reason."""
    na = {h: v for h, v in na.items() if v}
    if not na:
        return []
    lines = ["## Not applicable", ""]
    for head, entries in na.items():
        lines.append(f"- {head}: {len(entries)} architectures")
        groups: dict[str, list[str]] = defaultdict(list)
        for e in entries:
            groups[_reason(e["error"])].append(e["model"])
        for reason, models in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  - {reason}: {len(models)} ({', '.join(models)})")
    return [*lines, ""]


def render_markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    """The committed report: per-head totals, layouts seen, and every failure with its reason."""
    rows = [[h, s["ok"], s.get("not_applicable", 0),
             s["total"] - s["ok"] - s.get("not_applicable", 0) - s.get("not_checked", 0),
             s["total"], f"{s['percent']:.2f}%"] for h, s in summary["per_head"].items()]
    unchecked = {h: s["not_checked"] for h, s in summary["per_head"].items() if s.get("not_checked")}
    lines = [
        "# Zoo coverage: every head kind on every timm architecture",
        "",
        f"timm {meta['timm']}, torch {meta['torch']}, Python {meta['python']}, {meta['machine']}.",
        f"Command: `python tools/zoo_coverage.py --jobs 2` (resumable: records accumulate in "
        f"`zoo_coverage.jsonl`; last invocation `{meta['command']}`, {meta['seconds_this_run']} s). "
        f"The per-architecture checks add up to {meta.get('worker_minutes', '?')} minutes of worker "
        "time (two workers, on a machine shared with other jobs).",
        "",
        f"A head works on an architecture when a batch of 2 at the model's default input size "
        f"gives `(2, {meta['num_classes']})` logits. Built on the meta device (no weights, no "
        "compute) where possible, with real weights otherwise.",
        "",
        tabulate(rows, headers=["head", "working", "not applicable", "failing", "architectures",
                                "coverage of applicable"], tablefmt="github"),
        "",
        *(["**Sweep in progress**: not checked yet: " + ", ".join(
            f"{h} on {n:,} architectures" for h, n in unchecked.items())
           + " (their rows count only the architectures checked so far; rerun the command to "
           "resume).", ""] if unchecked else []),
        "Feature layouts: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["layouts"].items()))
        + ". Built on: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["devices"].items()))
        + ".",
        "",
    ]
    tm = meta.get("timm_max")
    if tm:
        top = sorted(tm["failure_reasons"].items(), key=lambda kv: -kv[1])[:4]
        lines += [f"For comparison, timm's own `reset_classifier({meta['num_classes']}, "
                  f"global_pool='max')` gives the right output shape on {tm['ok']:,} of "
                  f"{tm['architectures']:,} architectures (`{tm['command']}`, "
                  "zoo_timm_max.json); a right shape does not show that timm pooled by max over "
                  "patch positions only. Most common refusals: "
                  + "; ".join(f"{reason} ({n})" for reason, n in top) + ".", ""]
    if summary.get("single_position"):
        lines += [f"Final grid 1x1 at the default size (gap, gmp and flatten coincide there): "
                  f"{len(summary['single_position'])} architectures: "
                  + ", ".join(summary["single_position"]) + ".", ""]
    lines += _not_applicable_lines(summary.get("not_applicable", {}))
    lines.append("## Failures")
    any_failure = False
    for head, failures in summary["failures"].items():
        if not failures:
            continue
        any_failure = True
        lines += ["", f"### {head}: {len(failures)}", ""]
        for reason, models in _group_failures(failures).items():
            lines.append(f"- {reason}: {len(models)} ({', '.join(models)})")
    if not any_failure:
        lines += ["", "None: every head kind works on every architecture."]
    return "\n".join(lines) + "\n"
