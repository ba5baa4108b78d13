"""What to export: a swapped model and what a deployment must know about its input.

Three sources, as the command line takes them: a timm name plus head options (like
``tools/swap_head.py``), a headswap model file (``surgery.save``), or a fine-tuning run directory
(its ``best.pt``, with class names and the normalisation from its ``config.json``). Each gives an
:class:`ExportSource`: the model in eval mode, its input size, channels, mean/std (timm's
pretrained config unless a run says otherwise; 0..1 pixel scale) and class names (runs only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

import surgery
from surgery import HeadSwapped

__all__ = ["ExportSource", "source_from_name", "source_from_path"]

# timm's defaults when a model's pretrained config names no normalisation (ImageNet)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ExportSource:
    """A model ready to export and the facts its ONNX metadata carries.

    ``head`` is the head kind (a key of ``surgery.HEADS``), ``head_spec`` the head with its
    options as users write them (``gem:p=2.5``; the kind alone when every option is at its
    default). ``input_size`` is (H, W): the size the model was built (Flatten) or trained for,
    and the example input the exporter traces. ``mean`` / ``std`` are per channel on the 0..1 pixel
    scale (input = (pixel / 255 - mean) / std). ``origin`` is ``name``, ``file`` or ``run``.
    """

    model: HeadSwapped
    name: str
    head: str
    input_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None
    head_spec: str = ""
    origin: str = "name"
    path: Path | None = None


def _timm_normalisation(model: HeadSwapped) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(model.backbone, "pretrained_cfg", None) or {}
    mean = tuple(float(v) for v in cfg.get("mean") or _IMAGENET_MEAN)
    std = tuple(float(v) for v in cfg.get("std") or _IMAGENET_STD)
    return mean, std


def _square(input_size: int | None, fallback: Sequence[int]) -> tuple[int, int]:
    if input_size is None:
        return int(fallback[0]), int(fallback[1])
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
        raise ValueError(f"input size must be an integer >= 8 (pixels), got {input_size!r}")
    return input_size, input_size


def _from_model(model: HeadSwapped, input_size: int | None, origin: str,
                path: Path | None = None) -> ExportSource:
    model.eval()
    mean, std = _timm_normalisation(model)
    recipe = model.recipe
    return ExportSource(model=model, name=str(recipe["backbone"]), head=str(recipe["head"]),
                        input_size=_square(input_size, recipe["input_size"]),
                        in_chans=int(recipe.get("in_chans", 3)), mean=mean, std=std,
                        head_spec=str(recipe.get("head_spec") or recipe["head"]),
                        origin=origin, path=path)


def source_from_name(name: str | nn.Module, head: str | surgery.HeadSpec, num_classes: int = 10,
                     hidden: Sequence[int] | None = None, dropout: float | None = None,
                     input_size: int | None = None, **load_kwargs: Any) -> ExportSource:
    """Build ``name`` (or take a timm model, which becomes the backbone) with a new ``head``, a
    head spec such as ``gap`` or ``gem:p=2.5`` (``surgery.swap_head``; ``hidden`` / ``dropout``
    here or in the spec, not both; ``load_kwargs`` go to ``surgery.load_backbone``:
    ``pretrained``, ``checkpoint``, ``in_chans``, timm options)."""
    model = surgery.swap_head(name, head=head, num_classes=num_classes,
                              hidden=None if hidden is None else tuple(hidden), dropout=dropout,
                              input_size=input_size, **load_kwargs)
    return _from_model(model, input_size, "name")


def _from_run(run_dir: Path, input_size: int | None) -> ExportSource:
    best, config = run_dir / "best.pt", run_dir / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a fine-tuning run directory (no "
                                "config.json); pass a run directory or a headswap model file")
    if not best.is_file():
        raise FileNotFoundError(f"no best.pt in {str(run_dir)!r}: the run has not finished an "
                                "epoch yet; resume it or pass its last.pt as --model")
    resolved = surgery.read_json(config).get("resolved") or {}
    source = _from_model(surgery.load(best), None, "run", run_dir)
    if resolved.get("img_size"):
        source.input_size = (int(resolved["img_size"]), int(resolved["img_size"]))
    source.input_size = _square(input_size, source.input_size)
    if resolved.get("mean") and resolved.get("std"):
        source.mean = tuple(float(v) for v in resolved["mean"])
        source.std = tuple(float(v) for v in resolved["std"])
    if resolved.get("classes"):
        source.class_names = [str(c) for c in resolved["classes"]]
    return source


def source_from_path(path: str | Path, input_size: int | None = None) -> ExportSource:
    """A headswap model file (``surgery.load``) or a fine-tuning run directory (its best.pt,
    class names and mean/std from its config.json). ``input_size`` overrides the size the
    model was built or trained for (a Flatten head refuses any other)."""
    path = Path(path)
    if path.is_dir():
        return _from_run(path, input_size)
    if not path.exists():
        raise FileNotFoundError(f"no model file or run directory at {str(path)!r}")
    return _from_model(surgery.load(path), input_size, "file", path)
