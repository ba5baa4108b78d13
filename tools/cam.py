#!/usr/bin/env python
"""Draw where each head looks, for one or several trained runs on the same test images, as a PNG.

    python tools/cam.py runs/resnet18-gap-fashion-mnist-n10000-s0 --images 16 --out cam.png
    python tools/cam.py studies/NAME/runs/*-s0 --images 8 --method gradcam --out heads.png

--method cam: exact class activation maps (Zhou et al. 2016), for gap heads without hidden
layers and nin heads (global average pooling right before a linear layer); other heads are
refused with the reason. --method gradcam: Grad-CAM (captum's LayerGradCam) for every head;
token models are drawn on their patch grid. The default (auto) takes cam where it exists and
gradcam elsewhere. Several runs are drawn one row each, on the same images; they must share the
data and the input size. Each tile shows the map of the predicted class (or of the true class
with --target true), scaled to its own range, with the predicted class, its probability and the
true class.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path
from typing import Any

from _cli import CliParser, run

_TARGETS = ("pred", "true")
# what runs drawn side by side must share: the images they see
_SAME = ("dataset", "data_dir", "data_options", "train_size", "val_size", "seed")


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN",
                   help="run directories written by tools/finetune.py or tools/compare_heads.py "
                        "(its runs/NAME); several: one row each, on the same images")
    p.add_argument("--method", default="auto", choices=("auto", "cam", "gradcam", "gradcam-abs"),
                   help="cam (exact, gap and nin heads), gradcam (every head), gradcam-abs "
                        "(Grad-CAM's sum without its ReLU, as a magnitude: evidence for or "
                        "against, where gradcam's map is zero) or auto (cam where it exists, "
                        "else gradcam; the default)")
    p.add_argument("--images", type=int, default=16, help="test images to draw (default 16)")
    p.add_argument("--out", type=Path, default=Path("cam.png"),
                   help="image to write, in the format its suffix names (.png, .jpg, .pdf, .svg; "
                        "default cam.png)")
    p.add_argument("--run-file", default="best.pt", choices=("best.pt", "last.pt"),
                   help="which model file of each run to draw (default best.pt; --checkpoint is "
                        "a backbone weights file everywhere else)")
    p.add_argument("--target", default="pred", choices=_TARGETS,
                   help="whose map to draw: the predicted class or the true class")
    p.add_argument("--seed", type=int, default=0, help="which test images (stratified draw)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    return p


def _load_run(run_dir: Path, checkpoint: str, device: Any) -> tuple[Any, dict, dict]:
    """The trained model, its config and the resolved settings (size, channels, mean, std)."""
    import surgery
    from surgery import read_json

    ckpt = run_dir / checkpoint
    if not (run_dir / "config.json").is_file() or not ckpt.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a finished run directory (needs "
                                f"config.json and {checkpoint})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = surgery.load(ckpt, map_location=device)
    meta = read_json(run_dir / "config.json")
    return model, meta["config"], meta["resolved"]


def _check_same_inputs(runs: list[tuple[Path, Any, dict, dict]]) -> None:
    """Runs drawn side by side must see the same images at the same size."""
    from analysis.data import decodes_files

    first_dir, _, cfg0, res0 = runs[0]
    # image files are resized by policy; a run from before the option squashed them
    same = (*_SAME, "resize") if decodes_files(str(cfg0.get("dataset"))) else _SAME
    for run_dir, _, cfg, res in runs[1:]:
        cfg, cfg0 = ({"resize": "squash", **c} for c in (cfg, cfg0))
        for key in same:
            if cfg.get(key) != cfg0.get(key):
                raise ValueError(f"{run_dir.name} and {first_dir.name} were trained on different "
                                 f"data ({key} {cfg.get(key)!r} vs {cfg0.get(key)!r}); draw them "
                                 "in separate figures")
        for key in ("img_size", "in_chans"):
            if res.get(key) != res0.get(key):
                raise ValueError(f"{run_dir.name} and {first_dir.name} take different inputs "
                                 f"({key} {res.get(key)} vs {res0.get(key)}); draw them in "
                                 "separate figures")


def _row(run_dir: Path, model: Any, res: dict, images: Any, labels: Any, names: list[str],
         args: argparse.Namespace, device: Any) -> tuple[tuple[str, Any, list[str]], str]:
    """One figure row: the run's label, its maps and titles; and a line for the console."""
    from analysis.data import BatchTransform
    from analysis.saliency import ZERO_GRADCAM, flat_maps, head_maps

    transform = BatchTransform(int(res["img_size"]), int(res["in_chans"]), res["mean"],
                               res["std"], device=device, augment=False)
    x = transform(images)
    target = None if args.target == "pred" else labels.to(x.device)
    result = head_maps(model, x, args.method, target)
    if math.prod(model.features.grid) == 1:
        print(f"warning: {run_dir.name}: the feature grid is 1x1 at input {res['img_size']} px: "
              "each map is a single value, so its tiles are flat and show nothing about where "
              "the model looks; train at a larger --img-size (a grid of 2x2 or more)",
              file=sys.stderr)
    flat = int(flat_maps(result.maps).sum())
    if flat:
        why = ZERO_GRADCAM if result.method == "gradcam" else "the model's evidence is the same " \
            "at every position"
        print(f"warning: {run_dir.name}: {flat} of {len(x)} maps are constant ({result.method}) "
              f"and drawn as such, not as a colour: {why}", file=sys.stderr)
    probs = result.logits.float().softmax(1).cpu()
    pred = probs.argmax(1)
    titles = [f"{names[p]} {probs[i, p]:.2f}\n(true {names[t]})"
              for i, (p, t) in enumerate(zip(pred.tolist(), labels.tolist(), strict=True))]
    spec = model.recipe.get("head_spec", model.recipe["head"])
    label = f"{model.recipe['backbone']}\n{spec} ({result.method})"
    acc = (pred == labels).float().mean().item()
    line = (f"{run_dir.name}: {result.method} maps from the {result.where}, "
            f"{acc:.0%} of the images correct")
    return (label, result.maps, titles), line


def main(argv: list[str] | None = None) -> int:
    import torch

    from analysis.data import stratified_indices
    from analysis.machine import resolve_device
    from analysis.reporting import figure_format
    from analysis.saliency import choose_method, draw_runs
    from analysis.training import config_from_record, load_run_data
    from surgery import check_writable

    args = build_parser().parse_args(argv)
    figure_format(args.out)  # the format the suffix names (cam.jpg: JPEG), checked first
    check_writable(args.out, "--out")
    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    device = resolve_device(args.device)
    runs = [(d, *_load_run(d, args.run_file, device)) for d in args.run_dirs]
    _check_same_inputs(runs)
    for run_dir, model, _, _ in runs:  # every refusal before any work
        try:
            choose_method(model, args.method)
        except ValueError as err:
            raise ValueError(f"{run_dir.name}: {err}") from None
    data = load_run_data(config_from_record(runs[0][2]))
    n = min(args.images, len(data.test_y))
    idx = stratified_indices(data.test_y, n, args.seed)
    images, labels = data.test_x[idx], data.test_y[idx]
    rows = [_row(d, model, res, images, labels, data.classes, args, device)
            for d, model, _, res in runs]
    size = rows[0][0][1].shape[-2:]
    shown = torch.nn.functional.interpolate(images.float(), size=size, mode="bilinear",
                                            align_corners=False)
    draw_runs(shown, [r for r, _ in rows], args.out, alpha=args.alpha)
    print(f"wrote {args.out}: {n} images x {len(rows)} run(s), {args.target} class maps")
    for _, line in rows:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
