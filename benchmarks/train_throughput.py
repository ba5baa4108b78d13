#!/usr/bin/env python
"""Training throughput: the harness's step against a bare PyTorch loop and a DataLoader + PIL loop.

    python benchmarks/train_throughput.py --models resnet18 mobilenetv3_small_100 --img-size 64

Same model (same initial weights), batch and input size in one process, three ways:
  bare      model + AdamW on float batches already resized and normalised in memory (the floor
            of what any pipeline can cost), in NCHW and in channels-last (CL) memory format;
  harness   analysis.training.TrainStep over uint8 data in memory: per-batch resize, random crop,
            flip and normalisation on the device, lr schedule, running loss and NaN check, as in
            analysis.training;
  typical   torchvision DataLoader over PIL images with Resize / RandomCrop / RandomHorizontalFlip /
            ToTensor / Normalize transforms (``--workers`` processes).
Rounds are interleaved (bare, harness, typical, bare, ...) so that other load on the machine hits
all three alike; the median over rounds is reported. Figures go to docs/benchmarks/.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.data import BatchTransform, EpochSampler  # noqa: E402
from analysis.machine import describe_machine  # noqa: E402
from analysis.training import RunningLoss, TrainStep, lr_factor  # noqa: E402
from surgery.options import parse_options  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet18", "mobilenetv3_small_100"])
    p.add_argument("--img-size", type=int, default=64, help="training input size (px)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images", type=int, default=2048, help="images held in memory")
    p.add_argument("--steps", type=int, default=8, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (typical pipeline)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: elapsed time; cpu: this process's CPU time (robust to other load "
                        "on a shared machine; use with --threads 1, and the typical pipeline "
                        "then loads in-process, --workers 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="harness in channels-last memory format (its default)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--timm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="timm.create_model option, e.g. output_stride=8 (repeatable)")
    p.add_argument("--data-dir", default=None, help="Fashion-MNIST location (else generated)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "train_throughput.md")
    return p


def _data(n: int, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    from analysis.data import load_dataset

    try:
        d = load_dataset("fashion-mnist", data_dir=data_dir, train_size=n, val_size=0)
        return d.train_x, d.train_y, "fashion-mnist (28x28 gray)"
    except FileNotFoundError:
        d = load_dataset("synthetic", val_size=0, n_train=n, image_size=28, channels=1)
        return d.train_x, d.train_y, "synthetic (28x28 gray)"


def _model(name: str, classes: int, size: int, device: torch.device,
           timm_options: dict | None = None) -> torch.nn.Module:
    import surgery

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = surgery.swap_head(name, head="gap", num_classes=classes, input_size=size, in_chans=1,
                              **(timm_options or {}))
    return m.to(device).train()


def _timed(step: Callable[[], None], warmup: int, steps: int, batch: int,
           device: torch.device, clock: Callable[[], float] = time.perf_counter) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = clock()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (clock() - t)


def _bare(model, x, y, args, device, channels_last: bool = False) -> Callable[[], None]:
    if channels_last:
        model.to(memory_format=torch.channels_last)
    t = BatchTransform(args.img_size, 1, [0.286], [0.353], device=device,
                       channels_last=channels_last)
    xs = [t(x[i:i + args.batch_size]) for i in range(0, len(x) - args.batch_size + 1, args.batch_size)]
    ys = [y[i:i + args.batch_size].to(device) for i in range(0, len(x) - args.batch_size + 1, args.batch_size)]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = iter(range(10**9))

    def step() -> None:
        i = next(it) % len(xs)
        loss = F.cross_entropy(model(xs[i]), ys[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # every loop reads its loss at some point; on CUDA this is the sync
    return step


def _harness(model, x, y, args, device) -> Callable[[], None]:
    from types import SimpleNamespace

    from analysis.training import build_optimizer

    cfg = SimpleNamespace(regime="full", backbone_lr_scale=1.0, weight_decay=0.05,
                          optimizer="adamw", lr=1e-3, momentum=0.9)
    opt = build_optimizer(model, cfg)  # type: ignore[arg-type]
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    t = BatchTransform(args.img_size, 1, [0.286], [0.353], device=device,
                       channels_last=args.channels_last)
    step_fn = TrainStep(model, opt, t)
    sampler = EpochSampler(len(y), args.batch_size, seed=0)
    x, y = x.to(device), y.to(device)
    aug = torch.Generator().manual_seed(0)
    state = {"epoch": 0, "it": iter(()), "g": 0}
    loss_sum = RunningLoss(device)

    def step() -> None:
        idx = next(state["it"], None)
        if idx is None:
            state["epoch"] += 1
            state["it"] = sampler.batches(state["epoch"])
            idx = next(state["it"])
        f = lr_factor(state["g"], 10**6, 10)
        for g in opt.param_groups:
            g["lr"] = 1e-3 * g["lr_scale"] * f
        idx = idx.to(device)
        loss = step_fn(x[idx], y[idx], aug)
        loss_sum.add(loss, len(idx))
        if loss_sum.free_to_read and not math.isfinite(loss_sum.total):
            raise RuntimeError("non-finite loss")
        state["g"] += 1
    return step


class _PILSet(torch.utils.data.Dataset):
    """What a typical script has: PIL images and a torchvision transform per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, size: int):
        from PIL import Image
        from torchvision import transforms as T

        self.images = [Image.fromarray(im[0].numpy(), mode="L") for im in x]
        self.y = y.tolist()
        self.tf = T.Compose([T.Resize(size), T.RandomCrop(size, padding=size // 8),
                             T.RandomHorizontalFlip(), T.ToTensor(),
                             T.Normalize([0.286], [0.353])])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.tf(self.images[i]), self.y[i]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def _typical(model, x, y, args, device) -> Callable[[], None]:
    loader = torch.utils.data.DataLoader(
        _PILSet(x, y, args.img_size), batch_size=args.batch_size, shuffle=True, drop_last=True,
        num_workers=args.workers, persistent_workers=args.workers > 0,
        pin_memory=device.type == "cuda", worker_init_fn=_worker_init)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    state = {"it": iter(loader)}

    def step() -> None:
        batch = next(state["it"], None)
        if batch is None:
            state["it"] = iter(loader)
            batch = next(state["it"])
        xb, yb = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()
    return step


def _bare_cl(model, x, y, args, device) -> Callable[[], None]:
    return _bare(model, x, y, args, device, channels_last=True)


PIPELINES = {"bare": _bare, "bare_cl": _bare_cl, "harness": _harness, "typical": _typical}


def measure(name: str, x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace,
            device: torch.device) -> dict:
    """img/s of each pipeline for one model: median over interleaved rounds."""
    classes = int(y.max()) + 1
    steps = {k: fn(_model(name, classes, args.img_size, device,
                         parse_options(args.timm_option, "--timm-option")), x, y, args, device)
             for k, fn in PIPELINES.items()}
    rates: dict[str, list[float]] = {k: [] for k in PIPELINES}
    for _ in range(args.rounds):
        for k, step in steps.items():
            rates[k].append(_timed(step, args.warmup, args.steps, args.batch_size, device,
                                   time.process_time if args.clock == "cpu" else time.perf_counter))
    med = {k: statistics.median(v) for k, v in rates.items()}
    same = med["bare_cl"] if args.channels_last else med["bare"]  # same memory format
    return {"model": name, "img_size": args.img_size, "batch": args.batch_size,
            **{f"{k}_img_per_s": round(v, 1) for k, v in med.items()},
            "harness_vs_bare": round(med["harness"] / same, 3),
            "harness_vs_typical": round(med["harness"] / med["typical"], 2),
            "rounds": {k: [round(r, 1) for r in v] for k, v in rates.items()}}


def _machine(device: torch.device) -> str:
    return describe_machine(with_load=True) + " at the end (other jobs may share the machine)"


def _markdown(rows: list[dict], command: str, machine: str, data: str, args) -> str:
    from tabulate import tabulate

    table = tabulate(
        [[r["model"], r["img_size"], r["batch"], r["bare_img_per_s"], r["bare_cl_img_per_s"],
          r["harness_img_per_s"], r["typical_img_per_s"], f"{r['harness_vs_bare']:.3f}x",
          f"{r['harness_vs_typical']:.2f}x"] for r in rows],
        headers=["model", "px", "batch", "bare img/s", "bare CL img/s", "harness img/s",
                 "typical img/s", "harness / bare (same format)", "harness / typical"],
        tablefmt="github")
    return (f"# Training throughput: harness vs bare loop vs DataLoader + PIL\n\n"
            f"Command: `{command}`\n\nMachine: {machine}\n\nData: {data}, {args.images} images in "
            f"memory; {args.rounds} interleaved rounds of {args.steps} timed steps after "
            f"{args.warmup} warm-up steps; median img/s (training images per second, forward + "
            f"backward + AdamW step) by {args.clock} clock"
            f"{' (CPU seconds of this process: other load on the machine does not count)' if args.clock == 'cpu' else ''}"
            f". Typical pipeline: {args.workers} DataLoader workers.\n\n"
            f"{table}\n\nThe harness runs channels-last (its default); its ratio is taken against "
            "the bare loop in the same memory format. Per-round figures are in "
            f"`{args.out.with_suffix('.json').name}`. The machine is shared, "
            "so single rounds vary; the interleaving spreads that noise over all three.\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        args.workers = 0  # worker processes' CPU time would not be counted
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    x, y, data = _data(args.images, args.data_dir)
    rows = []
    from tqdm import tqdm

    for name in tqdm(args.models, desc="models"):
        rows.append(measure(name, x, y, args, device))
    command = "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None
                                                                   else sys.argv[1:])
    machine = _machine(device)
    md = _markdown(rows, command.strip(), machine, data, args)
    print(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"command": command.strip(), "machine": machine, "data": data, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
