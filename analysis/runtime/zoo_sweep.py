"""The zoo sweeps' common frame: a resumable JSONL store, a pool with a per-item budget, and the
report files.

A sweep maps one function over many items (architectures, architecture x head pairs) that take
seconds to minutes each and may crash, hang or be interrupted. :class:`JsonlStore` keeps every
finished row as one JSON line, so the same command resumes where a run stopped (later lines win;
a line cut short by a kill is skipped). :func:`run_sweep` runs the items in worker processes
(analysis.runtime.process_pool), appends each result's rows to the store as it comes, shows a
progress bar over rows, and stops cleanly on Ctrl-C or SIGTERM, keeping what was written.
:class:`ItemBudget` bounds one item in CPU or wall-clock seconds and says what it took;
:func:`write_files` writes the report files atomically, :func:`command_line` names the command.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from surgery import atomic_write_bytes, finite

from .budgets import budget
from .process_pool import map_unordered
from .signals import sigterm_as_interrupt

__all__ = ["ItemBudget", "JsonlStore", "SweepRun", "command_line", "run_sweep", "write_files"]

Row = dict[str, Any]


class JsonlStore:
    """Finished rows of a sweep in the JSONL file ``path``, by ``key(row)``; :meth:`load` reads
    what earlier runs wrote and :meth:`writing` appends the rows of this one."""

    def __init__(self, path: str | Path, key: Callable[[Row], Hashable]):
        self.path, self.key = Path(path), key
        self.rows: dict[Hashable, Row] = {}
        self._sink: IO[str] | None = None

    def load(self) -> dict[Hashable, Row]:
        """Read the file (if any) into :attr:`rows`: later lines win, a line cut short is
        skipped."""
        self.rows = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by an interruption
                self.rows[self.key(row)] = row
        return self.rows

    @contextmanager
    def writing(self, fresh: bool = False) -> Iterator[JsonlStore]:
        """Hold the file open for :meth:`add` (``fresh``: start it empty)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w" if fresh else "a") as sink:
            if not fresh and not _ends_a_line(self.path):
                sink.write("\n")  # after a line cut short: the next row starts a line of its own
            self._sink = sink
            try:
                yield self
            finally:
                self._sink = None

    def add(self, rows: Iterable[Row]) -> int:
        """Append ``rows`` (one line each, flushed) and keep them in :attr:`rows`; returns how
        many."""
        if self._sink is None:
            raise RuntimeError("JsonlStore.add() outside JsonlStore.writing()")
        n = 0
        for row in rows:
            self.rows[self.key(row)] = row
            self._sink.write(json.dumps(row) + "\n")
            n += 1
        self._sink.flush()
        return n


def _ends_a_line(path: Path) -> bool:
    """Whether ``path`` is empty or ends with a newline."""
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


class ItemBudget:
    """One item's budget and clock: inside ``with ItemBudget("cpu", 900) as item:`` the budget's
    exception (CpuBudgetExceeded, WallBudgetExceeded) is raised once it is spent; afterwards
    ``item.seconds`` (wall) and ``item.cpu_seconds`` (this process's CPU) say what it took.
    CPU time does not grow when other jobs share the machine; wall time does."""

    def __init__(self, kind: str, seconds: float | None):
        self._budget: AbstractContextManager[Any] = budget(kind, seconds)
        self.seconds = self.cpu_seconds = 0.0
        self._start = self._cpu = 0.0

    def __enter__(self) -> ItemBudget:
        self._start, self._cpu = time.perf_counter(), time.process_time()
        self._budget.__enter__()
        return self

    def __exit__(self, *exc: Any) -> bool:
        try:
            return bool(self._budget.__exit__(*exc))
        finally:
            self.seconds = time.perf_counter() - self._start
            self.cpu_seconds = time.process_time() - self._cpu


@dataclass
class SweepRun:
    """What one invocation of a sweep did: ``computed`` rows written, whether an interrupt
    (Ctrl-C, SIGTERM) stopped it, its wall time in seconds."""

    computed: int
    interrupted: bool
    seconds: float


def _one_row(result: Any) -> list[Row]:
    return [result]


def run_sweep(work: Callable[[Any], Any], tasks: Sequence[Any], store: JsonlStore, *,
              jobs: int, rows: Callable[[Any], list[Row]] = _one_row, fresh: bool = False,
              start: str = "spawn", max_tasks_per_child: int | None = None,
              initializer: Callable[..., None] | None = None, total: int | None = None,
              desc: str = "items", unit: str = "item", progress: bool = True,
              bar_file: IO[str] | None = None) -> SweepRun:
    """``work`` over ``tasks`` in ``jobs`` worker processes (``start``: fork or spawn; each
    replaced after ``max_tasks_per_child`` tasks; ``initializer`` run in each first), each
    result's ``rows(result)`` appended to ``store`` as it comes, a bar over ``total`` rows
    (default: one per task). Ctrl-C or SIGTERM stops the workers at once; the rows written
    stay and the run says it was interrupted (the tasks under way run again next time)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    computed, interrupted = 0, False
    with store.writing(fresh), sigterm_as_interrupt(), \
            tqdm(total=len(tasks) if total is None else total, desc=desc, unit=unit,
                 disable=not progress, file=bar_file or sys.stderr) as bar:
        results = map_unordered(work, tasks, jobs, start=start,
                                max_tasks_per_child=max_tasks_per_child, initializer=initializer)
        try:
            for result in results:
                n = store.add(rows(result))
                computed += n
                bar.update(n)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            results.close()  # stops the workers now, not when the generator is collected
    return SweepRun(computed, interrupted, time.perf_counter() - t0)


def write_files(out_dir: str | Path, files: Mapping[str, str | Mapping[str, Any]], *,
                indent: int = 2) -> list[Path]:
    """Write each report file into ``out_dir`` atomically: text as it is, a mapping as JSON
    (``indent``; NaN and inf as null). Returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in files.items():
        text = content if isinstance(content, str) else \
            json.dumps(finite(content), indent=indent, default=str) + "\n"
        paths.append(atomic_write_bytes(out / name, text.encode()))
    return paths


def command_line(tool: str, argv: Sequence[str] | None) -> str:
    """The command a report records: ``python tools/TOOL ARGS`` (``argv`` None: this
    process's arguments)."""
    return f"python tools/{tool} " + " ".join(sys.argv[1:] if argv is None else argv)
