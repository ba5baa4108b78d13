#!/usr/bin/env python
"""Draw class activation maps (Zhou et al. 2016) of a trained run over test images, as one image.

    python tools/cam.py runs/resnet18-gap-fashion-mnist-n10000-s0 --images 16 --out cam.png

Works for gap heads without hidden layers and for nin heads (CAM needs global average pooling
right before a linear layer); other heads are refused with the reason. Each tile shows the map of
the predicted class (or of the true class with --target true), scaled to its own range, over the
image; the title gives the predicted class, its probability and the true class.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from _cli import CliParser, run

_TARGETS = ("pred", "true")


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run directory written by tools/finetune.py "
                                              "or tools/compare_heads.py (its runs/NAME)")
    p.add_argument("--images", type=int, default=16, help="test images to draw (default 16)")
    p.add_argument("--out", type=Path, default=Path("cam.png"),
                   help="image to write, in the format its suffix names (.png, .jpg, .pdf, .svg; "
                        "default cam.png)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint in the run (default best.pt)")
    p.add_argument("--target", default="pred", choices=_TARGETS,
                   help="whose map to draw: the predicted class or the true class")
    p.add_argument("--seed", type=int, default=0, help="which test images (stratified draw)")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the map (default 0.5)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda:1")
    return p


def main(argv: list[str] | None = None) -> int:
    import torch

    import surgery
    from analysis.data import BatchTransform, stratified_indices
    from analysis.machine import resolve_device
    from analysis.reporting import figure_format
    from analysis.saliency import cam_support, class_activation_maps, draw_cams, flat_map_warning
    from analysis.training import config_from_record, load_run_data
    from surgery import read_json

    args = build_parser().parse_args(argv)
    figure_format(args.out)  # the format the suffix names (cam.jpg: JPEG), checked first
    surgery.check_writable(args.out, "--out")
    if args.images < 1:
        raise ValueError(f"--images must be at least 1, got {args.images}")
    ckpt = args.run_dir / args.checkpoint
    if not (args.run_dir / "config.json").is_file() or not ckpt.is_file():
        raise FileNotFoundError(f"{str(args.run_dir)!r} is not a finished run directory (needs "
                                f"config.json and {args.checkpoint})")
    device = resolve_device(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = surgery.load(ckpt, map_location=device)
    reason = cam_support(model)
    if reason is not None:
        raise ValueError(f"{args.run_dir.name}: {reason}")
    meta = read_json(args.run_dir / "config.json")
    cfg, res = config_from_record(meta["config"]), meta["resolved"]
    data = load_run_data(cfg)
    n = min(args.images, len(data.test_y))
    idx = stratified_indices(data.test_y, n, args.seed)
    images, labels = data.test_x[idx], data.test_y[idx]
    transform = BatchTransform(int(res["img_size"]), int(res["in_chans"]), res["mean"], res["std"],
                               device=device, augment=False)
    result = class_activation_maps(model, transform(images))
    flat = flat_map_warning(result)
    if flat is not None:
        print(f"warning: {flat}", file=sys.stderr)
    probs = result.logits.float().softmax(1).cpu()
    pred = probs.argmax(1)
    target = pred if args.target == "pred" else labels
    maps = result.maps[torch.arange(n), target.to(result.maps.device)]
    names = data.classes
    titles = [f"{names[p]} {probs[i, p]:.2f}\n(true {names[t]})"
              for i, (p, t) in enumerate(zip(pred.tolist(), labels.tolist(), strict=True))]
    shown = torch.nn.functional.interpolate(images.float(), size=maps.shape[-2:], mode="bilinear",
                                            align_corners=False)
    draw_cams(shown, maps, titles, args.out, alpha=args.alpha)
    acc = (pred == labels).float().mean().item()
    print(f"wrote {args.out}: {n} images, {args.target} class maps, {acc:.0%} of them correct "
          f"({model.recipe['backbone']} / {model.recipe['head']}, feature grid "
          f"{'x'.join(map(str, result.grid_maps.shape[-2:]))})")
    return 0


if __name__ == "__main__":
    sys.exit(run(lambda: main()))
