"""The decode cache: an image folder decoded once into a uint8 array file, reused by every run.

A load scans the folder (names, sizes, modification times) and opens the array at once when the
digest of that list matches the manifest; otherwise it copies the rows of unchanged files from
the previous array (or an interrupted decode) and decodes only the rest, in worker processes
(analysis.data.decode_pool). The array and manifest are put in place only when every row is
done, and a lock makes a second process wait for the first. The files in a cache directory and
what they hold are described in docs/finetuning.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from surgery import check_writable, read_json

from ..runtime import exclusive_lock
from .arrays import ImageArray
from .decode_build import (
    VERSION,
    DecodeSpec,
    Entry,
    array_name,
    damaged_rows,
    decode_missing,
    promote,
    start_partial,
    write_manifest,
)
from .images import IMAGE_EXTENSIONS, BadImageError

__all__ = ["CACHE_ENV", "DecodeSpec", "DecodedFolder", "decode_folder", "default_cache_dir",
           "scan_folder"]

CACHE_ENV = "HEADSWAP_DATA_CACHE"


@dataclass
class DecodedFolder:
    """A folder's readable images (memory-mapped), their labels, the unreadable files with the
    decoder's reason, and how many images this load decoded (0 when the cache was complete)."""

    images: ImageArray
    labels: torch.Tensor
    bad: list[tuple[str, str]]
    decoded: int
    path: Path


def default_cache_dir() -> Path:
    """``$HEADSWAP_DATA_CACHE``, else ``~/.cache/headswap/data``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "headswap" / "data"


def _walk(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    top = str(folder)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        dirnames.sort()
        prefix = dirpath[len(top):].lstrip(os.sep)  # os.walk's paths start with ``top``
        for name in filenames:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(prefix, name), os.stat(os.path.join(dirpath, name))


def scan_folder(root: Path, classes: Sequence[str]) -> list[Entry]:
    """Every image file under ``root/CLASS`` (class by class, paths in order), with its size
    (bytes), modification time (ns) and label (the class's position)."""
    entries: list[Entry] = []
    for label, cls in enumerate(classes):
        found = [(os.path.join(cls, rel), st) for rel, st in _walk(root / cls)]
        found.sort(key=lambda item: Path(item[0]).parts)
        entries += [(rel, st.st_size, st.st_mtime_ns, label) for rel, st in found]
    return entries


def _digest(settings: dict[str, Any], entries: list[Entry]) -> str:
    text = json.dumps([settings, entries], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


_SETTINGS = ("version", "root", "size", "resize", "mode")  # what _settings writes


def _settings(root: Path, spec: DecodeSpec) -> dict[str, Any]:
    return {"version": VERSION, "root": str(root.resolve()), "size": spec.size,
            "resize": spec.resize, "mode": "L" if spec.gray else "RGB"}


def _cache_folder(cache_dir: Path, settings: dict[str, Any]) -> Path:
    """``NAME-SIZEpx-POLICY-MODE-HASH``: readable, one per folder and decode settings."""
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(settings["root"]).name)[:40] or "root"
    return cache_dir / (f"{name}-{settings['size']}px-{settings['resize']}-{settings['mode']}-"
                        f"{key}")


def decode_folder(root: str | Path, classes: Sequence[str], spec: DecodeSpec, *,
                  cache_dir: str | Path | None = None, workers: int | None = None,
                  stop_on_bad: bool = True, progress: bool = True) -> DecodedFolder:
    """The images under ``root/CLASS`` decoded at ``spec``, from the cache when it holds exactly
    this folder's files, else decoded (only what changed) and cached first.

    ``stop_on_bad`` raises :class:`BadImageError` for the first unreadable file (its decoded
    neighbours stay cached for the next attempt); otherwise unreadable files are listed in
    ``bad`` and left out."""
    root = Path(root)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    entries = scan_folder(root, classes)
    settings = _settings(root, spec)
    digest = _digest(settings, entries)
    folder = _cache_folder(cache_dir, settings)
    if not (folder / "manifest.json").is_file():
        check_writable(cache_dir, "--data-cache-dir", directory=True)
    with exclusive_lock(folder, f"decoding {root}", progress):
        found = _open_complete(folder, digest, spec, _Repair(root, workers, progress))
        if found is not None:
            _check_bad(found.bad, root, stop_on_bad)
            return found
        t0 = time.perf_counter()
        data, done = start_partial(folder, entries, settings, digest, spec)
        bad, decoded = decode_missing(data, done, root, entries, spec, workers, stop_on_bad,
                                      progress)
        promote(folder, data, settings, digest, entries, bad, time.perf_counter() - t0)
        return _finish(folder, digest, entries, spec, bad, decoded)


def _check_bad(bad: list[tuple[str, str]], root: Path, stop_on_bad: bool) -> None:
    if bad and stop_on_bad:
        raise BadImageError(root / bad[0][0], bad[0][1])


@dataclass
class _Repair:
    """What decoding damaged rows again needs: the folder, the workers, the progress bar."""

    root: Path
    workers: int | None
    progress: bool


def _open_complete(folder: Path, digest: str, spec: DecodeSpec,
                   repair: _Repair) -> DecodedFolder | None:
    """The cached folder when its manifest says it holds exactly these files, else None. Its
    chunk checksums are checked first: damaged rows are decoded again, with a warning."""
    try:
        manifest = read_json(folder / "manifest.json")
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION or manifest.get("digest") != digest:
        return None
    entries = [tuple(e) for e in manifest["files"]]
    bad = [(str(rel), str(why)) for rel, why in manifest.get("bad", [])]
    try:
        if manifest.get("checksums"):
            _repair(folder, manifest, entries, spec, repair)  # type: ignore[arg-type]
        return _finish(folder, digest, entries, spec, bad, 0)  # type: ignore[arg-type]
    except (OSError, ValueError):
        return None  # a missing or damaged array: decode again


def _repair(folder: Path, manifest: dict[str, Any], entries: list[Entry], spec: DecodeSpec,
            repair: _Repair) -> None:
    """Decode again the rows of every chunk whose checksum no longer matches (bytes damaged
    on disk), then store the new checksums; one warning says what was rebuilt."""
    path = folder / manifest["array"]
    rows = damaged_rows(np.load(path, mmap_mode="r"), manifest["checksums"])
    if not rows:
        return
    warnings.warn(f"decode cache {str(path)!r}: {len(rows)} row(s) failed their checksum "
                  "(damaged on disk); decoding those images again", stacklevel=5)
    data = np.load(path, mmap_mode="r+")
    done = np.ones(len(entries), dtype=np.uint8)
    done[rows] = 0
    decode_missing(data, done, repair.root, entries, spec, repair.workers, False,  # type: ignore[arg-type]
                   repair.progress)
    data.flush()
    del data
    write_manifest(folder, manifest["array"], {k: manifest[k] for k in _SETTINGS},
                   manifest["digest"], entries, [tuple(b) for b in manifest.get("bad", [])],
                   float(manifest.get("decode_seconds", 0.0)))


def _finish(folder: Path, digest: str, entries: list[Entry], spec: DecodeSpec,
            bad: list[tuple[str, str]], decoded: int) -> DecodedFolder:
    """Open the complete array read-only and select its readable rows."""
    path = folder / array_name(digest)
    array = np.load(path, mmap_mode="r")
    shape = (len(entries), spec.channels, spec.size, spec.size)
    if array.dtype != np.uint8 or tuple(array.shape) != shape:
        raise ValueError(f"{path} holds {array.dtype} {tuple(array.shape)}, expected {shape}")
    bad_names = {rel for rel, _ in bad}
    rows = np.array([i for i, e in enumerate(entries) if e[0] not in bad_names], dtype=np.int64)
    labels = torch.tensor([entries[i][3] for i in rows], dtype=torch.long)
    return DecodedFolder(ImageArray(array, rows, key=digest), labels, bad, decoded, path)


