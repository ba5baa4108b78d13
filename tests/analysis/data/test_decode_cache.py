"""The decode cache: decoded once and reopened, keyed by files and settings, only changes decoded
again, interrupted decodes resume and never read as complete, one build under two processes,
unreadable images named or skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.data import (
    BadImageError,
    DecodeSpec,
    ImageArray,
    decode_folder,
    decode_pixels,
    load_dataset,
)
from tests.image_folders import make_folder, photo

ROOT = Path(__file__).resolve().parents[3]
SPEC = DecodeSpec(12, "shorter-crop")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_first_load_decodes_then_reopens_memory_mapped(tmp_path):
    root = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=2)
    again = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=2)
    n = len(_files(root))
    assert first.decoded == n and again.decoded == 0
    assert isinstance(again.images, ImageArray) and isinstance(again.images.base, np.memmap)
    assert again.images.shape == (n, 3, 12, 12) and again.labels.tolist() == [0] * 8 + [1] * 9
    # each row is the file decoded on its own, in the folder's order (class, then path)
    order = sorted(_files(root), key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(order):
        assert np.array_equal(again.images[[i]][0].numpy(), decode_pixels(path, 12))


def test_the_key_is_the_files_size_policy_and_colour_mode(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=2)
    cache = tmp_path / "cache"
    for spec in (SPEC, DecodeSpec(16, "shorter-crop"), DecodeSpec(12, "pad"),
                 DecodeSpec(12, "shorter-crop", gray=True)):
        assert decode_folder(root, ["cat", "dog"], spec, cache_dir=cache, workers=1).decoded == 9
    assert len([d for d in cache.iterdir() if d.is_dir()]) == 4
    gray = decode_folder(root, ["cat", "dog"], DecodeSpec(12, "shorter-crop", gray=True),
                         cache_dir=cache)
    assert gray.decoded == 0 and gray.images.shape[1] == 1


def test_only_changed_files_are_decoded_again(tmp_path):
    root = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1)
    photo(1234).save(root / "cat" / "00003.jpg")               # edited
    os.utime(root / "cat" / "00003.jpg", ns=(1, 10**18))
    photo(999).save(root / "dog" / "new.jpg")                   # added
    (root / "dog" / "alpha.png").unlink()                        # removed
    got = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1)
    assert got.decoded == 2 and len(got.labels) == 17
    order = sorted(_files(root), key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(order):                             # copied rows are right too
        assert np.array_equal(got.images[[i]][0].numpy(), decode_pixels(path, 12)), path
    assert len(list((cache).rglob("images-*.npy"))) == 1         # the old array is gone


def test_a_decode_stopped_at_a_bad_image_resumes_and_never_reads_complete(tmp_path):
    root = make_folder(tmp_path / "imgs", corrupt=True)
    cache = tmp_path / "cache"
    with pytest.raises(BadImageError, match="zz-cut.jpg"):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=2)
    folder = next(cache.iterdir())
    assert not (folder / "manifest.json").exists() and not list(folder.glob("images-*.npy"))
    with pytest.raises(BadImageError, match="zz-cut.jpg"):        # still stops, decodes nothing new
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=2)
    got = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, stop_on_bad=False)
    assert got.decoded == 0 and got.bad[0][0] == os.path.join("dog", "zz-cut.jpg")
    assert len(got.labels) == len(_files(root)) - 1
    # the complete cache remembers the bad file: without skipping it is named again
    with pytest.raises(BadImageError, match="zz-cut.jpg"):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache)


_KILLED_CHILD = """
import os, signal, sys
import analysis.data.decode_build as build
from analysis.data import DecodeSpec, decode_folder

real = build.decode_files
def dying(jobs, *args, **kw):  # SIGKILL after 5 images: no cleanup, no finally
    for k, item in enumerate(real(jobs, *args, **kw)):
        if k == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        yield item
build.decode_files = dying
decode_folder(sys.argv[1], ["cat", "dog"], DecodeSpec(12, "shorter-crop"), cache_dir=sys.argv[2],
              workers=1)
"""


def test_a_killed_decode_is_not_complete_and_resumes_from_its_done_rows(tmp_path):
    root = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(root), str(cache)], env=env)
    assert proc.returncode == -9
    folder = next(cache.iterdir())
    assert not (folder / "manifest.json").exists()               # never reads as complete
    got = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1)
    assert got.decoded == len(_files(root)) - 5                  # the 5 done rows were kept
    order = sorted(_files(root), key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(order):
        assert np.array_equal(got.images[[i]][0].numpy(), decode_pixels(path, 12)), path


_BUILDER = """
import sys
from analysis.data import DecodeSpec, decode_folder
got = decode_folder(sys.argv[1], ["cat", "dog"], DecodeSpec(12, "shorter-crop"),
                    cache_dir=sys.argv[2], workers=1, progress=False)
print(got.decoded)
"""


def test_two_processes_build_the_cache_once(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=20)
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-c", _BUILDER, str(root), str(cache)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    counts = sorted(int(p.communicate()[0].split()[-1]) for p in procs)
    assert counts == [0, len(_files(root))]


def test_imagefolder_decodes_at_the_size_asked_under_the_policy(tmp_path):
    root = make_folder(tmp_path / "imgs")
    d = load_dataset("imagefolder", data_dir=root, val_size=2, image_size=20, resize="pad",
                     cache_dir=tmp_path / "cache")
    assert d.train_x.shape[1:] == (3, 20, 20) and isinstance(d.train_x, ImageArray)
    manifest = json.loads(next((tmp_path / "cache").rglob("manifest.json")).read_text())
    assert (manifest["size"], manifest["resize"], manifest["mode"]) == (20, "pad", "RGB")


def test_a_cache_dir_that_cannot_be_written_is_one_clear_error(tmp_path):
    root = make_folder(tmp_path / "imgs", per_class=2)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"--data-cache-dir .*file.* is a file"):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "file")


def test_the_first_bad_file_in_the_folder_is_named_whichever_worker_finds_one_first(tmp_path,
                                                                                    monkeypatch):
    import analysis.data.decode_build as build

    root = make_folder(tmp_path / "imgs", corrupt=True)
    data = (root / "cat" / "00001.jpg").read_bytes()
    (root / "cat" / "00001.jpg").write_bytes(data[:len(data) // 3])   # first in the folder's order
    real = build.decode_files

    def last_first(jobs, *args, **kw):  # workers that happen to finish the last files first
        yield from reversed(list(real(jobs, *args, **kw)))

    monkeypatch.setattr(build, "decode_files", last_first)
    with pytest.raises(BadImageError, match=r"cat/00001\.jpg"):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "cache", workers=2)
    monkeypatch.setattr(build, "decode_files", real)
    got = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "cache",
                        stop_on_bad=False)
    assert sorted(rel for rel, _ in got.bad) == [os.path.join("cat", "00001.jpg"),
                                                os.path.join("dog", "zz-cut.jpg")]


def test_ctrl_c_during_a_parallel_decode_stops_the_workers_and_resumes_later(tmp_path,
                                                                             monkeypatch):
    import multiprocessing as mp

    import analysis.data.decode_build as build

    root = make_folder(tmp_path / "imgs", per_class=20)
    real = build.decode_files

    def interrupted(jobs, *args, **kw):  # Ctrl-C reaches the parent after 7 images
        for k, item in enumerate(real(jobs, *args, **kw)):
            if k == 7:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(build, "decode_files", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "cache", workers=2)
    assert mp.active_children() == []                            # the pool is gone
    assert not list((tmp_path / "cache").rglob("manifest.json"))
    monkeypatch.setattr(build, "decode_files", real)
    got = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "cache", workers=2)
    assert got.decoded == len(_files(root)) - 7
    order = sorted(_files(root), key=lambda p: (p.parent.name, p.name))
    for i, path in enumerate(order):
        assert np.array_equal(got.images[[i]][0].numpy(), decode_pixels(path, 12)), path


def test_a_cache_that_would_not_fit_on_disk_is_refused_before_decoding(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    root = make_folder(tmp_path / "imgs", per_class=2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    with pytest.raises(ValueError, match=r"needs 0\.00 GiB .* but 0\.00 GiB are free; free space "
                                         r"or choose another --data-cache-dir"):
        decode_folder(root, ["cat", "dog"], SPEC, cache_dir=tmp_path / "cache", workers=1)
    assert not list((tmp_path / "cache").rglob("*.npy"))


def test_the_cache_goes_where_the_environment_says_else_under_home(tmp_path, monkeypatch):
    from analysis.data import CACHE_ENV, default_cache_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    root = make_folder(tmp_path / "imgs", per_class=2)
    decode_folder(root, ["cat", "dog"], SPEC, workers=1)
    assert len(list((tmp_path / "c").rglob("manifest.json"))) == 1
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "headswap" / "data"


def test_the_data_fingerprint_is_the_caches_own_digest_and_follows_the_files(tmp_path,
                                                                            monkeypatch):
    from analysis.data import DATASETS, ImageArray
    from analysis.data.splits import _fingerprint

    root = make_folder(tmp_path / "imgs")
    read = DATASETS["imagefolder"]
    options = dict(image_size=12, cache_dir=tmp_path / "cache", decode_workers=1)
    before = _fingerprint(read(root, **options))
    with monkeypatch.context() as m:   # a digest that reads no pixel
        m.setattr(ImageArray, "__getitem__", lambda self, key: pytest.fail("pixels read"))
        assert _fingerprint(read(root, **options)) == before
    assert _fingerprint(read(root, **dict(options, resize="pad"))) != before
    photo(4321).save(root / "cat" / "00002.jpg")                 # an edited file
    os.utime(root / "cat" / "00002.jpg", ns=(1, 10**18))
    assert _fingerprint(read(root, **options)) != before


def test_damaged_bytes_in_the_array_are_decoded_again(tmp_path, monkeypatch):
    import analysis.data.decode_build as build

    monkeypatch.setattr(build, "CHUNK_BYTES", 4 * 12 * 12 * 3)  # chunks of 4 rows
    root = make_folder(tmp_path / "imgs")
    cache = tmp_path / "cache"
    first = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1)
    clean = first.images[list(range(len(first.labels)))].numpy().copy()
    path, stat = first.path, first.path.stat()
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 256] = bytes(255 - b for b in raw[middle:middle + 256])  # flip 256 bytes
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same time
    with pytest.warns(UserWarning, match="failed their checksum") as caught:
        again = decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1)
    assert len(caught) == 1
    assert np.array_equal(again.images[list(range(len(again.labels)))].numpy(), clean)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: the next open checks clean
        assert decode_folder(root, ["cat", "dog"], SPEC, cache_dir=cache, workers=1).decoded == 0
