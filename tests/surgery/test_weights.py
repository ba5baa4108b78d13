"""Backbones from headswap model files and .safetensors files (written by the tests)."""

from __future__ import annotations

import pytest
import timm
import torch

import surgery
from surgery import checkpoint_settings, load_backbone, read_weights, save, swap_head

NORM = {"mean": [0.25], "std": [0.5]}


@pytest.fixture
def model_file(tmp_path):
    """A 1-channel test_resnet at output stride 16 with a gmp head and its normalisation, saved."""
    model = swap_head("test_resnet", head="gmp", num_classes=5, input_size=64, in_chans=1,
                      output_stride=16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # weights no fresh model has
    model.recipe["normalization"] = dict(NORM)
    return save(model, tmp_path / "best.pt"), model


def test_model_file_gives_its_backbone_channels_options_and_normalisation(model_file):
    path, source = model_file
    backbone = load_backbone("test_resnet", checkpoint=path)
    assert backbone.conv1[0].weight.shape[1] == 1  # the file's channels, not 3
    assert backbone.headswap_origin["timm_kwargs"] == {"output_stride": 16}
    own = backbone.state_dict()
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(own[k], v), k
    assert backbone.pretrained_cfg["mean"] == (0.25,) and backbone.pretrained_cfg["std"] == (0.5,)
    # the swap removed timm's classifier: it is not in the file, and not expected
    assert "fc.weight" not in read_weights(path).state and "fc.weight" in own
    assert not any(k.startswith("head.") for k in read_weights(path).state)


def test_model_file_settings_and_a_new_swap_carries_the_normalisation(model_file):
    path, source = model_file
    settings = checkpoint_settings(path)
    assert settings["backbone"] == "test_resnet" and settings["in_chans"] == 1
    assert settings["normalization"] == NORM and settings["removed"] == source.recipe["removed"]
    new = swap_head("test_resnet", head="flatten", num_classes=3, input_size=64, checkpoint=path)
    assert new.recipe["normalization"] == NORM and new.recipe["in_chans"] == 1
    x = torch.randn(2, 1, 64, 64)
    assert torch.allclose(new.eval().forward_features(x),
                          source.eval().forward_features(x), atol=1e-5)
    # the file's options are defaults: an option given wins
    again = load_backbone("test_resnet", checkpoint=path, output_stride=32)
    assert again.headswap_origin["timm_kwargs"] == {"output_stride": 32}
    assert surgery.load(path).recipe["normalization"] == NORM
    assert checkpoint_settings(None) == {}


def test_model_file_of_another_architecture_is_refused(model_file):
    path, _ = model_file
    with pytest.raises(ValueError, match="headswap model file of a test_resnet backbone, not "
                                         "resnet18; give test_resnet as the model"):
        load_backbone("resnet18", checkpoint=path)


def test_safetensors_file_loads_like_a_state_dict(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = timm.create_model("test_resnet", num_classes=7)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    assert read_weights(path).kind == "safetensors" and checkpoint_settings(path) == {}
    model = load_backbone("test_resnet", checkpoint=path)  # 1000 classes: the head is replaced
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items()
               if not k.startswith("fc."))
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    with pytest.raises(ValueError, match="could not read checkpoint .*model.safetensors"):
        load_backbone("test_resnet", checkpoint=path)


def test_plain_state_dict_has_no_settings(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    w = read_weights(path)
    assert w.kind == "state dict" and w.recipe == {} and checkpoint_settings(path) == {}
    assert load_backbone("test_resnet", checkpoint=path).conv1[0].weight.shape[1] == 3


def test_a_headswap_file_without_backbone_weights_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": "headswap-head", "recipe": {}, "head_state_dict": {}}, path)
    with pytest.raises(ValueError, match="'headswap-head' file without backbone weights"):
        read_weights(path)
