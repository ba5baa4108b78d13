"""One process per run directory: an exclusive lock on ``RUN/.lock`` that records its owner.

The lock is ``fcntl.flock`` on ``RUN/.lock`` (the kernel lets go of it when its process dies,
however it dies). The file records the owner: host, user, pid, start time and Slurm job id (from
``SLURM_JOB_ID``, with ``SLURM_RESTART_COUNT``), so that a refused process can say who holds the
run, and so that a lock whose owner is gone can be taken over: held (an inheritor of the file
outlived its owner; a network file system still holding a dead node's lock) or, where the file
system has no flock (some network file systems), merely recorded by an owner that is gone. An
owner is gone when it was a process of this host that no longer exists, an earlier run of this
very Slurm job (requeued after a preemption), or a Slurm job that is no longer in the queue
(analysis.runtime.scheduler asks squeue; when squeue cannot answer, the owner counts as
there). Locks are re-entrant within a process (a study job holds its run's lock and ``train``
takes it again). The file is removed on release, so a finished run directory holds no
``.lock``; a directory the lock created is removed again if the run left it empty.
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

from .scheduler import SLURM_LIVE, process_alive, slurm_queue

__all__ = ["LOCK_FILE", "RunInUseError", "describe_owner", "lock_owner", "lock_run_dir",
           "read_owner", "run_owner"]

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
    return {"host": socket.gethostname(), "user": _user(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slurm_restart": int(os.environ.get("SLURM_RESTART_COUNT") or 0),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv])[:500]}


def run_owner(run_dir: str | Path) -> dict[str, Any]:
    """What ``run_dir``'s lock file records about its holder (host, pid, Slurm job), or ``{}``
    without one. It does not ask whether that holder still runs (which may take a call to
    squeue): a caller that knows the run's job is running reads where it runs."""
    return read_owner(Path(run_dir) / LOCK_FILE)


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
        owner = read_owner(path)
        if _gone(owner) and _unlink_if_owner(path, owner):
            return False  # held by a stray inheritor of a dead owner's file: take it over
        raise RunInUseError(_in_use_message(path.parent, owner), owner) from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        owner = read_owner(path)  # no flock here: the record is the lock
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


def read_owner(path: str | Path) -> dict[str, Any]:
    """The owner record in the lock file ``path`` (``{}`` when missing or unreadable)."""
    try:
        owner = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _user() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return None


def _gone(owner: dict[str, Any]) -> bool:
    """The recorded owner no longer runs: a process of this host that does not exist, an
    earlier run of our own Slurm job (requeued), or a Slurm job that has left the queue."""
    job = owner.get("slurm_job_id")
    here = lock_owner()
    if job and job == here["slurm_job_id"] \
            and int(owner.get("slurm_restart") or 0) < here["slurm_restart"]:
        return True  # Slurm runs one incarnation of a job at a time (its pid may be reused)
    pid = owner.get("pid")
    if owner.get("host") == socket.gethostname() and isinstance(pid, int):
        return not process_alive(pid)
    if not job:
        return False  # another host without a job id: nothing to ask
    queue = slurm_queue(owner.get("user"))
    return queue is not None and queue.get(str(job)) not in SLURM_LIVE


def _unlink_if_owner(path: Path, owner: dict[str, Any]) -> bool:
    if read_owner(path) != owner:
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    return True


def describe_owner(owner: dict[str, Any]) -> str:
    """Who an owner record (:func:`lock_owner`) names, for a message: ``pid 12 on host since
    2026-01-01T10:00:00+0000 (Slurm job 345)``."""
    who = (f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"
           if owner else "another process (it has not recorded itself yet)")
    if owner.get("slurm_job_id"):
        who += f" (Slurm job {owner['slurm_job_id']})"
    return who


def _in_use_message(run_dir: Path, owner: dict[str, Any]) -> str:
    return (f"run directory {str(run_dir)!r} is in use by {describe_owner(owner)}; wait for it "
            "to finish (or stop it), or choose another --name")


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
