"""What a head comparison study is: its grid (models x heads x train sizes x seeds) and the
settings every run shares. The heads are surgery head specs (``gem:p=3``, ``flatten:hidden=256``),
parsed by the one parser (surgery.parse_head) and named by surgery.head_label.

:class:`StudySpec` is stored as ``study.json`` in the study directory; each :class:`Combo` of its
grid becomes one fine-tuning run (analysis.training) named by ``run_name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from surgery import HeadSpec, make_spec, parse_head

from ..training import TrainConfig, run_name
from .lr_grid import check_grid

__all__ = ["KEEP", "STUDY_FILE", "Combo", "StudySpec", "combinations", "parse_shard",
           "select_shard"]

STUDY_FILE = "study.json"
KEEP = ("best", "none", "all")  # checkpoints a finished run keeps


@dataclass
class StudySpec:
    """The grid (models x heads x train sizes x seeds) and the settings every run shares.

    Args:
        base: TrainConfig fields of every run (dataset, epochs, img_size, lr, ...).
        robust_sizes: input sizes (px) each trained model is tested at when ``robustness``
            (empty: around the training size), on ``robust_images`` test images (None: all).
        test_size: a stratified subset of the test split, the same for every run (None: all).
        shifts: pixel shifts each trained model is evaluated at, on ``shift_images`` test images.
        keep: checkpoints a finished run keeps (``best``: best.pt, ``none``, ``all``: both).
        head_lr: learning rates by head label where a head needs its own (a 120 M-parameter
            Flatten+Dense head diverges at the rate a GAP head needs).
        lrs, weight_decays: grids a frozen-backbone study searches per head (empty: ``base``'s).
        one_pass: train those runs together over the feature cache (analysis.studies.onepass),
            halving each head's settings to ``prune_keep`` after the fractions ``prune_at``.
    """

    models: tuple[str, ...]
    heads: tuple[HeadSpec, ...]
    seeds: tuple[int, ...] = (0,)
    train_sizes: tuple[int | None, ...] = (None,)
    base: dict[str, Any] = field(default_factory=dict)
    robust_sizes: tuple[int, ...] = ()
    robust_images: int | None = 2000
    test_size: int | None = None
    command: str = ""
    robustness: bool = True           # evaluate each trained model at other input sizes
    shifts: tuple[int, ...] = ()
    shift_images: int | None = 2000
    keep: str = "best"
    head_lr: dict[str, float] = field(default_factory=dict)
    lrs: tuple[float, ...] = ()
    weight_decays: tuple[float, ...] = ()
    one_pass: bool = True
    prune_at: tuple[float, ...] = (0.25, 0.5)
    prune_keep: float = 0.5

    def check(self) -> None:
        """Raise ValueError for an empty or ambiguous grid, or a setting train() rejects."""
        for name in ("models", "heads", "seeds", "train_sizes"):
            if not getattr(self, name):
                raise ValueError(f"a study needs at least one of {name}")
        for what, flag, values in (("head", "--heads", [h.label for h in self.heads]),
                                   ("model", "models", list(self.models)),
                                   ("seed", "--seeds", [str(s) for s in self.seeds]),
                                   ("train size", "--train-sizes",
                                    ["all" if n is None else str(n) for n in self.train_sizes])):
            dupes = [x for x in dict.fromkeys(values) if values.count(x) > 1]
            if dupes:  # a run counted twice would fake agreement between seeds
                raise ValueError(f"{what} {', '.join(dupes)} is listed twice in {flag}; each "
                                 "run of a study must differ, so give each value once")
        if any(s is not None and s < 1 for s in self.train_sizes):
            raise ValueError(f"train sizes must be >= 1, got {list(self.train_sizes)}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.robust_sizes):
            raise ValueError(f"--robust-sizes must be whole numbers of pixels >= 1, got "
                             f"{' '.join(map(str, self.robust_sizes))}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.shifts):
            raise ValueError(f"--shifts must be whole numbers of pixels >= 0, got "
                             f"{' '.join(map(str, self.shifts))}")
        if self.shift_images is not None and self.shift_images < 1:
            raise ValueError(f"--shift-images must be >= 1 (0: all), got {self.shift_images}")
        labels = [h.label for h in self.heads]
        unknown = [k for k in self.head_lr if k not in labels]
        if unknown:
            raise ValueError(f"--head-lr names {', '.join(unknown)}, which is not among the heads "
                             f"of --heads ({', '.join(labels)}); name a head by its spec or label")
        bad = {k: v for k, v in self.head_lr.items()
               if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0}
        if bad:
            raise ValueError(f"--head-lr learning rates must be > 0, got {bad}")
        self._check_grid()
        if self.keep not in KEEP:
            raise ValueError(f"--keep must be one of {', '.join(KEEP)}, got {self.keep!r}")
        if self.robust_images is not None and self.robust_images < 1:
            raise ValueError(f"--robust-images must be >= 1 (0: all), got {self.robust_images}")
        for model in self.models:  # names and settings, before any data is read
            for head in self.heads:
                Combo(model, head, self.train_sizes[0], self.seeds[0]).config(self, Path(".")).check()

    def _check_grid(self) -> None:
        """The learning-rate and weight-decay grids: searched in one pass over cached features."""
        for flag, values in (("--lrs", self.lrs), ("--weight-decays", self.weight_decays)):
            if values:
                check_grid(values, flag)
        grid = len(self.lrs) > 1 or len(self.weight_decays) > 1
        if grid and self.head_lr:
            raise ValueError("--head-lr fixes one head's learning rate and --lrs searches every "
                             "head's: give one of them")
        if grid and not (self.one_pass and self.base.get("regime") == "linear-probe"):
            raise ValueError("--lrs / --weight-decays search each head's setting in one pass over "
                             "a frozen backbone's cached features: they need --regime "
                             "linear-probe (and no --no-one-pass); otherwise give one --lr")
        if not 0 < self.prune_keep <= 1 or any(not 0 < f < 1 for f in self.prune_at):
            raise ValueError(f"--prune-keep must be in (0, 1] and --prune-at fractions in (0, 1), "
                             f"got {self.prune_keep} and {list(self.prune_at)}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base"].setdefault("resize", TrainConfig.resize)  # what its runs use, said explicitly
        d["heads"] = [h.label for h in self.heads]
        d["head_specs"] = [str(h) for h in self.heads]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudySpec:
        heads = tuple(_stored_head(h) for h in d["head_specs"])
        return cls(tuple(d["models"]), heads, tuple(d["seeds"]), tuple(d["train_sizes"]),
                   dict(d["base"]), tuple(d.get("robust_sizes") or ()), d.get("robust_images"),
                   d.get("test_size"), d.get("command", ""), bool(d.get("robustness", True)),
                   tuple(d.get("shifts") or ()), d.get("shift_images", 2000),
                   d.get("keep", "best"), dict(d.get("head_lr") or {}),
                   tuple(d.get("lrs") or ()), tuple(d.get("weight_decays") or ()),
                   bool(d.get("one_pass", False)), tuple(d.get("prune_at") or ()),
                   float(d.get("prune_keep", 0.5)))


def _stored_head(stored: str | dict[str, Any]) -> HeadSpec:
    """A head as study.json stores it: a spec string, or (older studies) kind, hidden, dropout."""
    if isinstance(stored, str):
        return parse_head(stored)
    return make_spec(stored["head"], hidden=tuple(stored["hidden"]),
                     dropout=float(stored["dropout"]))


@dataclass(frozen=True)
class Combo:
    """One run of the grid."""

    model: str
    head: HeadSpec
    train_size: int | None
    seed: int

    def config(self, spec: StudySpec, runs_dir: Path) -> TrainConfig:
        """The TrainConfig of this run, named by ``run_name``."""
        lr = spec.head_lr.get(self.head.label, spec.base.get("lr", TrainConfig.lr))
        if spec.lrs:  # the grid's first value until the sweep chooses
            lr = spec.lrs[0]
        cfg = TrainConfig.from_dict({**spec.base, "lr": lr, "model": self.model, "head": str(self.head),
                                     "hidden": (), "dropout": 0.0,
                                     "train_size": self.train_size, "seed": self.seed,
                                     "out": str(runs_dir), "progress": False,
                                     "test_size": spec.test_size,
                                     # one feature cache for the whole study
                                     "feature_cache_dir": (spec.base.get("feature_cache_dir")
                                                           or str(runs_dir.parent / "features"))})
        cfg.name = run_name(cfg)
        return cfg


def combinations(spec: StudySpec) -> list[Combo]:
    """Every run, in the fixed order model > train size > seed > head (heads of one seed are
    neighbours, so a partly finished study already holds complete paired comparisons)."""
    return [Combo(m, h, n, s) for m in spec.models for n in spec.train_sizes
            for s in spec.seeds for h in spec.heads]


def parse_shard(text: str) -> tuple[int, int]:
    """``'I/N'`` -> ``(I, N)``: shard I (0-based) of N."""
    i, sep, n = text.partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        shard = (-1, 0)
    if not sep or shard[1] < 1 or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"--shard expects I/N with 0 <= I < N (e.g. 0/2 and 1/2), got {text!r}")
    return shard


def select_shard(combos: Sequence[Combo], shard: tuple[int, int] | None) -> list[Combo]:
    """This shard's share: every n-th combination from the i-th (all of them for None)."""
    if shard is None:
        return list(combos)
    i, n = shard
    return list(combos[i::n])
