"""Where cached features live: a table in memory, or a memory-mapped file written atomically.

A :class:`FeatureTable` holds one feature tensor per image id (sorted ids, rows in that order);
:class:`FeatureRows` is one run's view of it, indexed like a tensor. On disk a table is one file,
``magic | version (u32) | header length (u32) | JSON header, padded to 64 bytes | ids (int64) |
rows (float16 or float32)``, written through ``surgery.atomic_write``. The header holds the
cache key, shape, dtype and a CRC-32 of ids and rows; :func:`read_table` raises
:class:`CacheFileError` for anything that does not check out, and the caller rebuilds.
"""

from __future__ import annotations

import errno
import json
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from surgery import atomic_write, one_line

from .keys import FORMAT_VERSION

__all__ = ["DTYPES", "CacheFileError", "FeatureRows", "FeatureTable", "read_header",
           "read_table", "write_table"]

MAGIC = b"HSFEAT\r\n"
_PREFIX = struct.Struct("<8sII")
_ALIGN = 64
DTYPES = {"float16": torch.float16, "float32": torch.float32}
_VERIFIED: dict[tuple[str, int, int], int] = {}  # (path, size, mtime) -> checksum seen good


class CacheFileError(ValueError):
    """A cache file that cannot be used: truncated, corrupt, or from another format version."""


@dataclass
class FeatureTable:
    """Features of a set of images: ``ids`` sorted, ``data[i]`` the features of ``ids[i]``.

    ``data`` is a tensor in memory or a read-only view of a memory-mapped file (``path``).
    """

    key: str
    ids: torch.Tensor
    data: torch.Tensor
    path: Path | None = None
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def covers(self, ids: torch.Tensor) -> bool:
        """Whether every image of ``ids`` has features here."""
        if len(ids) == 0:
            return True
        pos = torch.searchsorted(self.ids, ids).clamp_max(len(self.ids) - 1)
        return bool(len(self.ids)) and bool((self.ids[pos] == ids).all())

    def rows(self, ids: torch.Tensor) -> FeatureRows:
        """A run's view: row ``k`` holds the features of ``ids[k]`` (in the order given)."""
        ids = torch.as_tensor(ids, dtype=torch.int64)
        if not self.covers(ids):
            raise KeyError(f"feature cache {self.key[:12]} does not hold every image asked for")
        return FeatureRows(self, torch.searchsorted(self.ids, ids))


@dataclass
class FeatureRows:
    """Rows of a :class:`FeatureTable` in a run's order, indexed like a tensor of features."""

    table: FeatureTable
    positions: torch.Tensor

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.table.data.shape[1:])

    def __getitem__(self, index: Any) -> torch.Tensor:
        pos = self.positions[index]
        if pos.dim() == 0:
            pos = pos.unsqueeze(0)
        return self.table.data[pos]


def _header_bytes(header: dict[str, Any], room: int | None = None) -> bytes:
    """Prefix and JSON header, padded with spaces to ``room`` bytes of JSON (default: enough
    to rewrite it later with its checksum and shape, ending on a 64-byte boundary)."""
    text = json.dumps(header, sort_keys=True).encode()
    if room is None:
        room = len(text) + 512
        room += (-(_PREFIX.size + room)) % _ALIGN
    if len(text) > room:
        raise RuntimeError("feature cache header grew past its reserved room")
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, room) + text.ljust(room, b" ")


def write_table(path: Path, header: dict[str, Any], ids: torch.Tensor,
                fill: Callable[[Callable[[torch.Tensor], None]], None]) -> Path:
    """Write a cache file atomically: ``fill(put)`` calls ``put(rows)`` with consecutive batches
    of rows (the first batch fixes their shape); the file appears at ``path`` only when all
    ``len(ids)`` rows are written. A full disk or an unwritable place is a one-line ValueError.
    """
    n = len(ids)
    dtype = header["dtype"]

    def write(f: IO[bytes]) -> None:
        state: dict[str, Any] = {"rows": 0, "crc": 0, "shape": None, "start": 0}
        head = dict(header, n=n, shape=None, checksum=None, complete=False)
        first = _header_bytes(head)
        f.write(first)
        state["start"] = len(first)
        id_bytes = ids.to(torch.int64).contiguous().numpy().tobytes()
        f.write(id_bytes)
        state["crc"] = zlib.crc32(id_bytes)

        def put(rows: torch.Tensor) -> None:
            rows = rows.to(DTYPES[dtype]).contiguous().cpu()
            if state["shape"] is None:
                state["shape"] = list(rows.shape[1:])
            data = rows.numpy().tobytes()
            f.write(data)
            state["crc"] = zlib.crc32(data, state["crc"])
            state["rows"] += len(rows)

        fill(put)
        if state["rows"] != n:
            raise RuntimeError(f"feature cache writer got {state['rows']} rows, expected {n}")
        f.seek(0)
        f.write(_header_bytes(dict(head, shape=state["shape"], checksum=state["crc"],
                                   complete=True), room=state["start"] - _PREFIX.size))

    try:
        return atomic_write(path, write)
    except ValueError as err:  # surgery's one line: a full disk, a read-only place, ...
        raise ValueError(f"feature cache: {err} (nothing half-written was kept); free space, "
                         "point --feature-cache-dir elsewhere, or use --feature-cache off"
                         ) from None
    except OSError as err:
        raise ValueError(_write_error(path, err)) from None


def _write_error(path: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device writing the feature cache {str(path)!r} (nothing "
                "half-written was kept); free space, point --feature-cache-dir elsewhere, or use "
                "--feature-cache off")
    return (f"cannot write the feature cache {str(path)!r} ({one_line(err)}); choose another "
            "--feature-cache-dir, or use --feature-cache off")


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a cache file and where its ids start; CacheFileError if unusable."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(_PREFIX.size)
            if len(prefix) < _PREFIX.size:
                raise CacheFileError(f"{path.name} is truncated ({len(prefix)} bytes)")
            magic, version, length = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise CacheFileError(f"{path.name} is not a feature cache file")
            if version != FORMAT_VERSION:
                raise CacheFileError(f"{path.name} was written by cache format {version} (this "
                                     f"is format {FORMAT_VERSION})")
            text = f.read(length)
    except OSError as err:
        raise CacheFileError(f"{path.name} cannot be read ({one_line(err)})") from None
    try:
        header = json.loads(text)
    except ValueError:
        raise CacheFileError(f"{path.name} has a damaged header") from None
    if not isinstance(header, dict) or not header.get("complete"):
        raise CacheFileError(f"{path.name} was never completed")
    return header, _PREFIX.size + length


def read_table(path: Path, key: str, *, verify: bool = True) -> FeatureTable:
    """Open a cache file as a memory-mapped :class:`FeatureTable`.

    Raises :class:`CacheFileError` when the file is truncated, damaged (checksum), from another
    format version or for another key. The checksum is read once per file and process.
    """
    header, start = read_header(path)
    if header.get("key") != key:
        raise CacheFileError(f"{path.name} holds another cache ({str(header.get('key'))[:12]})")
    n, shape, dtype = int(header["n"]), tuple(header["shape"] or ()), str(header["dtype"])
    if dtype not in DTYPES:
        raise CacheFileError(f"{path.name} has an unknown dtype {dtype!r}")
    itemsize = torch.tensor([], dtype=DTYPES[dtype]).element_size()
    row = int(np.prod(shape)) * itemsize if shape else 0
    expect = start + 8 * n + n * row
    size = path.stat().st_size
    if size != expect:
        raise CacheFileError(f"{path.name} is truncated or padded ({size:,} bytes, expected "
                             f"{expect:,})")
    stamp = (str(path), size, path.stat().st_mtime_ns)
    if verify and _VERIFIED.get(stamp) != header["checksum"]:
        if _checksum(path, start, expect) != header["checksum"]:
            raise CacheFileError(f"{path.name} is damaged (checksum mismatch)")
        _VERIFIED[stamp] = header["checksum"]
    ids = torch.from_numpy(np.fromfile(path, dtype=np.int64, count=n, offset=start).copy())
    np_dtype = np.float16 if dtype == "float16" else np.float32
    mm = np.memmap(path, dtype=np_dtype, mode="r", offset=start + 8 * n, shape=(n, *shape))
    with warnings.catch_warnings():  # read-only on purpose: torch warns about non-writable arrays
        warnings.simplefilter("ignore", UserWarning)
        data = torch.from_numpy(mm)
    return FeatureTable(key, ids, data, path, header)


def _chunks(path: Path, start: int, end: int, size: int = 1 << 24) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = end - start
        while left > 0:
            block = f.read(min(size, left))
            if not block:
                return
            left -= len(block)
            yield block


def _checksum(path: Path, start: int, end: int) -> int:
    crc = 0
    for block in _chunks(path, start, end):
        crc = zlib.crc32(block, crc)
    return crc
