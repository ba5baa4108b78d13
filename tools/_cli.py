"""Shared edge of the command-line tools: user errors become one line on stderr and exit 2."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# the tools run as scripts (python tools/x.py) from a checkout: make the packages importable
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

USER_ERRORS = (ValueError, FileNotFoundError, KeyError)


def run(main: Callable[[], int]) -> int:
    """Call ``main``; turn user errors into ``error: ...`` on stderr and exit code 2."""
    try:
        return main()
    except USER_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
