"""An exclusive lock on a cache directory, so that two processes build a cache (or download a
data set) once: the first builds while the others wait, then find it built.

``flock`` on a lock file in the directory: the kernel releases it when its holder exits, even
when it is killed, so a crashed builder never blocks the next one. The file holds its owner's
record (host, pid, start, Slurm job: analysis.runtime.run_lock), which a waiting process names.
Where ``fcntl`` is missing
(Windows), the file system has no flock (some network file systems), or the directory is
read-only (a shared cache built beforehand), the lock is a no-op.
"""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .run_lock import describe_owner, lock_owner

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

__all__ = ["exclusive_lock"]


@contextmanager
def exclusive_lock(folder: str | Path, what: str = "", progress: bool = True,
                   name: str = "lock") -> Iterator[None]:
    """Hold the lock file ``folder/name`` (both created if needed) inside the ``with`` block;
    when another process holds it, say so on stderr (``progress``) and wait for it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / name, "a+", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:  # a read-only cache: nobody can build it, so there is nothing to wait for
        yield
        return
    with f:
        if not _wait_for(f, folder, what, progress):
            yield  # no flock here (not POSIX, or not this file system): go ahead unguarded
            return
        try:
            f.seek(0)
            f.truncate()
            f.write(json.dumps(lock_owner()))
            f.flush()
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_UN)


def _wait_for(f: Any, folder: Path, what: str, progress: bool) -> bool:
    """Take the flock of ``f``, waiting (and saying so) while another process holds it; False
    when the file system has no flock."""
    if fcntl is None:
        return False
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_owner(_owner(f))
            if progress:
                print(f"waiting for {holder} ({what or 'building'} in {folder}) ...",
                      file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        return False
    return True


def _owner(f: Any) -> dict[str, Any]:
    """The owner record in the open lock file ``f`` (``{}`` when empty or unreadable)."""
    f.seek(0)
    try:
        owner = json.loads(f.read() or "{}")
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}
