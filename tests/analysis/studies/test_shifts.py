"""Shift robustness: shifted images against hand-made ones, the per-shift mean over directions,
a pooling head's invariance against Flatten's, and what a finished run keeps (prune)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.studies import evaluate_shifts, prune_checkpoints, shift_images


def test_shift_images_moves_and_zero_fills():
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)  # 1 2 3 / 4 5 6 / 7 8 9
    assert shift_images(x, 1, 0)[0, 0].tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    assert shift_images(x, -1, 0)[0, 0].tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    assert shift_images(x, 0, 2)[0, 0].tolist() == [[0, 0, 0], [0, 0, 0], [1, 2, 3]]
    assert shift_images(x, 0, -1)[0, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    assert shift_images(x, 3, 0).sum() == 0 and shift_images(x, 0, 0).equal(x)
    assert shift_images(x, 1, 1).dtype == torch.uint8 and shift_images(x, 1, 1).shape == x.shape


def test_evaluate_shifts_moves_each_image_in_one_direction():
    seen: list[tuple[str, int]] = []

    def score(images, labels, view):  # accuracy: the fraction of each image still inside
        seen.append((view, len(labels)))
        return 1.0, float(images.sum()) / (len(labels) * 16 * 16)

    x = torch.ones(8, 1, 16, 16)
    x[:, :, :, 12:] = 0  # the right quarter is empty: moving right 4 loses nothing
    rows = evaluate_shifts(score, x, torch.zeros(8, dtype=torch.long), [0, 4])
    # images 0 and 4 go right, 1 and 5 left, 2 and 6 down, 3 and 7 up: one pass in all
    assert seen == [("none0", 8), ("right4", 2), ("left4", 2), ("down4", 2), ("up4", 2)]
    assert rows[0]["test_acc"] == 0.75 and rows[0]["directions"] == 1 and rows[0]["images"] == 8
    assert rows[1]["by_direction"] == {"right": 0.75, "left": 0.5, "down": 0.5625,
                                       "up": 0.5625}
    assert rows[1]["test_acc"] == pytest.approx((0.75 + 0.5 + 0.5625 + 0.5625) / 4)
    assert rows[1]["images"] == 8 and rows[1]["directions"] == 4 and rows[1]["test_loss"] == 1.0
    with pytest.raises(ValueError, match="whole numbers of pixels >= 0"):
        evaluate_shifts(score, torch.ones(1, 1, 4, 4), torch.zeros(1, dtype=torch.long), [-1])


def _scorer(head: nn.Module):
    """Class = which half of the image a bright square is in; the head sees a 4x4 'grid'."""
    def score(images, labels, view):
        feats = nn.functional.avg_pool2d(images.float(), 4)  # 16 px -> 4x4 grid, 255 a cell
        pred = head(feats).argmax(1)
        return 0.0, float((pred == labels).float().mean())
    return score


def test_a_pooling_head_ignores_a_shift_that_a_position_tied_head_does_not():
    y = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])  # images 0 and 4 (moved right): one of each
    x = torch.zeros(8, 1, 16, 16)
    x[y == 0, 0, 4:8, 2:6] = 255   # class 0: a square, left
    x[y == 1, 0, 4:12, 2:10] = 255  # class 1: a larger square, left as well

    class Area(nn.Module):  # pooling: total brightness, anywhere
        def forward(self, f):
            s = f.sum((1, 2, 3))
            return torch.stack([-s + 2 * 255, s - 2 * 255], 1)

    class LeftArea(nn.Module):  # position-tied: brightness in the left half of the grid only
        def forward(self, f):
            s = f[..., :2].sum((1, 2, 3))
            return torch.stack([-s + 2 * 255, s - 2 * 255], 1)

    pooled = evaluate_shifts(_scorer(Area()), x, y, [0, 4])
    tied = evaluate_shifts(_scorer(LeftArea()), x, y, [0, 4])
    assert pooled[0]["test_acc"] == tied[0]["test_acc"] == 1.0
    assert pooled[1]["by_direction"]["right"] == 1.0  # the squares stay whole
    assert tied[1]["by_direction"]["right"] < 1.0     # one left the half the head looks at


def test_prune_checkpoints_keeps_what_was_asked(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.pt", "last.pt"):
        (run / name).write_bytes(b"x")
    assert prune_checkpoints(run, "best") == []  # not finished: left alone
    (run / "summary.json").write_text("{}")
    assert prune_checkpoints(run, "all") == []
    assert prune_checkpoints(run, "best") == ["last.pt"]
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    assert prune_checkpoints(run, "none") == ["best.pt"]
    with pytest.raises(ValueError, match="keep must be one of best, none, all"):
        prune_checkpoints(run, "some")


def test_frozen_views_match_the_whole_model_and_are_extracted_once():
    import surgery
    from analysis.data import BatchTransform
    from analysis.studies.frozen import clear_views, frozen_scorer
    from analysis.training import evaluate

    torch.manual_seed(0)
    model = surgery.swap_head("test_resnet", head="flatten", num_classes=3, input_size=64,
                              in_chans=1).eval()
    x = torch.randint(0, 256, (12, 1, 28, 28), dtype=torch.uint8)
    y = torch.randint(0, 3, (12,))
    transform = BatchTransform(64, 1, (0.5,), (0.25,), augment=False)
    calls = []
    model.backbone.conv1.register_forward_hook(lambda *a: calls.append(1))
    clear_views()
    whole = evaluate(model, x, y, transform, 5)
    calls.clear()
    score = frozen_scorer(model, transform, 5)
    loss, acc = score(x, y, "none0")
    assert acc == pytest.approx(whole[1]) and loss == pytest.approx(whole[0], rel=1e-2)  # fp16
    assert len(calls) == 3  # 12 images in batches of 5
    other = surgery.swap_head(model, head="gap")  # another head on the same backbone weights
    assert frozen_scorer(other, transform, 5)(x, y)[1] >= 0 and len(calls) == 3  # read, not run
    with torch.no_grad():
        next(model.backbone.parameters()).add_(1.0)  # a backbone that changed: extracted again
    score(x, y, "none0")
    assert len(calls) == 6
    with pytest.raises(ValueError, match="Flatten head was built for a 2x2 grid"):
        frozen_scorer(model, BatchTransform(96, 1, (0.5,), (0.25,), augment=False), 5)(x, y)
    clear_views()
