"""One process per run directory: an exclusive lock on ``RUN/.lock`` that records its owner.

The lock is ``fcntl.flock`` on ``RUN/.lock`` (the kernel lets go of it when its process dies,
however it dies). The file records the owner: host, pid, start time and Slurm job id (from
``SLURM_JOB_ID``), so that a refused process can say who holds the run, and so that a lock whose
owner is gone can be taken over: held but recorded by a process that no longer exists on this host
(an inheritor of the file outlived it), or, where the file system has no flock (some network file
systems), recorded by a dead process of this host. Locks are re-entrant within a process (a study
job holds its run's lock and ``train`` takes it again). The file is removed on release, so a
finished run directory holds no ``.lock``; a directory the lock created is removed again if the
run left it empty.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunInUseError", "lock_owner", "lock_run_dir"]

LOCK_FILE = ".lock"

try:
    import fcntl
except ImportError:  # not POSIX: the owner record alone is the lock
    fcntl = None  # type: ignore[assignment]


class RunInUseError(ValueError):
    """Another live process holds the run directory. ``owner`` is its record (may be empty).

    ``job_status`` tells a study's worker to report the run as busy, not failed.
    """

    job_status = "busy"

    def __init__(self, message: str, owner: dict[str, Any]):
        super().__init__(message)
        self.owner = owner


@dataclass
class _Held:
    fd: int
    path: Path
    created_dir: bool
    count: int = 1


_HELD: dict[str, _Held] = {}


def lock_owner() -> dict[str, Any]:
    """What the lock file records about this process."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:500]}


@contextmanager
def lock_run_dir(run_dir: str | Path, *, create: bool = True) -> Iterator[Path]:
    """Hold ``RUN/.lock`` for the ``with`` block; :class:`RunInUseError` if another process does.

    ``create`` makes the directory (removed again on release if it is then empty); without it a
    missing directory is a FileNotFoundError.
    """
    run_dir = Path(run_dir)
    key = os.path.abspath(run_dir)
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
    else:
        held = _HELD[key] = _acquire(run_dir, create)
    try:
        yield run_dir
    finally:
        held.count -= 1
        if held.count == 0:
            del _HELD[key]
            _release(held, run_dir)


def _acquire(run_dir: Path, create: bool) -> _Held:
    created = False
    if not run_dir.is_dir():
        if not create:
            raise FileNotFoundError(f"run directory {str(run_dir)!r} does not exist")
        try:
            run_dir.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not run_dir.is_dir():
                raise ValueError(f"{str(run_dir)!r} exists and is not a directory; choose another "
                                 "--name or --out") from None
    path = run_dir / LOCK_FILE
    for _ in range(10):  # the file may be replaced under us; try again then
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _try_lock(fd, path):
                _write_owner(fd)
                return _Held(fd, path, created)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise RunInUseError(f"could not lock {str(path)!r}: it keeps changing; is another process "
                        "taking it?", {})


def _try_lock(fd: int, path: Path) -> bool:
    """Lock ``fd`` (the file at ``path``): True when held; False to try again with a new file."""
    try:
        if fcntl is None:
            raise OSError(errno.ENOLCK, "no flock")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = _read_owner(path)
        if _gone(owner) and _unlink_if_owner(path, owner):
            return False  # held by a stray inheritor of a dead owner's file: take it over
        raise RunInUseError(_in_use_message(path.parent, owner), owner) from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        owner = _read_owner(path)  # no flock here: the record is the lock
        if owner and not _gone(owner) and owner.get("pid") != os.getpid():
            raise RunInUseError(_in_use_message(path.parent, owner), owner) from None
        return True
    try:  # the file we locked must still be the one at ``path`` (not unlinked by a release)
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _write_owner(fd: int) -> None:
    data = json.dumps(lock_owner()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _read_owner(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _gone(owner: dict[str, Any]) -> bool:
    """The recorded owner ran on this host and no longer exists."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _unlink_if_owner(path: Path, owner: dict[str, Any]) -> bool:
    if _read_owner(path) != owner:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return True


def _in_use_message(run_dir: Path, owner: dict[str, Any]) -> str:
    who = (f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"
           if owner else "another process (it has not recorded itself yet)")
    if owner.get("slurm_job_id"):
        who += f" (Slurm job {owner['slurm_job_id']})"
    return (f"run directory {str(run_dir)!r} is in use by {who}; wait for it to finish (or stop "
            "it), or choose another --name")


def _release(held: _Held, run_dir: Path) -> None:
    try:
        held.path.unlink()  # while still locked: a process waiting on this file tries again
    except FileNotFoundError:
        pass
    finally:
        os.close(held.fd)
    if held.created_dir:
        try:
            run_dir.rmdir()  # only if the run left nothing in it
        except OSError:
            pass
