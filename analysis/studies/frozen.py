"""Evaluation views of a frozen backbone, extracted once per process.

A linear probe trains its head on a backbone that never changes, the same one for every head and
seed of a study. Evaluating each run on shifted test images or at other input sizes would run
that backbone again for every run; here the features of each view (the images and the input
pipeline that turns them into tensors) are extracted once, kept in this process (float16, a few
hundred MiB per view of 2,000 images on a 7x7x512 grid) and only each run's head runs on them. A
view is named by a digest of the backbone's weights, the pipeline and the images, so a backbone
that did change (a full fine-tune) never reads another's features.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F

from ..data import BatchTransform, iterate

__all__ = ["clear_views", "frozen_scorer", "view_features"]

_VIEWS: OrderedDict[str, torch.Tensor] = OrderedDict()  # digest -> features, oldest first
_BUDGET = 3 * 2**30  # bytes of features kept in this process


def clear_views() -> None:
    """Forget every view's features held by this process."""
    _VIEWS.clear()


def _digest(model: Any, images: torch.Tensor, transform: BatchTransform) -> str:
    h = hashlib.blake2b(digest_size=16)
    skip = tuple(f"{r.name}." for r in getattr(model, "removed", ()))
    for name, t in sorted(model.backbone.state_dict().items()):
        if name.startswith(skip):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel() and t.dtype != torch.bfloat16:
            h.update(t.numpy().tobytes())
    h.update(repr((transform.size, transform.in_chans, transform.scale.flatten().tolist(),
                   transform.shift.flatten().tolist(), model.features.source)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.inference_mode()
def view_features(model: Any, images: torch.Tensor, transform: BatchTransform,
                  batch_size: int) -> torch.Tensor:
    """The features ``model``'s head receives for ``images`` (uint8) through ``transform``, on
    the CPU in float16: extracted on the first call, then read from this process's memory."""
    key = _digest(model, images, transform)
    if key in _VIEWS:
        _VIEWS.move_to_end(key)
        return _VIEWS[key]
    was_training = model.training
    model.eval()
    parts = [model.forward_features(transform(images[sl], train=False)).to("cpu", torch.float16)
             for sl in iterate(len(images), batch_size)]
    model.train(was_training)
    feats = torch.cat(parts)
    _VIEWS[key] = feats
    while sum(v.numel() * v.element_size() for v in _VIEWS.values()) > _BUDGET and len(_VIEWS) > 1:
        _VIEWS.popitem(last=False)
    return feats


def frozen_scorer(model: Any, transform: BatchTransform, batch_size: int) -> Any:
    """A scorer ``(images, labels, view) -> (loss, accuracy)`` that runs only ``model``'s head
    on the view's features (:func:`view_features`). The head refuses a grid it was not built
    for (Flatten) with the ValueError it raises on the full model."""
    @torch.inference_mode()
    def score(images: torch.Tensor, labels: torch.Tensor, view: str = "") -> tuple[float, float]:
        feats = view_features(model, images, transform, batch_size)
        was_training = model.head.training
        model.head.eval()
        loss = correct = 0.0
        for sl in iterate(len(labels), batch_size):
            logits = model.head(feats[sl].to(transform.device, torch.float32)).float()
            yb = labels[sl].to(logits.device)
            loss += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += float((logits.argmax(1) == yb).sum())
        model.head.train(was_training)
        return loss / max(1, len(labels)), correct / max(1, len(labels))
    return score
