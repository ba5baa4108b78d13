"""surgery.save / surgery.load: a swapped model round-trips with its recipe."""

from __future__ import annotations

import pytest
import torch

from surgery import load, save, swap_head
from surgery.serialize import FORMAT_VERSION, state_checksum


@pytest.mark.parametrize("name, head, kwargs", [
    ("resnet18", "gmp", dict(hidden=(16,), dropout=0.5)),
    ("resnet18", "flatten", dict(input_size=64)),
    ("vit_tiny_patch16_224", "nin", dict(img_size=64, depth=1, input_size=64)),
    ("convnext_atto", "original", {}),
    ("resnet18", "gap", dict(in_chans=1)),
])
def test_round_trip_gives_equal_outputs(tmp_path, name, head, kwargs):
    model = swap_head(name, head=head, num_classes=4, **kwargs).eval()
    with torch.no_grad():  # make the weights differ from a fresh init
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save(model, tmp_path / "m.pt")
    loaded = load(path).eval()
    assert loaded.recipe == model.recipe
    chans = model.recipe["in_chans"]
    x = torch.randn(2, chans, 64, 64)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_load_rejects_other_files(tmp_path):
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, plain)
    with pytest.raises(ValueError, match="not a headswap model file"):
        load(plain)
    with pytest.raises(FileNotFoundError, match="no headswap model file"):
        load(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_text("nope")
    with pytest.raises(ValueError, match="could not read"):
        load(broken)


def test_save_refuses_a_plain_module(tmp_path):
    with pytest.raises(ValueError, match="expects a HeadSwapped model"):
        save(torch.nn.Linear(2, 2), tmp_path / "x.pt")


def _flip_a_weight_byte(model, path) -> None:
    """Flip one byte inside the stored bytes of the output layer's weight."""
    raw = bytearray(path.read_bytes())
    weight = model.head.fc.weight.detach().numpy().tobytes()
    at = bytes(raw).find(weight)
    assert at > 0 and bytes(raw).find(weight, at + 1) == -1
    raw[at + len(weight) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_the_weights_are_an_error_naming_the_file(tmp_path):
    model = swap_head("test_resnet", head="gap", num_classes=3)
    path = save(model, tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == FORMAT_VERSION == 1 and payload["checksum"].startswith("crc32:")
    assert payload["checksum"] == state_checksum(model.state_dict())
    _flip_a_weight_byte(model, path)
    with pytest.raises(ValueError, match=f"{str(path)!r} is damaged: its weights do not match"):
        load(path)


def test_files_without_a_checksum_still_load(tmp_path):
    model = swap_head("test_resnet", head="gmp", num_classes=3).eval()
    old_style = {"format": "headswap", "version": 1, "recipe": model.recipe,
                 "state_dict": model.state_dict(), "extra": {}}
    torch.save(old_style, tmp_path / "old.pt")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(load(tmp_path / "old.pt").eval()(x), model(x), rtol=0, atol=0)


def test_a_recipe_without_a_head_is_a_clear_error_and_an_int_hidden_is_one_layer(tmp_path):
    model = swap_head("test_resnet", head="gap", num_classes=3, hidden=(8,))
    recipe = dict(model.recipe)
    del recipe["head"]
    torch.save({"format": "headswap", "version": 1, "recipe": recipe,
                "state_dict": model.state_dict()}, tmp_path / "nohead.pt")
    with pytest.raises(ValueError, match="incomplete headswap model file: its recipe has no head"):
        load(tmp_path / "nohead.pt")
    torch.save({"format": "headswap", "version": 1, "recipe": dict(model.recipe, hidden=8),
                "state_dict": model.state_dict()}, tmp_path / "int.pt")
    assert load(tmp_path / "int.pt").recipe["hidden"] == [8]


@pytest.mark.parametrize("content, match", [
    (b"", "the file is empty"), (b"hello\n", "it is a text file"), (None, "is a directory")])
def test_unreadable_model_files_say_why(tmp_path, content, match):
    path = tmp_path / "m.pt"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        load(path)
