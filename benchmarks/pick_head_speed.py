#!/usr/bin/env python
"""pick_head's one pass against one learning rate and against one run per head, side by side.

    python benchmarks/pick_head_speed.py [--sizes 64 224] [--train-size 3000] [--seeds 0 1 2]
        [--study] [--work DIR]

For each input size, on the same data (Fashion-MNIST, ``--train-size`` training images per
seed, 3 seeds, every default head of resnet18, backbone weights from one file: timm's random
initialisation, seed 0, saved once), each variant runs as its own process (its imports, data
loading and feature extraction included in its wall time):

  (a) tools/pick_head.py with the default learning-rate grid (one pass, successive halving);
  (b) the same with one learning rate (--lrs 1e-3);
  (c) the feature extraction alone (the caches (a) and (b) build, nothing trained);
  (d) the same heads at one learning rate through one run per head and seed
      (--lrs 1e-3 --no-one-pass: how pick_head trained before the one pass);
  (e) (a) with earlier halving (--prune-at 0.125 0.25 0.5): what it saves, and whether it
      changes any head's chosen learning rate or the recommendation.

Targets: (a) <= 2 x (b); (a) <= (d); the plain heads' (gap, gmp, gapmp, nin, gem, flatten)
training in (a) <= 0.5 x (c) at 224 px. ``--study`` adds the cached linear-probe study against
the same study with --feature-cache off (tools/compare_heads.py resnet10t, gap gmp flatten,
seeds 0 1, 1,024 images, 3 epochs, 64 px), with the step floor (the default) and without
(--min-steps 0, the grid as it ran before the floor). Wall time, CPU time (user + system of
the process and its children) and the machine's load average go to
docs/benchmarks/pick_head_speed.md and .json. Each finished variant is kept in
``--work``/results.json: a benchmark stopped part-way and started again with the same
``--work`` reruns only what it had not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.runtime import run_command  # noqa: E402

PLAIN = ("gap", "gmp", "gapmp", "nin", "gem", "flatten")
STUDY = ["resnet10t", "--heads", "gap", "gmp", "flatten", "--seeds", "0", "1",
         "--train-sizes", "1024", "--epochs", "3", "--regime", "linear-probe",
         "--dataset", "fashion-mnist", "--img-size", "64", "--jobs", "0", "--no-progress"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--train-size", type=int, default=3000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--halving-sizes", type=int, nargs="*", default=None, metavar="PX",
                   help="the sizes at which (e) runs (default: every size)")
    p.add_argument("--study", action="store_true",
                   help="also time the cached study against --feature-cache off")
    p.add_argument("--work", type=Path, default=None, help="outputs (default: a temp dir)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "pick_head_speed.md")
    p.add_argument("--extract-only", nargs=argparse.REMAINDER, default=None,
                   help=argparse.SUPPRESS)  # (c): pick_head's options; builds the caches only
    return p


def _kept(work: Path, name: str, measure: Any) -> dict[str, Any]:
    """``measure()``'s result for variant ``name``, kept in ``work/results.json``.

    A benchmark stopped part-way reruns only the variants it had not finished.
    """
    store = work / "results.json"
    done = json.loads(store.read_text()) if store.is_file() else {}
    if name not in done:
        done[name] = measure()
        store.write_text(json.dumps(done, indent=1) + "\n")
    return done[name]


def _timed(argv: list[str], log: Path) -> dict[str, Any]:
    """Run ``python argv`` to its end; its wall and CPU seconds (its output to ``log``)."""
    done = run_command([sys.executable, *argv], cwd=ROOT, log=log)
    if done.code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.code}; see {log}")
    return {"wall_s": done.wall_s, "cpu_s": done.cpu_s, "command": "python " + shlex.join(argv)}


def _extract_only(argv: list[str]) -> int:
    """(c): the feature caches pick_head would build for these options, nothing trained."""
    import warnings

    from analysis.studies import pool_for
    from analysis.training import TrainConfig, warm_feature_caches

    sys.path.insert(0, str(ROOT / "tools"))
    import pick_head

    args = pick_head.build_parser().parse_args(argv)
    from analysis.training import config_values

    base = {k: v for k, v in config_values(args).items() if k not in ("out", "progress")}
    pool, n_val = pool_for(args.train_size, base.get("val_size", 0.1))
    configs = [TrainConfig.from_dict({**base, "model": args.model, "seed": s, "head": "gap",
                                      "train_size": args.train_size, "pool_size": pool,
                                      "val_size": n_val, "progress": False})
               for s in args.seeds]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        infos = warm_feature_caches(configs, directory=Path(tempfile.mkdtemp()), progress=False)
    print(json.dumps([{"images": i["images"], "extract_s": i["extract_s"]} for i in infos]))
    return 0


def _pick(size: int, args: argparse.Namespace, checkpoint: Path, work: Path) -> dict[str, Any]:
    common = ["resnet18", "--checkpoint", str(checkpoint), "--dataset", "fashion-mnist",
              "--img-size", str(size), "--train-size", str(args.train_size),
              "--seeds", *map(str, args.seeds), "--no-progress", "--format", "json"]
    runs: dict[str, Any] = {}
    variants = [("a", []), ("b", ["--lrs", "1e-3"]), ("d", ["--lrs", "1e-3", "--no-one-pass"])]
    if args.halving_sizes is None or size in args.halving_sizes:
        variants.append(("e", ["--prune-at", "0.125", "0.25", "0.5"]))
    for key, extra in variants:
        runs[key] = _kept(work, f"{key}-{size}",
                          lambda key=key, extra=extra: _pick_variant(key, size, common + extra,
                                                                     work))
    runs["c"] = _kept(work, f"c-{size}", lambda: _timed(
        [__file__, "--extract-only", *common[:-2]], work / f"c-{size}.log"))
    return runs


def _pick_variant(key: str, size: int, argv: list[str], work: Path) -> dict[str, Any]:
    """One pick_head process, timed, with what it chose and what its sweep measured."""
    out = work / f"{key}-{size}"
    run = _timed(["tools/pick_head.py", *argv, "--out", str(out)], work / f"{key}-{size}.log")
    pick = json.loads((out / "pick.json").read_text())
    run["recommended"] = pick["recommended"]
    run["lr"] = {r["head"]: r["lr"] for r in pick["rows"]}
    sweeps = list((out / "sweeps").glob("*/sweep.json"))
    if sweeps:
        swept = json.loads(sweeps[0].read_text())
        run["train_s"] = swept["train_s"]
        run["plain_train_s"] = sum(v for k, v in swept["head_time_s"].items() if k in PLAIN)
        run["members"] = swept["members_trained"]
        run["status"] = swept["status"]
    return run


def _study(work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for floor, extra in (("floor", []), ("no floor", ["--min-steps", "0"])):
        for cache in ("auto", "off"):
            name = f"study-{cache}-{floor.replace(' ', '')}"
            out[f"{floor}, cache {cache}"] = _kept(work, name, lambda name=name, extra=extra,
                                                   cache=cache: _timed(
                ["tools/compare_heads.py", *STUDY, *extra, "--feature-cache", cache,
                 "--out", str(work / name)], work / f"{name}.log"))
    return out


def _report(record: dict[str, Any]) -> str:
    from analysis.reporting import format_table

    lines = ["# pick_head speed: one pass over a learning-rate grid", "",
             f"Command: `{record['command']}`", "",
             f"Machine: {record['machine']}; load average {record['load_before']} before and "
             f"{record['load_after']} after (1, 5, 15 min).", "",
             f"Data: Fashion-MNIST, {record['train_size']} training images per seed, seeds "
             f"{' '.join(map(str, record['seeds']))}, every default head of resnet18 (backbone "
             "weights: timm's random initialisation, seed 0, saved to a file). Each variant is "
             "its own process: imports, data, extraction and writing included.", ""]
    names = {"a": "(a) default grid, one pass", "b": "(b) one lr, one pass",
             "c": "(c) extraction alone", "d": "(d) one lr, one run per head",
             "e": "(e) default grid, halving at 1/8, 1/4, 1/2"}
    for size, runs in record["sizes"].items():
        rows = [{"variant": names[k], "wall s": r["wall_s"], "CPU s": r["cpu_s"],
                 "sweep train s": r.get("train_s"), "plain heads s": r.get("plain_train_s"),
                 "members": r.get("members"), "recommended": r.get("recommended")}
                for k, r in sorted(runs.items())]
        a, b, c, d = (runs[k]["wall_s"] for k in "abcd")
        lines += [f"## {size} px", "", format_table(rows, floatfmt=".1f"), "",
                  f"- (a) / (b) = {a / b:.2f} (target <= 2); (a) / (d) = {a / d:.2f} (target "
                  f"<= 1); plain heads' training in (a) / (c) = "
                  f"{runs['a']['plain_train_s'] / c:.2f} (target <= 0.5 at 224 px)"]
        if "e" in runs:
            moved = sorted(h for h, lr in runs["e"]["lr"].items()
                           if runs["a"]["lr"].get(h) != lr)
            lines.append(f"- (e) / (a) = {runs['e']['wall_s'] / a:.2f}; heads whose chosen "
                         f"learning rate differs between (a) and (e): {', '.join(moved) or 'none'}"
                         f"; recommended: (a) {runs['a']['recommended']}, (e) "
                         f"{runs['e']['recommended']}")
        lines.append("")
    if record.get("study"):
        rows = [{"study": k, "wall s": v["wall_s"], "CPU s": v["cpu_s"]}
                for k, v in record["study"].items()]
        st = record["study"]
        lines += ["## A cached linear-probe study against --feature-cache off", "",
                  f"`python tools/compare_heads.py {' '.join(STUDY)} [--min-steps 0] "
                  "--feature-cache auto|off`", "", format_table(rows, floatfmt=".1f"), "",
                  f"- with the step floor (the default): {st['floor, cache off']['wall_s'] / st['floor, cache auto']['wall_s']:.1f}x "
                  f"faster cached; without it (the grid as it ran before the floor): "
                  f"{st['no floor, cache off']['wall_s'] / st['no floor, cache auto']['wall_s']:.1f}x", ""]
    lines += ["Commands of each variant: `pick_head_speed.json`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.extract_only is not None:
        return _extract_only(args.extract_only)
    import torch

    from analysis.machine import describe_machine

    command = "python benchmarks/pick_head_speed.py " + shlex.join(
        sys.argv[1:] if argv is None else argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="pick_head_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "resnet18-random-seed0.pth"
    if not checkpoint.is_file():
        import timm

        torch.manual_seed(0)
        torch.save(timm.create_model("resnet18").state_dict(), checkpoint)
    record: dict[str, Any] = {"command": command, "machine": describe_machine(),
                              "train_size": args.train_size, "seeds": args.seeds,
                              "load_before": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
                              "sizes": {}}
    for size in args.sizes:
        record["sizes"][str(size)] = _pick(size, args, checkpoint, work)
        print(json.dumps(record["sizes"][str(size)], indent=1), flush=True)
    if args.study:
        record["study"] = _study(work)
    record["load_after"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    text = _report(record)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
