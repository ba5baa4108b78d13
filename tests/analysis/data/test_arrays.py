"""Past memory: splits and batches gathered from a memory-mapped array keep the process's
anonymous memory bounded, and give exactly the batches the in-memory path gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.data import (
    DATASETS,
    BatchTransform,
    EpochSampler,
    ImageArray,
    ImageRows,
    RawData,
    iterate,
    load_dataset,
    register_dataset,
    take,
)

MiB = 2**20


def _rss_anon() -> int:
    """Anonymous resident memory of this process (bytes): heap and the like, not file pages."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no RssAnon in /proc/self/status")


def _write_array(path: Path, n: int, shape: tuple[int, int, int]) -> None:
    """uint8 images whose every pixel is its row number mod 251 (a checkable pattern)."""
    out = np.lib.format.open_memmap(path, "w+", np.uint8, (n, *shape))
    for s in range(0, n, 512):
        rows = np.arange(s, min(n, s + 512))
        out[s:s + 512] = (rows % 251).astype(np.uint8)[:, None, None, None]
    out.flush()
    del out


@pytest.fixture
def array_reader(tmp_path):
    """A data set ``arrays`` read from ``tmp_path/images.npy``: memory-mapped (ImageArray) or
    loaded into a tensor (``in_memory=True``); the last fifth is the test split."""
    def read(data_dir=None, download=False, *, in_memory: bool = False) -> RawData:
        base = np.load(tmp_path / "images.npy", mmap_mode="r")
        n = len(base)
        labels = torch.arange(n) % 4
        cut = n - n // 5
        if in_memory:
            x = torch.from_numpy(np.array(base))
            return RawData(x[:cut], labels[:cut], x[cut:], labels[cut:], list("abcd"))
        rows = np.arange(n)
        return RawData(ImageArray(base, rows[:cut]), labels[:cut], ImageArray(base, rows[cut:]),
                       labels[cut:], list("abcd"))
    register_dataset("arrays")(read)
    yield tmp_path / "images.npy"
    DATASETS.pop("arrays")


def test_training_batches_from_a_memmap_larger_than_the_budget_keep_rssanon_bounded(array_reader):
    n, shape, budget = 16384, (3, 64, 64), 48 * MiB            # a 192 MiB array, 4x the budget
    _write_array(array_reader, n, shape)
    size = n * int(np.prod(shape))
    assert size >= 4 * budget
    start = peak = _rss_anon()
    data = load_dataset("arrays", val_size=0.1, seed=0)         # split, stats: no whole copies
    sampler = EpochSampler(len(data.train_y), 128, seed=0)
    seen = 0
    for step, idx in enumerate(sampler.batches(0)):            # what the training loop gathers
        xb = data.train_x[idx]
        rows = data.train_x.rows(idx)                          # pixels say which row they are
        assert torch.equal(xb[:, 0, 0, 0], torch.from_numpy(rows % 251).to(torch.uint8))
        seen += len(xb)
        if step % 16 == 0:
            peak = max(peak, _rss_anon())
    for x in (data.val_x, data.test_x):                        # what evaluation gathers
        for sl in iterate(len(x), 256):
            assert len(x[sl]) == len(range(len(x))[sl])
        peak = max(peak, _rss_anon())
    assert seen >= len(data.train_y) - 128
    assert peak - start < budget, f"RssAnon grew {(peak - start) / MiB:.0f} MiB for a " \
                                  f"{size / MiB:.0f} MiB array"


def test_memmap_and_in_memory_paths_give_identical_batches(array_reader):
    _write_array(array_reader, 600, (3, 8, 8))
    mem = load_dataset("arrays", val_size=60, train_size=300, seed=3, in_memory=True)
    mm = load_dataset("arrays", val_size=60, train_size=300, seed=3)
    assert isinstance(mem.train_x, torch.Tensor) and isinstance(mm.train_x, ImageArray)
    assert (mem.mean, mem.std) == (mm.mean, mm.std)
    assert torch.equal(mem.train_y, mm.train_y) and torch.equal(mem.val_y, mm.val_y)
    sampler = EpochSampler(len(mem.train_y), 32, seed=3)
    transform = BatchTransform(12, 3, mem.mean, mem.std)
    for epoch in (0, 1):
        g_mem, g_mm = (torch.Generator().manual_seed(epoch) for _ in range(2))
        for idx in sampler.batches(epoch):
            a, b = mem.train_x[idx], mm.train_x[idx]
            assert torch.equal(a, b)
            assert torch.equal(transform(a, train=True, generator=g_mem),
                               transform(b, train=True, generator=g_mm))
    for a, b in ((mem.val_x, mm.val_x), (mem.test_x, mm.test_x)):
        for sl in iterate(len(a), 50):
            assert torch.equal(a[sl], b[sl])


def test_an_image_array_indexes_like_a_tensor():
    base = np.arange(10 * 2 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2, 2)
    tensor = torch.from_numpy(base.copy())
    arr = ImageArray(base)
    sub_t, sub_a = take(tensor, torch.tensor([7, 1, 4, 8])), take(arr, torch.tensor([7, 1, 4, 8]))
    for key in (torch.tensor([3, 0, 0, 2]), slice(1, 3), slice(None, None, 2), [-1],
                torch.tensor([True, False, True, False])):
        assert torch.equal(sub_t[key], sub_a[key]), key
    assert sub_a.shape == sub_t.shape and len(sub_a) == 4
    assert torch.equal(take(sub_t, [2, 3])[:], take(sub_a, [2, 3])[:])
    with pytest.raises(IndexError, match="out of range for 4 images"):
        sub_a[torch.tensor([4])]


def test_image_rows_draw_from_several_sources_like_their_concatenation():
    a = torch.arange(5 * 1 * 2 * 2, dtype=torch.uint8).reshape(5, 1, 2, 2)
    b = ImageArray(np.arange(100, 100 + 3 * 4, dtype=np.uint8).reshape(3, 1, 2, 2))
    whole = torch.cat([a, b[:]])
    rows = ImageRows((a, b), [1, 0, 0, 1, 1, 0], [2, 4, 0, 0, 1, 1])
    want = whole[torch.tensor([7, 4, 0, 5, 6, 1])]
    for key in (slice(None), slice(1, 5, 2), torch.tensor([5, 0, 0]), [-1]):
        assert torch.equal(rows[key], want[key]), key
    sub = take(rows, [3, 1])
    assert isinstance(sub, ImageRows) and torch.equal(sub[:], want[[3, 1]])
    both = ImageRows.concat([sub, a, b])  # rows, a tensor, an ImageArray
    assert torch.equal(both[:], torch.cat([want[[3, 1]], whole]))
    assert both.shape == (2 + 8, 1, 2, 2) and len(both.sources) == 4
    with pytest.raises(IndexError, match="out of range for 6 images"):
        rows[torch.tensor([6])]


def test_a_feature_cache_over_a_memmap_reads_its_images_a_batch_at_a_time(array_reader,
                                                                          monkeypatch, tmp_path):
    """A frozen backbone's features of a decoded folder: extraction gathers each batch from the
    memory-mapped images, never all the images the cache covers at once."""
    from analysis.features import clear_memory
    from analysis.training import TrainConfig, parts, train
    from tests.tiny_runs import quiet

    _write_array(array_reader, 300, (3, 8, 8))
    largest, extracting = [0], [False]
    gather, open_features = ImageArray.__getitem__, parts.open_features

    def counting(self, key):
        out = gather(self, key)
        if extracting[0]:
            largest[0] = max(largest[0], len(out))
        return out

    def watched(*args, **kwargs):
        extracting[0] = True
        try:
            return open_features(*args, **kwargs)
        finally:
            extracting[0] = False

    monkeypatch.setattr(ImageArray, "__getitem__", counting)
    monkeypatch.setattr(parts, "open_features", watched)
    clear_memory()
    cfg = TrainConfig(model="test_resnet", dataset="arrays", img_size=16, epochs=1,
                      batch_size=8, eval_batch_size=16, val_size=30, regime="linear-probe",
                      out=str(tmp_path), name="probe", progress=False, seed=0)
    summary = quiet(train, cfg)
    assert summary["feature_cache"]["used"] and summary["feature_cache"]["images"] == 300
    assert 0 < largest[0] <= 16, f"gathered {largest[0]} images at once"


def test_channel_statistics_are_those_of_the_images_whatever_their_size():
    from analysis.data.splits import _channel_stats

    small = torch.randint(0, 256, (500, 3, 6, 6), dtype=torch.uint8)     # all of it is counted
    flat = small.transpose(0, 1).reshape(3, -1).double() / 255
    mean, std = _channel_stats(small)
    assert mean == pytest.approx(flat.mean(1).tolist(), abs=1e-12)
    assert std == pytest.approx(flat.std(1).tolist(), abs=1e-12)
    big = ImageArray(np.broadcast_to(np.arange(3, dtype=np.uint8)[None, :, None, None] * 100,
                                     (4000, 3, 96, 96)))              # a sample of it, in chunks
    assert _channel_stats(big) == ((0.0, 100 / 255, 200 / 255), (1e-3, 1e-3, 1e-3))


def test_pool_statistics_are_of_every_image_unless_that_is_too_many():
    from analysis.data.splits import _pool_stats

    small = torch.randint(0, 256, (700, 3, 5, 5), dtype=torch.uint8)
    flat = small.transpose(0, 1).reshape(3, -1).double() / 255
    mean, std = _pool_stats(small)
    assert mean == pytest.approx(flat.mean(1).tolist(), abs=1e-12)
    assert std == pytest.approx(flat.std(1, correction=0).tolist(), abs=1e-12)
    rows = (np.arange(3000) >= 1500).astype(np.uint8)[:, None, None, None] * 200  # dark, bright
    big = ImageArray(np.broadcast_to(rows, (3000, 1, 64, 64)))
    mean, std = _pool_stats(big, max_values=101 * 64 * 64)     # an even sample of 101 images
    assert mean[0] == pytest.approx(100 / 255, abs=2 / 255) and std[0] > 0.35
