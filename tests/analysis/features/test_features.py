"""Feature caches: keys, the file format, memory or disk, locking, and every bad-input case."""

from __future__ import annotations

import errno
import multiprocessing as mp
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis.data import BatchTransform
from analysis.features import (
    CacheFileError,
    CacheKey,
    CacheRequest,
    Extractor,
    Storage,
    clear_memory,
    image_ids,
    open_cache,
    read_table,
    weights_digest,
)
from analysis.features import store as store_mod

KEY = CacheKey(model="toy", weights="w", source="forward_features", dataset="synthetic",
               data="d", img_size=8, mean=(0.5,), std=(0.25,), in_chans=1, dtype="float32")


class Toy(nn.Module):
    """A 'backbone' whose features are known by hand: 2 channels, sum and max of the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += len(x)
        assert not torch.is_grad_enabled() and not self.training  # eval + inference mode
        return torch.stack([x.flatten(1).sum(1), x.flatten(1).amax(1)], 1)


def _request(n: int = 10, key: CacheKey = KEY, model: Toy | None = None) -> CacheRequest:
    model = model or Toy()
    images = torch.arange(n * 64, dtype=torch.float32).remainder(251).to(torch.uint8)
    images = images.view(n, 1, 8, 8)
    transform = BatchTransform(8, 1, (0.5,), (0.25,), augment=False)
    ex = Extractor(model, model, transform, batch_size=4,
                   dtype=torch.float16 if key.dtype == "float16" else torch.float32)
    return CacheRequest(key, torch.arange(n), images, ex, name="toy")


def _expected(req: CacheRequest) -> torch.Tensor:
    x = (req.images.float() / 255.0 - 0.5) / 0.25
    return torch.stack([x.flatten(1).sum(1), x.flatten(1).amax(1)], 1)


@pytest.fixture(autouse=True)
def _fresh():
    clear_memory()
    yield
    clear_memory()


def test_memory_cache_holds_the_features_and_is_shared_in_process():
    req = _request()
    table, info = open_cache(req, Storage(mem_bytes=2**20))
    assert info["storage"] == "memory" and info["built"] and info["path"] is None
    torch.testing.assert_close(table.data, _expected(req), rtol=1e-6, atol=1e-5)
    again, info2 = open_cache(_request(6), Storage(mem_bytes=2**20))  # a subset: no extraction
    assert again is table and not info2["built"]
    rows = table.rows(torch.tensor([7, 2]))
    torch.testing.assert_close(rows[torch.tensor([1, 0])], _expected(req)[[2, 7]])


def test_disk_cache_is_written_once_and_found_again(tmp_path):
    model = Toy()
    req = _request(model=model)
    table, info = open_cache(req, Storage(mem_bytes=64, directory=tmp_path))
    assert info["storage"] == "disk" and Path(info["path"]).parent == tmp_path
    torch.testing.assert_close(table.data.float(), _expected(req), rtol=1e-6, atol=1e-5)
    calls = model.calls
    clear_memory()  # another process: only the file is left
    table2, info2 = open_cache(_request(model=model), Storage(mem_bytes=64, directory=tmp_path))
    assert not info2["built"] and model.calls == calls + 1  # one probe image, no extraction
    assert torch.equal(table2.data, table.data)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_key_covers_every_input_of_the_features():
    base = KEY.digest()
    for change in (dict(weights="w2"), dict(data="d2"), dict(img_size=16), dict(mean=(0.4,)),
                   dict(view="views=2:pad=1:flip=1:seed=0"), dict(timm_options={"a": 1}),
                   dict(dtype="float16"), dict(source="intermediates"), dict(model="toy2")):
        assert replace(KEY, **change).digest() != base, change
    assert replace(KEY).digest() == base


def test_weights_digest_sees_weights_and_buffers_but_not_the_head():
    torch.manual_seed(0)
    a = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 2))
    head = a[2]
    d = weights_digest(a, skip=(head,))
    with torch.no_grad():
        head.weight.add_(1.0)
    assert weights_digest(a, skip=(head,)) == d  # the head is not part of it
    assert weights_digest(a, skip_names=("2",)) == d
    a[1].running_mean.add_(1.0)
    assert weights_digest(a, skip=(head,)) != d


def test_image_ids_number_train_and_test_apart():
    ids = image_ids(train=torch.tensor([3, 1, 3]), test=torch.tensor([0, 2]))
    assert ids.tolist() == [-3, -1, 1, 3]


@pytest.mark.parametrize("damage", ["truncate", "flip", "version", "magic"])
def test_damaged_or_foreign_files_are_rebuilt_with_a_warning(tmp_path, damage):
    req = _request()
    _, info = open_cache(req, Storage(mem_bytes=64, directory=tmp_path))
    path = Path(info["path"])
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-7]
    elif damage == "flip":
        raw[-3] ^= 0xFF
    elif damage == "version":
        raw[8] = 99
    else:
        raw[:8] = b"NOTCACHE"
    path.write_bytes(bytes(raw))
    clear_memory()
    with pytest.warns(UserWarning, match="rebuilding it") as record:
        table, info2 = open_cache(_request(), Storage(mem_bytes=64, directory=tmp_path))
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert info2["built"]
    torch.testing.assert_close(table.data.float(), _expected(req), rtol=1e-6, atol=1e-5)
    with pytest.raises(CacheFileError):  # the reader itself never returns damaged rows
        path.write_bytes(bytes(raw))
        read_table(path, KEY.digest())


def test_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(rows, *a, **k):  # the writer hits ENOSPC after the header
        raise OSError(errno.ENOSPC, "No space left on device")

    req = _request()
    original = store_mod.write_table

    def write_table(path, header, ids, fill):
        def fill_full(put):
            fill(full)
        return original(path, header, ids, fill_full)

    monkeypatch.setattr("analysis.features.cache.write_table", write_table)
    with pytest.raises(ValueError, match="(?i)(disk is full|no space left).*--feature-cache-dir"):
        open_cache(req, Storage(mem_bytes=64, directory=tmp_path))
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="not writable.*--feature-cache-dir"):
        open_cache(_request(), Storage(mem_bytes=64, directory=blocker / "cache"))


def test_budget_below_one_batch_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="below one batch of features.*--batch-size"):
        open_cache(_request(), Storage(mem_bytes=10, directory=tmp_path, batch_size=8))


def test_float16_overflow_is_refused():
    req = _request(key=replace(KEY, dtype="float16"))
    req.extractor.forward = lambda x: x.flatten(1).sum(1, keepdim=True) * 1e6
    with pytest.raises(ValueError, match="float16.*--feature-cache-dtype float32"):
        open_cache(req, Storage(mem_bytes=2**20))


def _build_in_child(directory: str, out) -> None:
    model = Toy()
    _, info = open_cache(_request(model=model), Storage(mem_bytes=64, directory=Path(directory)))
    out.put((info["built"], model.calls))


def test_processes_asking_at_once_build_the_cache_once(tmp_path):
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(str(tmp_path), out)) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
    results = [out.get(timeout=5) for _ in procs]
    assert sorted(built for built, _ in results) == [False, False, True]
    assert len(list(tmp_path.glob("*.feat"))) == 1
