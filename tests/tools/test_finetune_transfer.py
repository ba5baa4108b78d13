"""tools/finetune.py for transfer: a source run on some classes, a target run on the others that
starts from the source's best.pt (a headswap model file) or a .safetensors file."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import finetune  # noqa: E402
from _cli import run  # noqa: E402

import surgery  # noqa: E402
from tests.analysis.data.test_data import write_fmnist  # noqa: E402

COMMON = ["test_resnet", "--dataset", "fashion-mnist", "--img-size", "32", "--val-size", "10",
          "--epochs", "1", "--batch-size", "10", "--lr", "0.01", "--no-progress",
          "--timm-option", "output_stride=16"]


def _run(argv: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(lambda: finetune.main(argv))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """The data directory and a source run trained on classes 0,2,3,4,6 from scratch."""
    root = tmp_path_factory.mktemp("transfer")
    write_fmnist(root / "data", gz=False, n_train=100, n_test=20)
    assert _run(COMMON + ["--data-dir", str(root / "data"), "--classes", "0,2,3,4,6",
                          "--out", str(root / "runs")]) == 0
    return root / "data", root / "runs" / "test_resnet-gap-fashion-mnist-c0.2.3.4.6-nall-s0"


def test_source_run_is_named_by_its_classes_and_records_them(source):
    _, run_dir = source
    meta = json.loads((run_dir / "config.json").read_text())
    assert meta["config"]["classes"] == [0, 2, 3, 4, 6]
    model = surgery.load(run_dir / "best.pt")
    assert model.num_classes == 5 and model.recipe["in_chans"] == 1  # grayscale, from scratch
    assert model.recipe["timm_kwargs"] == {"output_stride": 16}
    assert len(model.recipe["normalization"]["mean"]) == 1


def test_target_run_starts_from_the_source_model_file(source, tmp_path):
    data, src_dir = source
    # names (with a space: no comma needed) select the other classes; the backbone stays frozen
    argv = COMMON[:-2] + ["--data-dir", str(data), "--classes", "Trouser,Sandal,Ankle boot",
                          "--checkpoint", str(src_dir / "best.pt"), "--regime", "linear-probe",
                          "--head", "flatten", "--out", str(tmp_path)]
    assert _run(argv) == 0
    run_dir = tmp_path / "test_resnet-flatten-fashion-mnist-cTrouser.Sandal.Ankle_boot-nall-linear-probe-s0"
    target, src = surgery.load(run_dir / "best.pt"), surgery.load(src_dir / "best.pt")
    assert target.num_classes == 3
    # the file's channels, timm options and normalisation came along (none given here)
    assert target.recipe["in_chans"] == 1 and target.recipe["timm_kwargs"] == {"output_stride": 16}
    assert target.recipe["normalization"] == src.recipe["normalization"]
    resolved = json.loads((run_dir / "config.json").read_text())["resolved"]
    assert resolved["mean"] == src.recipe["normalization"]["mean"]
    # linear probe: the backbone is the source's, bit for bit (BatchNorm statistics included)
    own = target.backbone.state_dict()
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(own[k], v), k


def test_target_run_from_a_safetensors_file(source, tmp_path):
    st = pytest.importorskip("safetensors.torch")
    data, src_dir = source
    src = surgery.load(src_dir / "best.pt")
    path = tmp_path / "backbone.safetensors"
    st.save_file({k: v.contiguous() for k, v in src.backbone.state_dict().items()}, path)
    argv = COMMON + ["--data-dir", str(data), "--classes", "1,5,7,8,9", "--in-chans", "1",
                     "--checkpoint", str(path), "--regime", "linear-probe", "--out",
                     str(tmp_path / "runs")]
    assert _run(argv) == 0
    target = surgery.load(tmp_path / "runs" / "test_resnet-gap-fashion-mnist-c1.5.7.8.9-nall-"
                          "linear-probe-s0" / "best.pt")
    own = target.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in src.backbone.state_dict().items())


def test_a_model_file_of_another_architecture_is_one_line(source, tmp_path, capsys):
    data, src_dir = source
    argv = ["resnet10t"] + COMMON[1:] + ["--data-dir", str(data), "--checkpoint",
                                         str(src_dir / "best.pt"), "--out", str(tmp_path)]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "headswap model file of a test_resnet backbone, not resnet10t" in err
