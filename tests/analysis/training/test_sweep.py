"""One pass over cached features: every member equals its run alone; divergence, pruning, output."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

import surgery
from analysis.data import EpochSampler
from analysis.features import clear_memory
from analysis.training import TrainConfig, train
from analysis.training.sweep import Halving, Sweep, SweepMember
from analysis.training.sweep_runs import write_member_run
from tests.tiny_runs import quiet, tiny_config

COMPARED = ("train_loss", "train_acc", "val_loss", "val_acc", "train_loss_running", "lr")


def probe(tmp_path, **kw) -> TrainConfig:
    """4 generated classes at 48 px, a float32 cache, 3 epochs of at least 10 steps."""
    base = dict(data_options=dict(num_classes=4, n_train=96, n_test=32, image_size=48),
                epochs=3, warmup_epochs=0.5, regime="linear-probe", min_steps=30,
                feature_cache_dtype="float32")
    return tiny_config(tmp_path, **{**base, **kw})


def _rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model, head, seeds", [
    ("test_resnet", "gap:hidden=16:dropout=0.5", (0, 1)),  # a CNN, an MLP with dropout, 2 seeds
    ("test_resnet", "original", (0,)),
    ("test_vit", "gap:dropout=0.5", (0,)),                   # a token model
    ("test_vit", "token", (0,)),
])
def test_member_equals_its_run_alone(tmp_path, model, head, seeds):
    clear_memory()
    base = probe(tmp_path, model=model)
    members = [SweepMember(head, lr, 0.05, s) for lr in (1e-3, 1e-2) for s in seeds]
    quiet(Sweep(base, run_dir=tmp_path / "sweep", progress=False).train, members)
    x = torch.randn(6, 3, 48, 48)
    for m in members:
        cfg = replace(m.config(base), name=f"alone-{m.lr:g}-{m.seed}")
        alone = quiet(train, cfg)
        rows = _rows(tmp_path / cfg.name)
        assert m.status == "ok" and len(m.history) == len(rows) == 3
        for ra, rb in zip(rows, m.history, strict=True):
            for k in COMPARED:
                assert rb[k] == pytest.approx(ra[k], rel=1e-5, abs=1e-7), (k, ra["epoch"])
        assert m.best["epoch"] == alone["best_epoch"]
        model_alone = surgery.load(tmp_path / cfg.name / "best.pt").eval()
        model_member = surgery.load(tmp_path / cfg.name / "best.pt").eval()
        model_member.head.load_state_dict(m.best_state)
        with torch.no_grad():
            la, lb = model_alone(x), model_member(x)
        assert float((la - lb).abs().max()) <= 1e-5 * float(la.abs().max())


def test_a_diverging_member_stops_alone(tmp_path):
    clear_memory()
    base = probe(tmp_path, optimizer="sgd", momentum=0.0)
    members = [SweepMember("gap", lr, 0.0, 0) for lr in (1e-2, 1e38)]
    quiet(Sweep(base, run_dir=tmp_path / "sweep", progress=False).train, members)
    ok, bad = members
    assert ok.status == "ok" and len(ok.history) == 3 and ok.best_state is not None
    assert bad.status == "diverged" and "NaN or inf" in bad.stopped
    assert len(bad.history) < 3


def test_halving_prunes_the_worse_half_of_each_head(tmp_path):
    clear_memory()
    base = probe(tmp_path, epochs=4)
    lrs = (1e-6, 1e-5, 3e-3, 1e-2)  # the two tiny rates barely move the head
    members = [SweepMember(h, lr, 0.05, 0) for h in ("gap", "gmp") for lr in lrs]
    halving = Halving.at_fractions(4, [0.5], keep=0.5, min_keep=1)
    assert halving.rungs == (2,)
    quiet(Sweep(base, run_dir=tmp_path / "sweep", progress=False).train, members, halving)
    for head in ("gap", "gmp"):
        mine = [m for m in members if m.head == head]
        pruned = [m for m in mine if m.status == "pruned"]
        assert len(pruned) == 2 and all(len(m.history) == 2 for m in pruned)
        assert all("pruned after epoch 2" in m.stopped for m in pruned)
        kept = [m for m in mine if m.status == "ok"]
        assert all(len(m.history) == 4 for m in kept)

        def at_rung(m):  # the best validation accuracy by epoch 2, what the rung compared
            return max(r["val_acc"] for r in m.history[:2])
        assert min(map(at_rung, kept)) >= max(map(at_rung, pruned))


def test_write_run_is_a_run_directory_like_trains(tmp_path):
    clear_memory()
    base = probe(tmp_path)
    member = SweepMember("gap", 1e-2, 0.05, 0)
    sweep = Sweep(base, run_dir=tmp_path / "sweep", progress=False)
    quiet(sweep.train, [member])
    summary = quiet(write_member_run, sweep, member, tmp_path / "runs" / "member")
    alone = quiet(train, replace(member.config(base), name="alone"))
    assert set(summary) == set(alone)
    assert summary["test_acc"] == pytest.approx(alone["test_acc"])
    assert summary["lr"] == 1e-2 and summary["best_epoch"] == alone["best_epoch"]
    model = surgery.load(tmp_path / "runs" / "member" / "best.pt")  # a whole model
    assert isinstance(model, surgery.HeadSwapped)
    for name in ("config.json", "metrics.csv", "metrics.jsonl", "curves.png", "summary.json"):
        assert (tmp_path / "runs" / "member" / name).is_file(), name


def test_min_steps_adds_passes_and_keeps_the_first():
    plain = EpochSampler(10, 4, seed=3)
    floor = EpochSampler(10, 4, seed=3, min_steps=7)
    assert len(plain) == 2 and len(floor) == 7
    a, b = list(plain.batches(1)), list(floor.batches(1))
    assert all(torch.equal(x, y) for x, y in zip(a, b[:2], strict=False))  # first pass as before
    assert all(len(x) == 4 for x in b)
    assert not torch.equal(torch.cat(b[2:4]), torch.cat(a))  # a new permutation each pass
    resumed = list(floor.batches(1, start=5))
    assert all(torch.equal(x, y) for x, y in zip(resumed, b[5:], strict=True))


def test_min_steps_sets_a_runs_length(tmp_path):
    summary = quiet(train, tiny_config(tmp_path, min_steps=50, epochs=2))  # 8 steps a pass
    config = json.loads((tmp_path / summary["run_dir"].split("/")[-1] / "config.json").read_text())
    assert config["resolved"]["steps_per_epoch"] == math.ceil(50 / 2)


def test_head_init_does_not_depend_on_the_backbone_built_before(tmp_path):
    cfg = tiny_config(tmp_path, head="gap:hidden=8")
    from analysis.training import load_run_data
    from analysis.training.model import build_backbone, build_model
    data = load_run_data(cfg)
    torch.manual_seed(0)
    alone, *_ = quiet(build_model, cfg, data, 16)
    torch.manual_seed(0)
    backbone = quiet(build_backbone, cfg, data, 16)
    torch.randn(100)  # whatever else was drawn before
    given, *_ = quiet(build_model, cfg, data, 16, backbone=backbone)
    for k, v in alone.state_dict().items():
        assert torch.equal(v, given.state_dict()[k]), k


def test_a_memory_budget_splits_the_pass_without_changing_a_member(tmp_path):
    clear_memory()
    base = probe(tmp_path)
    together = [SweepMember(h, lr, 0.05, 0) for h in ("gap", "gmp") for lr in (1e-3, 1e-2)]
    apart = [SweepMember(h, lr, 0.05, 0) for h in ("gap", "gmp") for lr in (1e-3, 1e-2)]
    quiet(Sweep(base, run_dir=tmp_path / "a", progress=False).train, together)
    small = Sweep(base, run_dir=tmp_path / "b", progress=False, mem_bytes=1)  # one per pass
    groups = [[m] for m in apart]
    assert small._passes([apart[:2], apart[2:]]) == [[g] for g in groups]
    quiet(small.train, apart)
    for a, b in zip(together, apart, strict=True):
        for ra, rb in zip(a.history, b.history, strict=True):
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-6)
        # a finished pass's best copies wait on disk, not in memory, and read back the same
        assert b.best_state is None and b.best_file is not None and a.best_state is not None
        for name, tensor in a.best_state.items():
            torch.testing.assert_close(b.head_state()[name], tensor, rtol=1e-6, atol=1e-7)


def test_an_interrupted_sweep_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    clear_memory()
    base = probe(tmp_path, epochs=4, ckpt_minutes=1e-9)  # progress written after every epoch

    def grid():
        return [SweepMember(h, lr, 0.05, s) for h in ("gap:dropout=0.5", "gmp")
                for lr in (1e-3, 1e-2, 1e-1) for s in (0, 1)]

    halving = Halving((2,), keep=0.5, min_keep=1)
    whole = grid()
    quiet(Sweep(base, run_dir=tmp_path / "w", progress=False).train, whole, halving)

    cut = grid()
    state = tmp_path / "state.pt"
    original = Sweep._epoch_steps

    def stop_in_epoch_3(self, stacks, feeds, epoch, bar):
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, stacks, feeds, epoch, bar)

    monkeypatch.setattr(Sweep, "_epoch_steps", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        quiet(Sweep(base, run_dir=tmp_path / "c", progress=False, state_path=state).train,
              cut, halving)
    assert state.is_file() and all(len(m.history) == 2 for m in cut)
    monkeypatch.setattr(Sweep, "_epoch_steps", original)
    resumed = grid()
    quiet(Sweep(base, run_dir=tmp_path / "c", progress=False, state_path=state).train,
          resumed, halving)
    for a, b in zip(whole, resumed, strict=True):
        assert (a.status, a.stopped, len(a.history)) == (b.status, b.stopped, len(b.history))
        for ra, rb in zip(a.history, b.history, strict=True):
            assert rb["val_loss"] == pytest.approx(ra["val_loss"], rel=1e-6)
            assert rb["train_loss_running"] == pytest.approx(ra["train_loss_running"], rel=1e-6)
        assert a.best["epoch"] == b.best["epoch"]
