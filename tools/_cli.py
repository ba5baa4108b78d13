"""The one edge of the command-line tools: user errors become one line on stderr and an exit code.

Every tool ends ``sys.exit(run(main))``. A ``ValueError`` or ``FileNotFoundError`` (raised by the
library for anything a user can cause) prints ``error: <message>`` and exits 2, or the
exception's own ``exit_code`` (a NaN/inf training loss exits 3 from every tool). Anything else
is a bug and keeps its traceback. Ctrl-C exits 130 with one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

USER_ERROR_EXIT = 2

# the tools run as scripts (python tools/x.py) from a checkout: make the packages importable
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from surgery.ranges import POSITIVE_FLOAT, POSITIVE_INT  # noqa: E402


class CliParser(argparse.ArgumentParser):
    """argparse with the tools' one-line errors: ``error: MESSAGE (see PROG --help)``, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR_EXIT, f"error: {message} (see {self.prog} --help)\n")


# argparse types for counts and sizes (``--sizes 0`` is refused) and for durations and budgets
positive_int = POSITIVE_INT.arg_type("a positive integer")
positive_float = POSITIVE_FLOAT.arg_type("a positive number")


USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)


def exit_code(err: BaseException) -> int:
    """The exit code a user error ends a tool with: its ``exit_code`` attribute, else 2."""
    code = getattr(err, "exit_code", USER_ERROR_EXIT)
    return code if isinstance(code, int) else USER_ERROR_EXIT


def run(main: Callable[[], int]) -> int:
    """Call ``main``; turn user errors into ``error: ...`` on stderr and their exit code."""
    try:
        return main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
