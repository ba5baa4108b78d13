"""Atomic file writes: a reader sees the old content or the new, never half a file.

Model files, run directories, study reports and caches all write through :func:`atomic_write`:
a temporary file in the same directory, flushed and fsynced, then ``os.replace``. Files end up
with the usual permissions (0666 minus the umask), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import one_line

__all__ = ["atomic_write", "atomic_write_bytes", "check_writable", "finite", "last_line",
           "read_json", "why_unreadable", "write_error", "write_json"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# what a user can cause by pointing a write somewhere it cannot go, and what it means
_WRITE_ERRORS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                 errno.EROFS: "the file system is read-only", errno.EISDIR: "it is a directory",
                 errno.ENOTDIR: "a part of the path is a file, not a directory",
                 errno.EEXIST: "a part of the path is a file, not a directory",
                 errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                 errno.ENAMETOOLONG: "the name is too long"}


def write_error(path: str | Path, err: OSError) -> ValueError | OSError:
    """A one-line ValueError for a write to ``path`` that failed for a reason the user can fix
    (permissions, a directory or file in the way, a full disk); other OSErrors unchanged."""
    reason = _WRITE_ERRORS.get(err.errno or 0)
    if reason is None:
        return err
    return ValueError(f"cannot write {str(path)!r}: {reason}; choose another path")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then rename it to ``path``.

    If ``write`` raises (or the process dies), ``path`` keeps its previous content and the
    temporary file is removed. A path that cannot be written (read-only, a directory in the way,
    a full disk) is a ValueError naming it (:func:`write_error`).
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_error(path, err) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise write_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def check_writable(path: str | Path, flag: str, directory: bool = False) -> Path:
    """Raise ValueError (naming ``flag`` and the path) when ``path`` cannot be written: a file
    where a directory is wanted or the other way round, a file in the middle of the path, or a
    directory it goes to that takes no new files (permissions, a read-only file system). Tools
    call it before any long work."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if path.is_dir() else "a file"
        want = "a directory" if directory else "a file"
        raise ValueError(f"{flag} {str(path)!r} is {kind}; give the path of {want}")
    target = path if directory else path.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise ValueError(f"{flag} {str(path)!r}: {str(target)!r} is a file, not a directory; "
                         "choose another path")
    try:  # the one reliable test (root, read-only mounts, ACLs): create a file there
        tempfile.TemporaryFile(dir=target).close()
    except OSError as err:
        reason = _WRITE_ERRORS.get(err.errno or 0, err.strerror or type(err).__name__)
        raise ValueError(f"{flag} {str(path)!r}: cannot write in {str(target)!r} ({reason}); "
                         "choose another path") from None
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON (NaN and inf as null), written atomically."""
    text = json.dumps(finite(obj), indent=2, default=str) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def why_unreadable(path: str | Path, err: BaseException) -> str:
    """Why ``torch.load`` (or another reader) failed on ``path``, in words: an empty file, a text
    file, or the reader's own one-line error for anything else."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError as os_err:
        return one_line(os_err)
    if size == 0:
        return "the file is empty (0 bytes)"
    if "weights_only" in str(err) or "Weights only load failed" in str(err):
        # torch's text would advise weights_only=False: that runs code stored in the file
        return ("it holds pickled Python objects beyond tensors (a whole pickled module, say), "
                "which are not unpickled here because unpickling runs code from the file")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return one_line(err)
    if all(c.isprintable() or c.isspace() for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"it is a text file ({size:,} bytes, starting {first!r}), not saved tensors"
    return one_line(err)


def last_line(path: str | Path) -> str | None:
    """The last non-blank line of a text file (a log: what a failed job said last), on one
    line; None when the file is missing, unreadable or blank."""
    try:
        lines = [ln for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
                 if ln.strip()]
    except OSError:
        return None
    return one_line(lines[-1]) if lines else None
