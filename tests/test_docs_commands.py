"""Every command the README and the docs show is parsed by its tool's own parser.

Commands are read from code blocks (fenced, indented, ``$ `` prompts) and inline code
(``python tools/X.py ...``); line continuations are joined, trailing comments, optional parts
written as ``[--flag N]`` and ``...`` are dropped. A renamed or removed flag in a tool fails
here until the page shows the new spelling. The short ones run: every swap_head example with
its output (the README, docs/heads.md) prints exactly what the page shows.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shlex
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SCRIPT = re.compile(r"(?:^|\s)((?:tools|benchmarks)/\w+\.py)(?=\s|$)")
INLINE = re.compile(r"`((?:[\w=. -]*\s)?(?:python|torchrun)\s[^`]*(?:tools|benchmarks)/\w+\.py[^`]*)`")
RUNS = re.compile(r"(?:^|\s)(?:python|torchrun)\s")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
INDENTED = re.compile(r"(?:^(?: {4}|\t)[^\n]*\n?)+", re.M)


def _joined(block: str) -> list[str]:
    """The lines of a code block with ``\\`` continuations joined and prompts removed."""
    text = re.sub(r"\\\n\s*", " ", block)
    return [line.strip().removeprefix("$ ") for line in text.splitlines()]


def _commands(page: Path) -> list[str]:
    """Every line of ``page`` that runs a script of tools/ or benchmarks/."""
    text = page.read_text(encoding="utf-8")
    lines = [line for m in FENCE.finditer(text) for line in _joined(m.group(1))]
    outside = FENCE.sub("", text)
    if page != ROOT / "README.md":  # the front door has no indented code, only nested lists
        lines += [line for m in INDENTED.finditer(outside) for line in _joined(m.group(0))]
    lines += [m.group(1) for m in INLINE.finditer(outside)]
    return [line for line in lines if SCRIPT.search(line) and RUNS.search(line)]


def _argv(command: str) -> tuple[str, list[str]]:
    """The script and its arguments, placeholders for optional parts removed."""
    command = re.sub(r"\s#\s.*$", "", command)      # a trailing comment
    command = re.sub(r"\[[^\]]*\]", " ", command)   # [--train-size N]: optional
    words = shlex.split(command.replace("...", " "))
    at = next(i for i, w in enumerate(words) if SCRIPT.fullmatch(" " + w))
    return words[at], [w for w in words[at + 1:] if w not in ("|", ">", "2>&1")]


@cache
def _module(script: str) -> ModuleType:
    path = ROOT / script
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"_shown_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHOWN = sorted({(str(page.relative_to(ROOT)), command)
                for page in PAGES for command in _commands(page)})


def test_the_front_door_shows_commands():
    pages = {page for page, _ in SHOWN}
    assert "README.md" in pages and len(pages) >= 8 and len(SHOWN) >= 40


@pytest.mark.parametrize("page, command", SHOWN)
def test_a_shown_command_parses(page: str, command: str):
    script, argv = _argv(command)
    assert (ROOT / script).is_file(), f"{page} shows {script}, which does not exist"
    parser = _module(script).build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    try:
        parser.parse_args(argv)
    except SystemExit as exit_:
        pytest.fail(f"{page} shows `{command}`, which {script}'s parser refuses (exit {exit_})")


SHOWN_OUTPUT = re.compile(r"^```console\n\$ python tools/swap_head\.py ([^\n]*)\n(.*?)^```",
                          re.M | re.S)
EXAMPLES = sorted({(str(page.relative_to(ROOT)), m.group(1), m.group(2))
                   for page in PAGES for m in SHOWN_OUTPUT.finditer(page.read_text())})


def test_the_swap_head_examples_are_shown():
    assert {page for page, _, _ in EXAMPLES} >= {"README.md", "docs/heads.md"}


@pytest.mark.parametrize("page, args, shown", EXAMPLES)
def test_a_shown_swap_head_example_prints_what_the_page_shows(page, args, shown, capsys):
    """The short commands run: swap_head's output on every page equals what the page shows."""
    assert _module("tools/swap_head.py").main(shlex.split(args)) == 0
    assert capsys.readouterr().out == shown, f"{page}: `swap_head.py {args}` prints otherwise"
