"""Building a decode cache's array: resumable, reusing what earlier arrays hold, renamed into place.

A decode writes into ``partial-<digest>.npy`` (uint8 ``(N, C, S, S)``, disk space reserved up
front) and marks each finished row in ``partial-<digest>-done.npy``; its file list is in
``partial-<digest>.json``. An interrupted decode of the same files resumes from its done rows; a
decode of a changed folder first copies the rows of unchanged files (same path, size and
modification time) from the last complete array and from interrupted decodes. Only when every
row is done is the array renamed to ``images-<digest>.npy`` and the manifest written (atomically)
to point to it: a reader never sees a half-decoded array as complete.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from surgery import read_json, write_error, write_json

from .decode_pool import decode_files
from .images import BadImageError

__all__ = ["CHUNK_BYTES", "VERSION", "DecodeSpec", "Entry", "array_name", "chunk_checksums", "damaged_rows", "decode_missing", "promote", "start_partial", "write_manifest"]

VERSION = 1  # of the cache layout and of decoding: a new version decodes again
Entry = tuple[str, int, int, int]  # path relative to the folder, size (bytes), mtime (ns), label


@dataclass(frozen=True)
class DecodeSpec:
    """What decoded pixels depend on besides the files: the square size (px), the resize policy
    and the colour mode."""

    size: int
    resize: str
    gray: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.gray else 3


def array_name(digest: str) -> str:
    """The file name of the complete array of file list ``digest``."""
    return f"images-{digest}.npy"


def _partial_paths(folder: Path, digest: str) -> tuple[Path, Path, Path]:
    """The array, done flags and file list of a decode in progress."""
    return (folder / f"partial-{digest}.npy", folder / f"partial-{digest}-done.npy",
            folder / f"partial-{digest}.json")


def start_partial(folder: Path, entries: list[Entry], settings: dict[str, Any], digest: str,
             spec: DecodeSpec) -> tuple[np.memmap, np.memmap]:
    """The array being decoded and its done flags: an interrupted decode of these very files
    resumes in place; otherwise a new one starts with the rows of unchanged files copied from
    the last complete cache and from interrupted decodes of other file lists (then removed)."""
    shape = (len(entries), spec.channels, spec.size, spec.size)
    array_path, done_path, info_path = _partial_paths(folder, digest)
    if info_path.is_file():
        try:
            data = np.load(array_path, mmap_mode="r+")
            done = np.load(done_path, mmap_mode="r+")
            if tuple(data.shape) == shape and tuple(done.shape) == shape[:1]:
                return data, done
        except (OSError, ValueError):
            pass
    data, done = _new_arrays(array_path, done_path, shape)
    write_json(info_path, {"settings": settings, "digest": digest, "files": entries})
    for old_entries, old, usable in _reuse_sources(folder, digest):
        _copy_unchanged(entries, data, done, old_entries, old, usable)
    for old_info in folder.glob("partial-*.json"):
        if old_info != info_path:
            _remove(*_partial_paths(folder, old_info.stem.split("-", 1)[1]))
    return data, done


def _new_arrays(array_path: Path, done_path: Path,
                shape: tuple[int, ...]) -> tuple[np.memmap, np.memmap]:
    """A fresh array with its disk space reserved up front (a full disk is an error now, not a
    crash while writing through the memory map), and its per-row done flags (all 0)."""
    need = int(np.prod(shape))
    free = shutil.disk_usage(array_path.parent).free
    if need > free:
        raise ValueError(f"the decode cache needs {need / 2**30:.2f} GiB in "
                         f"{str(array_path.parent)!r} but {free / 2**30:.2f} GiB are free; free "
                         "space or choose another --data-cache-dir")
    data = np.lib.format.open_memmap(array_path, "w+", np.uint8, shape)
    if hasattr(os, "posix_fallocate") and need:
        with open(array_path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, os.path.getsize(array_path))
            except OSError as err:
                raise write_error(array_path, err) from None
    done = np.lib.format.open_memmap(done_path, "w+", np.uint8, shape[:1])
    return data, done


def _reuse_sources(folder: Path, digest: str) -> Iterator[tuple[list[Entry], np.ndarray,
                                                                 np.ndarray]]:
    """Arrays whose rows may be reused, with a flag per row: the last complete cache (its
    readable rows) and interrupted decodes of other file lists (their done rows)."""
    try:
        manifest = read_json(folder / "manifest.json")
        old = np.load(folder / manifest["array"], mmap_mode="r")
        bad = {rel for rel, _ in manifest.get("bad", [])}
        files = [tuple(e) for e in manifest["files"]]
        yield files, old, np.array([e[0] not in bad for e in files], dtype=bool)  # type: ignore
    except (OSError, ValueError, KeyError):
        pass
    for info_path in sorted(folder.glob("partial-*.json")):
        old_digest = info_path.stem.split("-", 1)[1]
        if old_digest == digest:
            continue
        array_path, done_path, _ = _partial_paths(folder, old_digest)
        try:
            files = [tuple(e) for e in read_json(info_path)["files"]]
            old, flags = np.load(array_path, mmap_mode="r"), np.load(done_path, mmap_mode="r")
            yield files, old, np.asarray(flags).astype(bool)  # type: ignore[misc]
        except (OSError, ValueError, KeyError):
            continue


def _copy_unchanged(entries: list[Entry], data: np.ndarray, done: np.ndarray,
                    old_entries: list[Entry], old: np.ndarray, usable: np.ndarray,
                    chunk: int = 256) -> None:
    """Copy the rows of files with the same path, size and mtime from ``old`` into ``data``."""
    if tuple(old.shape[1:]) != tuple(data.shape[1:]) or len(usable) != len(old):
        return
    where = {e[:3]: i for i, e in enumerate(entries)}
    pairs = [(where[key], j) for j, e in enumerate(old_entries)
             if usable[j] and (key := tuple(e[:3])) in where and not done[where[key]]]
    pairs.sort(key=lambda p: p[1])  # read the old array in order
    for s in range(0, len(pairs), chunk):
        dst, src = (np.array(side, dtype=np.int64) for side in zip(*pairs[s:s + chunk], strict=True))
        data[dst] = old[src]
        done[dst] = 1


def decode_missing(data: np.memmap, done: np.memmap, root: Path, entries: list[Entry],
                   spec: DecodeSpec, workers: int | None, stop_on_bad: bool,
                   progress: bool) -> tuple[list[tuple[str, str]], int]:
    """Decode every row not done yet into ``data``: the unreadable files with the reason (in
    order) and how many were decoded. With ``stop_on_bad`` the first unreadable file in the
    folder's order stops the decode with a :class:`BadImageError` (what is done stays done)."""
    todo = np.flatnonzero(np.asarray(done) == 0)
    jobs = [(int(i), str(root / entries[i][0])) for i in todo]
    decode = (spec.size, spec.gray, spec.resize)
    bad = _write_rows(decode_files(jobs, *decode, workers, progress,
                                   desc=f"decoding {root.name} ({spec.size} px)"),
                      data, done, stop_on_bad)
    if bad and stop_on_bad:  # workers run ahead of each other: look for an earlier bad file
        earlier = [(row, path) for row, path in jobs if row < bad[0][0] and not done[row]]
        row, reason = (_write_rows(decode_files(earlier, *decode, 1, False), data, done, True)
                       or bad)[0]
        raise BadImageError(root / entries[row][0], reason)
    return [(entries[row][0], reason) for row, reason in bad], len(jobs) - len(bad)


def _write_rows(rows: Generator[tuple[int, np.ndarray | None, str], None, None],
                data: np.memmap, done: np.memmap, stop_on_bad: bool) -> list[tuple[int, str]]:
    """Write decoded rows and mark them done; the bad rows (the first only, ``stop_on_bad``)."""
    bad: list[tuple[int, str]] = []
    flushed = time.monotonic()
    try:
        for row, pixels, reason in rows:
            if pixels is None:
                bad.append((row, reason))
                if stop_on_bad:
                    break
                continue
            data[row] = pixels
            done[row] = 1
            if time.monotonic() - flushed > 30:  # pixels on disk before the flags that vouch
                _flush(data, done)
                flushed = time.monotonic()
    finally:
        rows.close()
        _flush(data, done)
    return sorted(bad)


CHUNK_BYTES = 4 * 2**20  # the array's checksums cover chunks of about this many bytes


def chunk_checksums(array: np.ndarray) -> dict[str, Any]:
    """CRC-32 of consecutive chunks of rows (about :data:`CHUNK_BYTES` each): what the
    manifest stores, so that damaged bytes are found and only their rows decoded again."""
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize)
    rows = max(1, CHUNK_BYTES // row_bytes)
    crcs = [zlib.crc32(np.ascontiguousarray(array[s:s + rows]).data)
            for s in range(0, len(array), rows)]
    return {"rows": int(rows), "crc32": crcs}


def damaged_rows(array: np.ndarray, stored: dict[str, Any]) -> list[int]:
    """The rows of every chunk whose checksum differs from ``stored``."""
    now = chunk_checksums(array)
    if now["rows"] != stored.get("rows") or len(now["crc32"]) != len(stored.get("crc32", [])):
        return list(range(len(array)))
    rows = now["rows"]
    return [r for k, (a, b) in enumerate(zip(now["crc32"], stored["crc32"], strict=True))
            if a != b for r in range(k * rows, min(len(array), (k + 1) * rows))]


def write_manifest(folder: Path, name: str, settings: dict[str, Any], digest: str,
                   entries: list[Entry], bad: list[tuple[str, str]], seconds: float) -> None:
    """The manifest of the complete array ``name`` (with its chunk checksums), atomically."""
    array = np.load(folder / name, mmap_mode="r")
    write_json(folder / "manifest.json", {
        "version": VERSION, "digest": digest, "array": name, **settings,
        "images": len(entries) - len(bad), "bad": [list(b) for b in bad],
        "decode_seconds": round(seconds, 3), "checksums": chunk_checksums(array),
        "files": [list(e) for e in entries]})


def _flush(*arrays: np.ndarray) -> None:
    """Write memory-mapped arrays to disk (plain arrays, such as a repair's flags, have
    nothing to write)."""
    for a in arrays:
        if isinstance(a, np.memmap):
            a.flush()


def promote(folder: Path, data: np.memmap, settings: dict[str, Any], digest: str,
             entries: list[Entry], bad: list[tuple[str, str]], seconds: float) -> None:
    """Rename the finished array into place, then write the manifest that points to it; remove
    the decode's side files and arrays no manifest points to any more."""
    array_path, done_path, info_path = _partial_paths(folder, digest)
    data.flush()
    del data
    name = array_name(digest)
    os.replace(array_path, folder / name)
    write_manifest(folder, name, settings, digest, entries, bad, seconds)
    _remove(done_path, info_path)
    for old in folder.glob("images-*.npy"):
        if old.name != name:
            _remove(old)  # a process that still maps it keeps reading it until it exits


def _remove(*paths: Path) -> None:
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
