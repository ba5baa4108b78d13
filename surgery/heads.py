"""Head registry: one short name per kind of classifier, one factory per name, its options.

A head is a pooling (surgery.pooling) over the backbone's feature positions, an optional MLP
(``hidden``, ``dropout``), then the output Linear; ``nin`` is the one head with its own class,
since its pooling comes last, and ``original`` keeps timm's own head as the baseline. Each kind
declares its options as :class:`surgery.options.Option`, which surgery.spec parses specs such
as ``gem:p=3:learn_p=0`` against. The heads table is in docs/heads.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .layout import FeatureInfo
from .options import Option
from .pooling import (
    POOLINGS,
    AttentionPool,
    ClassTokenPool,
    FeaturePool,
    GeMPool,
    GridMismatchError,
    PyramidPool,
)
from .ranges import Range
from .registry import HEADS, HeadBuilder, HeadKind, add_head_kind

__all__ = [
    "HEADS", "HeadKind", "add_head_kind", "register_head", "build_head", "check_head_args",
    "PoolHead", "NinHead", "as_hidden",
    "FeaturePool", "GridMismatchError", "POOLINGS", "MLP_OPTIONS",
]

MLP_OPTIONS = (
    Option("hidden", "ints", (), "widths of Linear-ReLU-Dropout layers before the output layer",
           range=Range(1), short="h"),
    Option("dropout", "float", 0.0, "dropout before the output layer (and after each hidden)",
           range=Range(0.0, 1.0, high_open=True), short="d"),
)


def _mlp(in_features: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        in_features = width
    if not hidden and dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), in_features


class PoolHead(nn.Module):
    """pooling -> [Linear-ReLU-Dropout]* -> Linear: every head but ``nin`` and ``original``.

    ``pool`` is a pooling name of :data:`POOLINGS` or a pooling module with ``out_features``.
    """

    def __init__(self, pool: str | nn.Module, info: FeatureInfo, num_classes: int,
                 hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.pool = FeaturePool(pool, info) if isinstance(pool, str) else pool
        width: int = getattr(self.pool, "out_features")  # noqa: B009
        self.pre_logits, width = _mlp(width, hidden, dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pre_logits(self.pool(x)))


class NinHead(nn.Module):
    """Network in Network: 1x1 convolutions to one map per class, then global average.

    ``hidden`` adds 1x1 conv-ReLU-Dropout layers first (NiN's mlpconv). Because pooling comes
    last, :meth:`class_maps` gives class activation maps for free.
    """

    def __init__(self, info: FeatureInfo, num_classes: int,
                 hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.info = info
        conv = info.layout == "NCHW"

        def pointwise(cin: int, cout: int) -> nn.Module:
            return nn.Conv2d(cin, cout, 1) if conv else nn.Linear(cin, cout)

        layers: list[nn.Module] = []
        width = info.channels
        for h in hidden:
            layers += [pointwise(width, h), nn.ReLU(inplace=True),
                       nn.Dropout2d(dropout) if conv else nn.Dropout(dropout)]
            width = h
        if not hidden and dropout > 0:
            layers.append(nn.Dropout2d(dropout) if conv else nn.Dropout(dropout))
        self.pre_logits = nn.Sequential(*layers)
        self.fc = pointwise(width, num_classes)

    def class_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Per-position class scores, (B, K, H, W) for maps or (B, L, K) for tokens / NCL."""
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if self.info.layout == "NCL":
            x = x.transpose(1, 2)
        if self.info.layout == "NLC":
            x = x[:, self.info.num_prefix_tokens:]
        scores = self.fc(self.pre_logits(x))
        return scores.permute(0, 3, 1, 2) if self.info.layout == "NHWC" else scores

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.class_maps(x)
        return maps.mean((2, 3)) if maps.dim() == 4 else maps.mean(1)


def register_head(name: str, description: str, any_input_size: bool = True,
                  options: Sequence[Option] = (), needs_class_token: bool = False
                  ) -> Callable[[HeadBuilder], HeadBuilder]:
    """Decorator adding a head factory ``(features, num_classes, hidden, dropout, **options)``.

    ``options`` are the kind's own; ``hidden`` and ``dropout`` are added to every kind.
    """

    def add(fn: HeadBuilder) -> HeadBuilder:
        add_head_kind(HeadKind(name, description, fn, any_input_size, (*options, *MLP_OPTIONS),
                               needs_class_token))
        return fn

    return add


def _pool_head(pool: str) -> HeadBuilder:
    def build(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float):
        return PoolHead(pool, info, num_classes, hidden, dropout)
    return build


register_head("gap", "global average pooling, then Linear")(_pool_head("avg"))
register_head("gmp", "global max pooling, then Linear")(_pool_head("max"))
register_head("gapmp", "average and max pooling concatenated (2C features), then Linear")(
    _pool_head("avgmax"))
register_head("flatten", "Flatten + Dense over the whole feature grid (fixed input size)",
              any_input_size=False)(_pool_head("flatten"))
register_head("nin", "1x1 convolution to the classes, then global average (Network in Network)")(
    lambda info, k, hidden, dropout: NinHead(info, k, hidden, dropout))


@register_head("gem", "generalized mean pooling (mean(clamp(x, eps)^p))^(1/p), learnable p",
               options=(Option("p", "float", 3.0, "initial exponent: 1 is the mean, large is "
                               "near the maximum", range=Range(1.0)),
                        Option("learn_p", "bool", True, "learn p with the head (0: frozen)"),
                        Option("eps", "float", 1e-6, "features below eps count as eps",
                               range=Range(0.0, low_open=True))))
def _gem(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float,
         p: float = 3.0, learn_p: bool = True, eps: float = 1e-6) -> nn.Module:
    return PoolHead(GeMPool(info, p, learn_p, eps), info, num_classes, hidden, dropout)


@register_head("attn", "attention pooling: a learned query attends over all positions",
               options=(Option("num_heads", "int", None, "attention heads (default: the "
                               "largest divisor of the channels <= channels // 64)", range=Range(1),
                               short="heads"),))
def _attn(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float,
          num_heads: int | None = None) -> nn.Module:
    return PoolHead(AttentionPool(info, num_heads), info, num_classes, hidden, dropout)


@register_head("token", "the class token (after the final norm), as a ViT's own head",
               needs_class_token=True)
def _token(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float,
           norm: nn.Module | None = None) -> nn.Module:
    return PoolHead(ClassTokenPool(info, norm), info, num_classes, hidden, dropout)


@register_head("spp", "spatial pyramid pooling: n x n bins per level, concatenated",
               options=(Option("levels", "ints", (1, 2, 4), "bins per side at each level",
                               range=Range(1)),
                        Option("pool", "choice", "max", "pooling in each bin",
                               choices=("max", "avg"), short="")))
def _spp(info: FeatureInfo, num_classes: int, hidden: Sequence[int], dropout: float,
         levels: Sequence[int] = (1, 2, 4), pool: str = "max") -> nn.Module:
    return PoolHead(PyramidPool(info, levels, pool), info, num_classes, hidden, dropout)


add_head_kind(HeadKind("original", "timm's own head, reset to num_classes (baseline)", None))


def as_hidden(hidden: int | Sequence[int] | None) -> tuple[int, ...]:
    """Hidden widths as a tuple: ``512`` is one layer ``(512,)``, None is none ``()``."""
    if hidden is None:
        return ()
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return (hidden,)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a width (512) or a sequence of widths ((512, 256)), "
                         f"got {hidden!r}")
    return tuple(hidden)


def check_head_args(head: str, num_classes: int, hidden: int | Sequence[int], dropout: float,
                    options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a head kind and its options; returns the kind options, typed.

    Messages say what to pass instead; the option values are checked against the kind's
    declarations (surgery.options.Option). ``hidden=512`` is one layer.
    """
    hidden = as_hidden(hidden)
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(f"hidden sizes must be positive integers, got {tuple(hidden)!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    kind = HEADS[head]
    if head == "original" and (hidden or dropout or options):
        raise ValueError("the original head is timm's own: it takes no options; hidden and "
                         "dropout apply to the other heads (" + ", ".join(
                             h for h in HEADS if h != "original") + ")")
    typed: dict[str, Any] = {}
    for key, value in (options or {}).items():
        option = kind.option(key)
        if option is None or key in ("hidden", "dropout"):
            own = [o.name for o in kind.options if o.name not in ("hidden", "dropout")]
            raise ValueError(f"head {head!r} has no option {key!r}; it takes "
                             f"{', '.join(own) or 'none of its own'} (and hidden, dropout)")
        typed[key] = value if value is None and option.default is None \
            else option.coerce(value, f"{head}:{key}={value}")
    return typed


def build_head(head: str, info: FeatureInfo, num_classes: int,
               hidden: int | Sequence[int] = (), dropout: float = 0.0, **options: Any) -> nn.Module:
    """A new head of kind ``head`` for features described by ``info``.

    ``options`` are the kind's own (``p=3`` for gem, ``levels=(1, 2, 4)`` for spp, ...), as
    declared in ``HEADS[head].options``; the token head also takes ``norm``, the model's
    post-pooling norm (swap_head passes it). ``hidden=512`` is one layer.
    """
    hidden = as_hidden(hidden)
    norm = options.pop("norm", None)
    typed = check_head_args(head, num_classes, hidden, dropout, options)
    kind = HEADS[head]
    if kind.build is None:
        raise ValueError(f"head {head!r} is built from the backbone itself: use swap_head()")
    if norm is not None:
        if not kind.needs_class_token:
            raise ValueError(f"norm= applies to the token head, not {head!r}")
        typed["norm"] = norm
    return kind.build(info, num_classes, hidden, float(dropout), **typed)
