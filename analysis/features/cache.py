"""Open or build a feature cache: in memory when it fits, else one file on disk, built once.

:func:`open_cache` takes a :class:`CacheRequest` (the key, the images to cover, how to extract
them) and a :class:`Storage` policy. It looks in this process first (an in-process study shares
one table across its heads and seeds), then in the cache directory under the lock of
:mod:`analysis.runtime.cache_lock`, so that processes asking at once build it once; a damaged file is
rebuilt with a warning. Under torchrun each rank extracts its block of the images: in memory
the blocks are gathered to every rank, on disk rank 0 joins the ranks' part files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from surgery import atomic_write, one_line

from ..data import Images, take
from ..reporting import progress_bar
from ..runtime import exclusive_lock
from .extract import Extractor, shard_block
from .keys import CacheKey
from .store import DTYPES, CacheFileError, FeatureTable, read_header, read_table, write_table

__all__ = ["CacheRequest", "Ranks", "Storage", "clear_memory", "open_cache", "remove_caches"]

_MEMORY: dict[str, FeatureTable] = {}  # digest -> table, oldest first


class Ranks(Protocol):
    """Who this process is under torchrun (analysis.training.DistInfo fits)."""

    rank: int
    world_size: int

    def wait(self) -> None: ...


@dataclass
class CacheRequest:
    """What to cache: ``images`` (uint8, one per id of ``ids``, sorted) under ``key``; a tensor,
    or rows read a batch at a time (analysis.data.ImageArray, ImageRows)."""

    key: CacheKey
    ids: torch.Tensor
    images: Images
    extractor: Extractor
    name: str = "features"            # file name stem (the model name)


@dataclass
class Storage:
    """Where a cache may live: memory up to ``mem_bytes``, else a file in ``directory``.

    ``shared``: other processes will read it (a study's child processes), so it goes to disk.
    ``batch_size``: the training batch; a budget below one batch of rows is refused.
    """

    mem_bytes: int
    directory: Path | None = None
    shared: bool = False
    batch_size: int = 1
    progress: bool = True
    gather: Callable[[Any], list[Any]] | None = None  # all_gather of objects under torchrun


def clear_memory() -> None:
    """Forget every in-memory table of this process (benchmarks measure extraction again)."""
    _MEMORY.clear()


def remove_caches(directory: str | Path, keep: Collection[str | Path] = ()) -> None:
    """Delete the feature caches in ``directory`` (their files, part files and lock files) but
    those at the paths ``keep``, forget them in this process, and remove the directory if that
    empties it: a run's own cache goes with the run (analysis.training)."""
    d = Path(directory)
    if not d.is_dir():
        return
    kept = {Path(k).resolve() for k in keep}
    kept_locks = {f"{k.name.rsplit('-', 2)[-2]}.lock" for k in kept if k.name.count("-") >= 2}
    for key, table in list(_MEMORY.items()):
        if table.path is not None and table.path.resolve().parent == d.resolve() \
                and table.path.resolve() not in kept:
            del _MEMORY[key]
    for path in d.iterdir():
        name = path.name
        ours = (name.endswith((".feat", ".lock")) or ".feat.part" in name
                or (name.startswith(".") and ".feat" in name and name.endswith(".tmp")))
        if ours and path.resolve() not in kept and name not in kept_locks:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        d.rmdir()  # only if nothing else is left in it


def open_cache(request: CacheRequest, storage: Storage,
               ranks: Ranks | None = None) -> tuple[FeatureTable, dict[str, Any]]:
    """The table for ``request`` (covering all its ids) and what happened: ``{"key", "storage",
    "path", "images", "mib", "built", "extract_s"}``."""
    digest = request.key.digest()
    known = _MEMORY.get(digest)
    if known is not None and known.covers(request.ids):
        return known, _info(known, built=False, seconds=0.0)
    row = request.extractor.row_shape(request.images)
    itemsize = DTYPES[request.key.dtype].itemsize
    row_bytes = int(np.prod(row)) * itemsize
    total = row_bytes * len(request.ids)
    one_batch = row_bytes * storage.batch_size
    if storage.mem_bytes < one_batch:
        raise ValueError(f"--feature-cache-mem-gb {storage.mem_bytes / 2**30:.3g} is below one "
                         f"batch of features ({one_batch / 2**20:.3g} MiB: {storage.batch_size} x "
                         f"{'x'.join(map(str, row))} {request.key.dtype}); raise it or lower "
                         "--batch-size")
    t0 = time.perf_counter()
    if total <= storage.mem_bytes and not storage.shared:
        # a file another process built (a study's, before its worker processes run) is read,
        # not extracted again; else the table is built in memory
        table = _found_on_disk(request, storage, ranks) or _build_in_memory(request, row,
                                                                            storage, ranks)
    else:
        table = _on_disk(request, storage, ranks)
    _remember(table, storage.mem_bytes)
    return table, _info(table, built=table.header.get("built_here", True),
                        seconds=time.perf_counter() - t0)


def _info(table: FeatureTable, built: bool, seconds: float) -> dict[str, Any]:
    return {"key": table.key, "storage": "disk" if table.path else "memory",
            "path": str(table.path) if table.path else None, "images": len(table.ids),
            "mib": round(table.nbytes / 2**20, 2), "built": bool(built),
            "extract_s": round(seconds, 3) if built else 0.0}


def _remember(table: FeatureTable, budget: int) -> None:
    """Keep ``table`` for later runs of this process; in-memory tables within ``budget``."""
    _MEMORY.pop(table.key, None)
    _MEMORY[table.key] = table
    while True:
        held = sum(t.nbytes for t in _MEMORY.values() if t.path is None)
        oldest = next((k for k, t in _MEMORY.items() if t.path is None and k != table.key), None)
        if held <= budget or oldest is None:
            return
        del _MEMORY[oldest]


def _progress(n: int, storage: Storage, ranks: Ranks | None) -> Any:
    """tqdm on a terminal, one line at the end in a log file or pipe (never a line per frame);
    None without progress, or on a rank other than 0."""
    main = ranks is None or ranks.rank == 0
    return progress_bar(n, "features", "img") if storage.progress and main else None


def _my_block(request: CacheRequest, ranks: Ranks | None) -> slice:
    if ranks is None or ranks.world_size == 1:
        return slice(0, len(request.ids))
    return shard_block(len(request.ids), ranks.rank, ranks.world_size)


def _build_in_memory(request: CacheRequest, row: tuple[int, ...], storage: Storage,
                     ranks: Ranks | None) -> FeatureTable:
    block = _my_block(request, ranks)
    ex = request.extractor
    part = torch.empty((block.stop - block.start, *row), dtype=ex.dtype)
    bar = _progress(len(part), storage, ranks)
    at = 0
    for rows in ex.batches(take(request.images, block), request.ids[block], bar):
        part[at:at + len(rows)] = rows
        at += len(rows)
    if bar is not None:
        bar.close()
    data = part
    if ranks is not None and ranks.world_size > 1:
        if storage.gather is None:
            raise RuntimeError("a cache extracted by several ranks needs storage.gather")
        data = torch.cat(storage.gather(part))
    return FeatureTable(request.key.digest(), request.ids, data)


# ------------------------------------------------------------------------------------- disk
def _cache_dir(storage: Storage) -> Path:
    """The cache directory, created; a one-line ValueError when it cannot be written."""
    if storage.directory is None:
        raise ValueError("this feature cache does not fit in memory and has no directory to go "
                         "to; give --feature-cache-dir or raise --feature-cache-mem-gb")
    d = Path(storage.directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ValueError(f"feature cache directory {str(d)!r} is not writable "
                         f"({one_line(err, with_type=False)}); choose another with "
                         "--feature-cache-dir, raise --feature-cache-mem-gb to keep it in memory, "
                         "or use --feature-cache off") from None
    return d


def _find(directory: Path, digest: str, ids: torch.Tensor) -> FeatureTable | None:
    """A valid file of this key covering ``ids``; damaged ones are removed with a warning."""
    for path in sorted(directory.glob(f"*-{digest[:16]}-*.feat")):
        try:
            header, _ = read_header(path)
            if header.get("key") != digest:
                continue
            table = read_table(path, digest)
        except CacheFileError as err:
            warnings.warn(f"feature cache {path}: {err}; rebuilding it", stacklevel=4)
            path.unlink(missing_ok=True)
            continue
        if table.covers(ids):
            table.header["built_here"] = False
            return table
    return None


def _file_name(request: CacheRequest, digest: str) -> str:
    ids_digest = hashlib.blake2b(request.ids.numpy().tobytes(), digest_size=4).hexdigest()
    stem = "".join(c if c.isalnum() or c in "._" else "_" for c in request.name)
    return f"{stem}-{digest[:16]}-{ids_digest}.feat"


def _found_on_disk(request: CacheRequest, storage: Storage,
                   ranks: Ranks | None) -> FeatureTable | None:
    """A valid file of the request's key covering its ids in the cache directory, if there is
    one (one process only: under torchrun the ranks must agree, so they extract)."""
    if storage.directory is None or (ranks is not None and ranks.world_size > 1):
        return None
    directory = Path(storage.directory)
    if not directory.is_dir():
        return None
    return _find(directory, request.key.digest(), request.ids)


def _on_disk(request: CacheRequest, storage: Storage, ranks: Ranks | None) -> FeatureTable:
    directory = _cache_dir(storage)
    digest = request.key.digest()
    multi = ranks is not None and ranks.world_size > 1
    main = ranks is None or ranks.rank == 0
    path = directory / _file_name(request, digest)
    header = {"key": digest, "key_fields": request.key.to_dict(), "dtype": request.key.dtype}
    lock = (exclusive_lock(directory, "extracting features", storage.progress,
                           name=f"{digest[:16]}.lock") if main else contextlib.nullcontext())
    with lock:
        found = _find(directory, digest, request.ids) if main else None
        if multi:
            if storage.gather is None:
                raise RuntimeError("a cache extracted by several ranks needs storage.gather")
            found_path = storage.gather(str(found.path) if found is not None else None)[0]
            if found_path is not None:
                found = found if main else read_table(Path(found_path), digest)
        if found is not None:
            return found
        if multi:
            _write_parts_then_join(request, storage, ranks, path, header)
        else:
            bar = _progress(len(request.ids), storage, ranks)

            def fill(put: Callable[[torch.Tensor], None]) -> None:
                for rows in request.extractor.batches(request.images, request.ids, bar):
                    put(rows)

            write_table(path, header, request.ids, fill)
            if bar is not None:
                bar.close()
    if multi and ranks is not None:
        ranks.wait()
    table = read_table(path, digest, verify=not main)
    table.header["built_here"] = True
    return table


def _write_parts_then_join(request: CacheRequest, storage: Storage, ranks: Any, path: Path,
                           header: dict[str, Any]) -> None:
    """Each rank writes its block's rows to ``path.partR``; rank 0 joins them into ``path``."""
    block = _my_block(request, ranks)
    part = path.with_name(f"{path.name}.part{ranks.rank}")
    bar = _progress(block.stop - block.start, storage, ranks)

    def write_rows(f: Any) -> None:
        for rows in request.extractor.batches(take(request.images, block), request.ids[block], bar):
            f.write(rows.numpy().tobytes())

    try:
        atomic_write(part, write_rows)
    except OSError as err:
        raise ValueError(f"cannot write the feature cache part {str(part)!r} "
                         f"({one_line(err)}); free space or use --feature-cache-dir") from None
    if bar is not None:
        bar.close()
    ranks.wait()
    if ranks.rank != 0:
        return
    dtype = DTYPES[request.key.dtype]
    row = request.extractor.row_shape(request.images)

    def fill(put: Callable[[torch.Tensor], None]) -> None:
        for r in range(ranks.world_size):
            raw = np.fromfile(path.with_name(f"{path.name}.part{r}"),
                              dtype=np.float16 if dtype == torch.float16 else np.float32)
            rows = torch.from_numpy(raw).view(-1, *row)
            for s in range(0, len(rows), 4096):
                put(rows[s:s + 4096])

    try:
        write_table(path, header, request.ids, fill)
    finally:
        for r in range(ranks.world_size):
            path.with_name(f"{path.name}.part{r}").unlink(missing_ok=True)
