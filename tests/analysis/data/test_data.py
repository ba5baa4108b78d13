"""Data registry, IDX reader, stratified splits, in-memory batches and device transforms."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import pytest
import torch

from analysis.data import (
    DATASETS,
    BadImageError,
    BatchTransform,
    EpochSampler,
    decode_image,
    iterate,
    load_dataset,
    read_idx,
    stratified_indices,
)
from analysis.data import readers as data_mod

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def _idx_bytes(t: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as an IDX file by hand (magic 0x0000 08 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, t.ndim]) + struct.pack(f">{t.ndim}I", *t.shape)
    return header + t.contiguous().numpy().tobytes()


def _images(n: int, offset: int = 0) -> torch.Tensor:
    """8x8 images whose first two pixels encode a unique id (so splits can be checked)."""
    x = torch.randint(0, 256, (n, 8, 8), generator=torch.Generator().manual_seed(offset),
                      dtype=torch.uint8)
    ids = torch.arange(offset, offset + n)
    x[:, 0, 0], x[:, 0, 1] = (ids // 256).to(torch.uint8), (ids % 256).to(torch.uint8)
    return x


def _ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist())


def write_fmnist(d: Path, gz: bool, n_train: int = 100, n_test: int = 20, sub: str = "") -> dict:
    """Tiny Fashion-MNIST-layout IDX files; 10 classes, equal counts, shuffled."""
    g = torch.Generator().manual_seed(1)
    arrays = {
        STEMS[0]: _images(n_train), STEMS[1]: (torch.arange(n_train) % 10)[torch.randperm(n_train, generator=g)].to(torch.uint8),
        STEMS[2]: _images(n_test, 5000), STEMS[3]: (torch.arange(n_test) % 10).to(torch.uint8),
    }
    target = d / sub
    target.mkdir(parents=True, exist_ok=True)
    for stem, t in arrays.items():
        raw = _idx_bytes(t)
        if gz:
            (target / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (target / stem).write_bytes(raw)
    return arrays


@pytest.fixture(autouse=True)
def _no_system_data(monkeypatch, tmp_path):
    """Tests never see the machine's data: no $HEADSWAP_DATA, a Debian path that is empty."""
    monkeypatch.delenv("HEADSWAP_DATA", raising=False)
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_fashion_mnist_reads_idx_files(tmp_path, gz):
    arrays = write_fmnist(tmp_path, gz)
    d = load_dataset("fashion-mnist", data_dir=tmp_path, val_size=0)
    assert d.train_x.dtype == torch.uint8 and d.train_x.shape == (100, 1, 8, 8)
    assert torch.equal(d.train_x[:, 0], arrays[STEMS[0]])  # whole train split, order kept
    assert torch.equal(d.train_y, arrays[STEMS[1]].long())
    assert torch.equal(d.test_x[:, 0], arrays[STEMS[2]]) and len(d.test_y) == 20
    assert d.num_classes == 10 and d.classes[9] == "Ankle boot"


def test_read_idx_matches_hand_encoding_and_rejects_corrupt(tmp_path):
    t = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(t))
    assert torch.equal(read_idx(tmp_path / "a"), t)
    (tmp_path / "b").write_bytes(_idx_bytes(t)[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "c")


def test_search_order_data_dir_then_env_then_torchvision_layout(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write_fmnist(a, gz=True, n_train=50)
    write_fmnist(b, gz=False, n_train=60, sub="FashionMNIST/raw")  # torchvision's layout
    monkeypatch.setenv("HEADSWAP_DATA", str(b))
    assert len(load_dataset("fashion-mnist", val_size=0).train_y) == 60  # env
    assert len(load_dataset("fashion-mnist", data_dir=a, val_size=0).train_y) == 50  # flag first


def test_missing_fashion_mnist_names_every_way_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "empty")
    msg = str(err.value)
    for part in ("--data-dir", "HEADSWAP_DATA", str(tmp_path / "no-debian"),
                 "apt-get install dataset-fashion-mnist", "--download", str(tmp_path / "empty")):
        assert part in msg


def test_an_explicit_data_dir_never_falls_back_to_another_copy(tmp_path, monkeypatch):
    write_fmnist(tmp_path / "env", gz=True)
    monkeypatch.setenv("HEADSWAP_DATA", str(tmp_path / "env"))  # a copy it must not fall back to
    (tmp_path / "empty").mkdir()
    for given, state in (("typo", "does not exist"), ("empty", "does not hold train-images")):
        with pytest.raises(FileNotFoundError) as err:
            load_dataset("fashion-mnist", data_dir=tmp_path / given)
        assert f"--data-dir {str(tmp_path / given)!r} {state}" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not hold cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path / "empty")
    assert len(load_dataset("fashion-mnist", val_size=0).train_y) == 100  # no flag: the env


def test_unknown_dataset_lists_the_registry():
    with pytest.raises(ValueError) as err:
        load_dataset("mnist-fashion")
    for name in DATASETS:
        assert name in str(err.value)
    assert {"fashion-mnist", "cifar10", "imagefolder", "synthetic"} <= set(DATASETS)


def test_stratified_subset_sizes_balance_and_disjoint_val(tmp_path):
    write_fmnist(tmp_path, gz=True, n_train=200)
    d = load_dataset("fashion-mnist", data_dir=tmp_path, train_size=50, val_size=40, seed=3)
    assert len(d.train_y) == 50 and len(d.val_y) == 40
    assert torch.bincount(d.val_y, minlength=10).tolist() == [4] * 10
    assert torch.bincount(d.train_y, minlength=10).tolist() == [5] * 10
    assert not _ids(d.train_x) & _ids(d.val_x)
    # validation is fixed by the seed, whatever the training subset
    d2 = load_dataset("fashion-mnist", data_dir=tmp_path, train_size=120, val_size=40, seed=3)
    assert _ids(d2.val_x) == _ids(d.val_x) and not _ids(d2.train_x) & _ids(d.val_x)
    d3 = load_dataset("fashion-mnist", data_dir=tmp_path, train_size=50, val_size=40, seed=4)
    assert _ids(d3.val_x) != _ids(d.val_x)
    assert _ids(load_dataset("fashion-mnist", data_dir=tmp_path, train_size=50, val_size=40,
                             seed=3).train_x) == _ids(d.train_x)


def test_stratified_indices_keep_proportions_with_uneven_classes():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_indices(labels, 20, seed=0)
    assert len(idx) == len(set(idx.tolist())) == 20
    assert torch.bincount(labels[idx]).tolist() == [12, 6, 2]


def test_train_size_larger_than_data_is_a_clear_error(tmp_path):
    write_fmnist(tmp_path, gz=True, n_train=100)
    with pytest.raises(ValueError, match=r"train-size 95 is larger than the data.*90"):
        load_dataset("fashion-mnist", data_dir=tmp_path, train_size=95, val_size=10)


def test_unknown_reader_option_is_a_clear_error():
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("synthetic", n_trian=5)


def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    for k, cls in enumerate(("cat", "dog")):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (10 + i, 12), (100 * k, 50, 7)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset("imagefolder", data_dir=tmp_path, val_size=2, image_size=8,
                     test_fraction=0.2)
    assert d.classes == ["cat", "dog"]
    assert d.train_x.shape[1:] == (3, 8, 8) and len(d.test_y) == 2 and len(d.val_y) == 2
    assert d.train_x[d.train_y == 1][:, 0].float().mean() == 100  # red channel of "dog"


def _image_tree(root: Path) -> None:
    """Two classes of five PNGs, plus a truncated PNG in one and a text file named .jpg in the
    other."""
    from PIL import Image

    for k, cls in enumerate(("cat", "dog")):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (12, 12), (100 * k, 50, 7)).save(root / cls / f"{i}.png")
    png = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "cut.png").write_bytes(png[: len(png) // 2])
    (root / "dog" / "notes.jpg").write_text("not an image")


def test_a_bad_image_is_named_then_skipped_with_a_warning(tmp_path):
    _image_tree(tmp_path)
    with pytest.raises(BadImageError) as err:
        load_dataset("imagefolder", data_dir=tmp_path, val_size=2, image_size=8)
    assert err.value.path == tmp_path / "cat" / "cut.png" and "--skip-bad-images" in str(err.value)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable image\(s\).*cat/cut.png, "
                                         r"dog/notes.jpg"):
        d = load_dataset("imagefolder", data_dir=tmp_path, val_size=2, image_size=8,
                         skip_bad_images=True)
    assert len(d.train_y) + len(d.val_y) + len(d.test_y) == 10  # the good ones, all of them


def test_decode_image_gives_a_tensor_or_a_named_error(tmp_path):
    from PIL import Image

    Image.new("L", (5, 7), 9).save(tmp_path / "a.png")
    x = decode_image(tmp_path / "a.png", 4, gray=True)
    assert x.dtype == torch.uint8 and x.shape == (1, 4, 4) and int(x.max()) == 9
    assert decode_image(tmp_path / "a.png", 4).shape == (3, 4, 4)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(BadImageError, match="cannot decode image .*b.png"):
        decode_image(tmp_path / "b.png", 4)


@pytest.mark.parametrize("options", [dict(num_classes=1), dict(num_classes=3, n_train=1)])
def test_fewer_than_two_classes_is_an_error(options):
    with pytest.raises(ValueError, match="classification needs at least 2"):
        load_dataset("synthetic", val_size=0, **options)


def test_synthetic_is_balanced_and_sized():
    d = load_dataset("synthetic", val_size=8, num_classes=4, n_train=40, n_test=12,
                     image_size=16, channels=1)
    assert d.train_x.shape == (32, 1, 16, 16) and d.num_classes == 4
    assert torch.bincount(d.val_y).tolist() == [2, 2, 2, 2]


# ---------------------------------------------------------------- batches
def test_eval_transform_is_hand_normalisation_and_gray_repeat():
    x = torch.randint(0, 256, (2, 1, 5, 5), dtype=torch.uint8)
    t = BatchTransform(5, in_chans=3, mean=[0.5], std=[0.25])
    out = t(x)
    expect = (x.float() / 255 - 0.5) / 0.25
    assert out.shape == (2, 3, 5, 5)
    torch.testing.assert_close(out, expect.expand(-1, 3, -1, -1))
    t1 = BatchTransform(5, in_chans=1, mean=[0.2, 0.4, 0.6], std=[0.5, 0.5, 0.5])
    rgb = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8)
    torch.testing.assert_close(t1(rgb), (rgb.float().mean(1, keepdim=True) / 255 - 0.4) / 0.5)


def test_resize_matches_interpolate():
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    out = BatchTransform(16, in_chans=1, mean=[0.0], std=[1.0])(x)
    ref = torch.nn.functional.interpolate(x.float(), size=(16, 16), mode="bilinear") / 255
    torch.testing.assert_close(out, ref)


def test_random_crop_and_flip_are_windows_of_the_padded_image():
    x = torch.arange(2 * 3 * 36, dtype=torch.float32).reshape(2, 3, 6, 6).to(torch.uint8)
    t = BatchTransform(6, in_chans=3, mean=[0.0] * 3, std=[1 / 255] * 3, pad=2, flip=True)
    g = torch.Generator().manual_seed(0)
    out = t(x, train=True, generator=g)
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2))
    for b in range(2):  # all channels of a sample share one crop and one flip
        windows = [padded[b, :, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[b], w) for w in windows)
    many = t(x.repeat(8, 1, 1, 1), train=True, generator=g)  # augmentation really happens
    assert sum(not torch.equal(many[i], x[i % 2].float()) for i in range(16)) >= 8
    again = t(x, train=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # same generator state, same augmentation
    assert torch.equal(t(x, train=False), x.float())  # eval: no augmentation


def test_sampler_shards_cover_every_index_and_resume_mid_epoch():
    s = EpochSampler(10, batch_size=3, seed=1, drop_last=False)
    full = list(s.batches(epoch=2))
    assert sorted(torch.cat(full).tolist()) == list(range(10))
    assert [b.tolist() for b in s.batches(2, start=2)] == [b.tolist() for b in full[2:]]
    assert not torch.equal(s.indices(2), s.indices(3))
    shards = [EpochSampler(10, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    assert set(shards[0].indices(0).tolist()) | set(shards[1].indices(0).tolist()) == set(range(10))
    assert len(shards[0]) == len(shards[1]) == 2
    assert [i for r in range(3) for sl in iterate(7, 2, r, 3) for i in range(7)[sl]] == list(range(7))


def test_concurrent_downloads_into_one_directory_take_turns(tmp_path, monkeypatch):
    """The tasks of a study's job array share the data directory: one downloads at a time (a
    lock in the directory), and the others then read what it fetched."""
    import threading
    import time
    import types

    inside, most, fetched = [0], [0], []
    guard = threading.Lock()

    class FakeFashionMNIST:  # torchvision's downloader: fetches into ROOT/FashionMNIST/raw
        def __init__(self, root: str, train: bool, download: bool):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.2)
            raw = Path(root) / "FashionMNIST" / "raw"
            if not raw.is_dir():
                write_fmnist(raw, gz=False)
                fetched.append(root)
            with guard:
                inside[0] -= 1

    fake = types.SimpleNamespace(datasets=types.SimpleNamespace(FashionMNIST=FakeFashionMNIST))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    sizes: list[int] = []

    def task() -> None:
        sizes.append(len(load_dataset("fashion-mnist", data_dir=tmp_path / "data", download=True,
                                      val_size=0).train_y))

    threads = [threading.Thread(target=task) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sizes == [100, 100, 100] and most[0] == 1 and fetched == [str(tmp_path / "data")]
