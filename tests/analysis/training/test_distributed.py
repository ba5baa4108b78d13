"""DDP under torchrun: 2 CPU processes (gloo, loopback) on a tiny run, checked from outside.

The worker (tests/analysis/training/ddp_worker.py) trains test_resnet on generated data with uneven
shards (65 training images over 2 ranks, 31 validation, 30 test) and reports what each rank
ended with and what it wrote.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import surgery
from analysis.data import BatchTransform, EpochSampler, iterate, load_dataset
from analysis.training import evaluate

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(WORKER), str(tmp / "out"), str(tmp / "results")]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp / "results" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return ranks, tmp / "out" / "r", time.perf_counter() - t0


def _data():
    return load_dataset("synthetic", val_size=31, num_classes=4, n_train=96, n_test=30,
                        image_size=16)


def test_shards_cover_the_epoch_and_evaluation_counts_each_sample_once():
    shards = [EpochSampler(65, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 4  # 33 per rank (one repeated), last 1 dropped
    got = torch.cat([s.indices(0) for s in shards])
    assert sorted(set(got.tolist())) == list(range(65)) and len(got) == 66
    assert len(set(shards[0].indices(0).tolist()) & set(shards[1].indices(0).tolist())) == 1
    assert not torch.equal(shards[0].indices(0), shards[0].indices(1))  # reshuffled per epoch
    covered = [i for r in (0, 1) for sl in iterate(31, 8, r, 2) for i in range(31)[sl]]
    assert covered == list(range(31))
    assert [i for r in range(4) for sl in iterate(3, 8, r, 4) for i in range(3)[sl]] == [0, 1, 2]


@pytest.mark.slow
@pytest.mark.smoke
def test_two_ranks_end_identical_and_report_whole_validation_set(ddp_run):
    ranks, run_dir, seconds = ddp_run
    print(f"2-process torchrun run: {seconds:.1f}s")
    assert [r["rank"] for r in ranks] == [0, 1] and ranks[0]["world_size"] == 2
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0 and set(w0) == set(w1)
    assert any("running_mean" in k for k in w0)  # BatchNorm statistics are compared too
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    last = surgery.read_model_file(run_dir / "last.pt")
    assert all(torch.equal(w0[k], last["state_dict"][k]) for k in w0)
    assert last["extra"]["world_size"] == 2 and len(last["extra"]["ranks"]) == 2
    # the reported metrics are those of one process evaluating the whole set with these weights
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    cfg = json.loads((run_dir / "config.json").read_text())["resolved"]
    assert cfg["world_size"] == 2 and cfg["steps_per_epoch"] == 4
    data = _data()
    t = BatchTransform(16, cfg["in_chans"], cfg["mean"], cfg["std"])
    model = surgery.load(run_dir / "last.pt")
    loss, acc = evaluate(model, data.val_x, data.val_y, t, 7)
    assert rows[-1]["val_acc"] == pytest.approx(acc, abs=1e-12)
    assert rows[-1]["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert round(acc * 31) == pytest.approx(acc * 31, abs=1e-9)  # k/31: neither 30 nor 32 seen
    summary = json.loads((run_dir / "summary.json").read_text())
    te_loss, te_acc = evaluate(surgery.load(run_dir / "best.pt"), data.test_x, data.test_y, t, 7)
    assert summary["test_acc"] == pytest.approx(te_acc, abs=1e-12)
    assert summary["world_size"] == 2
    assert ranks[1]["summary"]["test_acc"] == summary["test_acc"]
    # every epoch's images: both shards, 2 x 4 steps x 8 images
    assert summary["img_per_s"] == pytest.approx(2 * 2 * 4 * 8 / summary["train_time_s"])


@pytest.mark.slow
@pytest.mark.smoke
def test_only_rank_0_writes_the_run_directory(ddp_run):
    ranks, run_dir, _ = ddp_run
    assert ranks[1]["writes"] == []
    written = " ".join(ranks[0]["writes"])
    for f in ("config.json", "metrics.csv", "metrics.jsonl", "summary.json", "best.pt", "last.pt",
              "curves.png"):
        assert (run_dir / f).is_file() and f in written


CACHED_WORKER = Path(__file__).with_name("ddp_cached_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize("mem_gb", [
    pytest.param("4", marks=pytest.mark.smoke),  # in memory: blocks gathered to every rank
    "0.00001",                                   # on disk: rank 0 joins the ranks' parts
])
def test_cached_linear_probe_under_torchrun_extracts_a_shard_per_rank(tmp_path, mem_gb):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(CACHED_WORKER), str(tmp_path / "out"), str(tmp_path / "results"), mem_gb]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / "results" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    info = ranks[0]["summary"]["feature_cache"]
    assert info["used"] and info["storage"] == ("memory" if mem_gb == "4" else "disk")
    counts = [r["extracted"] for r in ranks]
    assert all(c > 0 for c in counts) and sum(counts) == info["images"] == 65 + 31 + 30
    run_dir = tmp_path / "out" / "r"
    model = surgery.load(run_dir / "best.pt")  # the final best.pt is whole
    summary = json.loads((run_dir / "summary.json").read_text())
    assert ranks[1]["summary"]["test_acc"] == summary["test_acc"]
    cfg = json.loads((run_dir / "config.json").read_text())["resolved"]
    data = load_dataset("synthetic", val_size=31, num_classes=4, n_train=96, n_test=30,
                        image_size=32)
    t = BatchTransform(32, cfg["in_chans"], cfg["mean"], cfg["std"])
    _, acc = evaluate(model, data.test_x, data.test_y, t, 7)
    assert summary["test_acc"] == pytest.approx(acc, abs=1e-12)
    if mem_gb != "4":
        assert len(list((run_dir / "features").glob("*.feat"))) == 1
        assert not list((run_dir / "features").glob("*.part*"))


@pytest.mark.slow
def test_two_local_submitit_tasks_reach_the_torchrun_weights(ddp_run, tmp_path, monkeypatch):
    """The same run as one job of 2 tasks through submitit's local executor: submitit's
    environment gives rank and world size (as Slurm's would), train() takes torchrun's path."""
    from analysis.runtime import SlurmOptions
    from analysis.training import finetune_logs, submit_finetune, wait_finetune
    from tests.analysis.training.ddp_worker import config

    ranks, torchrun_dir, _ = ddp_run
    for key, value in dict(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                           GLOO_SOCKET_IFNAME="lo", MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    opts = SlurmOptions(tasks_per_node=2, gpus_per_node=0, cpus_per_task=1)
    job = submit_finetune("submitit-local", opts, config(str(tmp_path)))
    summary = wait_finetune(job)
    ours = surgery.read_model_file(tmp_path / "r" / "last.pt")
    theirs = surgery.read_model_file(torchrun_dir / "last.pt")
    assert ours["extra"]["world_size"] == 2 and summary["world_size"] == 2
    assert set(ours["state_dict"]) == set(theirs["state_dict"])
    assert all(torch.equal(v, theirs["state_dict"][k]) for k, v in ours["state_dict"].items())
    assert summary["test_acc"] == ranks[0]["summary"]["test_acc"]
    logs = finetune_logs(tmp_path / "r")
    assert logs == tmp_path / "r.logs"
    assert {p.name for p in logs.glob(f"{job.job_id}_*_log.out")} == \
        {f"{job.job_id}_0_log.out", f"{job.job_id}_1_log.out"}
