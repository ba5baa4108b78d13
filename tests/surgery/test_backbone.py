"""load_backbone: names, pretrained loading through timm, local checkpoints, and bad input."""

from __future__ import annotations

import socket
import time

import pytest
import timm
import torch

import surgery.backbone
import surgery.hub
from surgery import load_backbone, one_line, swap_head


def _equal_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet81'; closest: .*resnet18"):
        load_backbone("resnet81")


def test_pretrained_tag_is_accepted():
    model = load_backbone("resnet18.a1_in1k")
    assert model.pretrained_cfg["architecture"] == "resnet18"


def test_in_chans_reaches_timm():
    model = load_backbone("resnet18", in_chans=1)
    assert model.conv1.weight.shape[1] == 1


def test_checkpoint_state_dict_and_timm_style(tmp_path):
    source = timm.create_model("resnet18")
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth.tar"
    torch.save(source.state_dict(), plain)
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}},
               wrapped)
    for path in (plain, wrapped):
        assert _equal_state(load_backbone("resnet18", checkpoint=path), source)


def test_checkpoint_with_another_number_of_classes_loads_the_backbone(tmp_path):
    source = timm.create_model("resnet18", num_classes=10)
    path = tmp_path / "finetuned.pth"
    torch.save(source.state_dict(), path)
    model = load_backbone("resnet18", checkpoint=path)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.out_features == 1000  # the classifier is replaced by any swap anyway


def test_pretrained_goes_through_timms_loader_with_a_local_file(tmp_path):
    source = timm.create_model("resnet18")
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = load_backbone("resnet18", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert _equal_state(model, source)
    swapped = swap_head("resnet18", head="gmp", num_classes=3, pretrained=True,
                        pretrained_cfg_overlay={"file": str(path)})
    assert torch.equal(swapped.backbone.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="could not read checkpoint .*broken.pth"):
        load_backbone("resnet18", checkpoint=path)


def test_missing_checkpoint_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_backbone("resnet18", checkpoint=tmp_path / "nope.pth")


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(ValueError, match=r"does not match 'resnet18': .*unexpected \(layer1.2"):
        load_backbone("resnet18", checkpoint=path)
    torch.save(timm.create_model("resnet18", in_chans=1).state_dict(), path)
    with pytest.raises(ValueError, match=r"another shape \(e.g. conv1.weight: checkpoint "
                                         r"\(64, 1, 7, 7\) vs model \(64, 3, 7, 7\)"):
        load_backbone("resnet18", checkpoint=path)


def test_checkpoint_without_tensors_is_rejected(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    with pytest.raises(ValueError, match="holds no state dict"):
        load_backbone("resnet18", checkpoint=path)


def test_failed_pretrained_download_says_what_to_do(monkeypatch):
    def fails(*args, **kwargs):
        raise OSError("We couldn't connect to the hub")

    monkeypatch.setattr(surgery.backbone, "check_weights_reachable", lambda *a, **k: None)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", fails)
    with pytest.raises(ValueError, match="Offline\\? Use local weights instead: --checkpoint FILE"):
        load_backbone("resnet18", pretrained=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
    (dict(head="gxp"), "unknown head 'gxp'"),
    (dict(input_size=(0, 3)), "input_size must be"),
])
def test_swap_head_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        swap_head("resnet18", **{"head": "gap", **kwargs})


def test_flatten_model_fed_another_size_says_both_sizes():
    model = swap_head("resnet18", head="flatten", num_classes=3, input_size=64)
    with pytest.raises(ValueError, match=r"built for a 2x2 grid \(input 64x64\) but got 3x3 "
                                         r"\(input 96x96\); pooling heads"):
        model(torch.randn(1, 3, 96, 96))


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ValueError, match="cannot run at input 8x8"):
        swap_head("vit_tiny_patch16_224", head="gap", num_classes=3, input_size=8)


@pytest.mark.parametrize("content, match", [
    (b"", "the file is empty \\(0 bytes\\)"),
    (b"epoch,loss\n1,0.5\n", "it is a text file .* not saved tensors"),
    (None, "is a directory; pass the weights file itself"),
])
def test_unreadable_checkpoints_say_why(tmp_path, content, match):
    path = tmp_path / "weights.pth"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load_backbone("test_resnet", checkpoint=path)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (every connection refused at once), an empty hub cache, no proxy."""
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_pretrained_offline_fails_fast_with_the_whole_message(offline):
    start = time.perf_counter()
    with pytest.raises(ValueError) as err:
        load_backbone("test_resnet", pretrained=True)
    message = str(err.value)
    assert time.perf_counter() - start < 10 and "\n" not in message
    assert "huggingface.co is unreachable (Network is unreachable)" in message
    assert message.endswith("--checkpoint FILE (checkpoint=PATH in Python; a state dict saved "
                            "with torch.save) or pretrained_cfg_overlay=dict(file=PATH)")


def test_hub_offline_setting_and_cached_weights(offline, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE is set, and they are not in the local "
                                         "cache"):
        surgery.hub.check_weights_reachable("test_resnet", {})
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    snapshot = offline / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"")
    surgery.hub.check_weights_reachable("test_resnet", {})  # cached: timm loads it offline


def test_long_errors_are_cut_at_a_word_boundary():
    text = one_line(ValueError("word " * 100), limit=50)
    assert len(text) <= 50 and text.endswith("word...")
