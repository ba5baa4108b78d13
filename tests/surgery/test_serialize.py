"""surgery.save / surgery.load: a swapped model round-trips with its recipe."""

from __future__ import annotations

import pytest
import torch

from surgery import load, save, swap_head


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
