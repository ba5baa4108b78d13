"""The photo-folder generator: the same files on every call and with any number of workers,
classes in turn, sizes within the jitter, files already there kept, camera-like JPEG sizes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from analysis.data import write_photo_folder
from analysis.data.photos import photo


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_a_folder_is_the_same_whoever_writes_it(tmp_path):
    kw = dict(classes=("a", "b", "c"), size=(40, 30), jitter=5, source="shapes")
    one = write_photo_folder(tmp_path / "one", 60, workers=1, **kw)
    two = write_photo_folder(tmp_path / "two", 60, workers=2, **kw)
    assert one.written == two.written == 60 and one.bytes == two.bytes
    files = _bytes(tmp_path / "one")
    assert files == _bytes(tmp_path / "two")
    assert sorted(files)[:2] == ["a/00000.jpg", "a/00001.jpg"] and len(files) == 60
    assert [sum(name.startswith(f"{c}/") for name in files) for c in "abc"] == [20, 20, 20]
    write_photo_folder(tmp_path / "seed1", 3, seed=1, workers=1, **kw)
    seed1 = _bytes(tmp_path / "seed1")
    assert all(seed1[name] != files[name] for name in seed1)


def test_sizes_stay_within_the_jitter_and_classes_look_different(tmp_path):
    write_photo_folder(tmp_path, 40, classes=2, size=(40, 30), jitter=6, source="shapes",
                       workers=1)
    sizes = {Image.open(p).size for p in tmp_path.rglob("*.jpg")}
    assert all(40 <= w <= 46 and 30 <= h <= 36 for w, h in sizes) and len(sizes) > 5
    # an object's pixels are its class's tint, so the two classes' mean colours differ
    objects = [np.full((1, 28, 28), 255, dtype=np.uint8)] * 2
    a, b = (np.asarray(photo(0, k, objects, 60, 60), dtype=float)[25:35, 25:35].mean((0, 1))
            for k in (0, 1))
    assert np.abs(a - (0, 0, 80)).max() < 15 and np.abs(b - (37, 91, 133)).max() < 15


def test_files_already_there_are_kept(tmp_path):
    write_photo_folder(tmp_path, 10, classes=2, size=(20, 20), source="shapes", workers=1)
    (tmp_path / "class1" / "00002.jpg").unlink()
    before = (tmp_path / "class0" / "00000.jpg").stat().st_mtime_ns
    again = write_photo_folder(tmp_path, 10, classes=2, size=(20, 20), source="shapes",
                               workers=1)
    assert again.written == 1 and (tmp_path / "class1" / "00002.jpg").is_file()
    assert (tmp_path / "class0" / "00000.jpg").stat().st_mtime_ns == before
    assert not list(tmp_path.rglob(".*.tmp"))


def test_a_default_photo_is_a_camera_sized_jpeg(tmp_path):
    made = write_photo_folder(tmp_path, 2, source="shapes", workers=1)
    assert Image.open(tmp_path / "class0" / "00000.jpg").size == (500, 375)
    assert 30_000 < made.bytes / 2 < 120_000             # a 500x375 photo at quality 90


def test_bad_arguments_name_what_is_expected(tmp_path):
    with pytest.raises(ValueError, match="unknown photo source 'cifar'; choose from: auto, "
                                         "fashion-mnist, shapes"):
        write_photo_folder(tmp_path, 2, source="cifar")
    with pytest.raises(ValueError, match="n >= 1"):
        write_photo_folder(tmp_path, 0)
