"""Layout probe: what does a backbone's ``forward_features`` return, and which weights does it use?

timm backbones end in one of five shapes: NCHW maps (ResNet, EfficientNet, ...), NHWC maps
(Swin and other ``output_fmt='NHWC'`` models), token sequences (ViT, DeiT, EVA, ...: prefix tokens
such as class, distillation and register tokens followed by patch tokens), or a list / tuple of
maps (the last one is used). The probe runs ``forward_features`` once on the meta device (no
memory for activations, no compute) and falls back to one tiny real input when an operator has no
meta kernel. While it runs it records which parameters the features depend on: everything else is
the classifier, which a head swap removes.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from .errors import one_line

__all__ = [
    "FeatureInfo", "Probe", "probe_features", "extract_features", "raw_features", "select_features",
    "default_input_size", "has_class_token", "meta_twin", "model_in_chans",
]

Layout = Literal["NCHW", "NHWC", "NLC", "NCL"]

# parameter names that hold prefix tokens, for token models without ``num_prefix_tokens``
_PREFIX_TOKEN_PARAMS = ("cls_token", "dist_token", "reg_token", "register_tokens")


@dataclass(frozen=True)
class FeatureInfo:
    """What a backbone hands to its head, at one input size.

    ``grid`` is the spatial grid of the patch tokens or maps, ``(H, W)``; for token models whose
    tokens form no rectangle it is ``(N,)``. ``shape`` is the full feature shape at batch 1.
    ``class_token``: the first prefix token is the model's class token (timm's ``cls_token``,
    which every timm family puts first); register and distillation tokens are not.
    """

    channels: int
    layout: Layout
    grid: tuple[int, ...]
    num_prefix_tokens: int
    input_size: tuple[int, int]
    shape: tuple[int, ...]
    from_sequence: bool = False  # forward_features returned a list/tuple; the last item is used
    source: str = "forward_features"  # or "intermediates": see extract_features()
    class_token: bool = False

    @property
    def num_positions(self) -> int:
        """Number of spatial positions (patch tokens or map cells) a pooling head reduces."""
        return math.prod(self.grid)

    def to_dict(self) -> dict[str, Any]:
        """The description reports and JSON show: layout, channels, grid, prefix tokens, input."""
        return {"layout": self.layout, "channels": self.channels, "grid": list(self.grid),
                "num_prefix_tokens": self.num_prefix_tokens, "input_size": list(self.input_size)}


@dataclass
class Probe:
    """Result of one probe: the feature description and the names of the parameters it used."""

    features: FeatureInfo
    used_params: set[str]


def has_class_token(model: nn.Module, channels: int | None = None) -> bool:
    """Whether the model holds a class token: timm's ``cls_token`` on the model or on its token
    embedding (naflexvit keeps it in ``embeds``), or a per-stage one (``cls_token4`` in CoaT,
    ``cls_token_1`` in CrossViT) as wide as the features (``channels``). Register tokens
    (``reg_token``) and distillation tokens do not count."""
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.count(".") > 1 or p.dim() != 3 or not leaf.startswith("cls_token"):
            continue
        if leaf == "cls_token":
            return True
        numbered = leaf[len("cls_token"):].lstrip("_").isdigit()
        if numbered and (channels is None or p.shape[-1] == channels):
            return True
    return False


def _as_pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int) and value > 0:
        return value, value
    if isinstance(value, (tuple, list)) and len(value) >= 2 and all(isinstance(v, int) for v in value):
        return int(value[-2]), int(value[-1])
    return None


def default_input_size(model: nn.Module) -> tuple[int, int]:
    """The (H, W) the model was built for: the ``img_size`` it was created with (load_backbone's
    record, or the patch embedding's), else timm's pretrained config, else 224x224."""
    origin = getattr(model, "headswap_origin", None) or {}
    built = _as_pair(origin.get("timm_kwargs", {}).get("img_size"))
    if built is None:
        built = _as_pair(getattr(getattr(model, "patch_embed", None), "img_size", None))
    if built is not None:
        return built
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return int(size[-2]), int(size[-1])


def model_in_chans(model: nn.Module) -> int:
    """Input channels of a timm model (its first conv), 3 when it cannot be told."""
    for attr in ("in_chans", "in_channels"):
        value = getattr(model, attr, None)
        if isinstance(value, int):
            return value
    cfg = getattr(model, "pretrained_cfg", None) or {}
    first = cfg.get("first_conv")
    names = [first] if isinstance(first, str) else list(first or [])
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue
        weight = getattr(module, "weight", None)
        if weight is not None and weight.dim() == 4:
            return int(weight.shape[1] * getattr(module, "groups", 1))
    return 3


def raw_features(model: nn.Module, x: torch.Tensor, source: str = "forward_features") -> Any:
    """What the backbone returns for ``x``: ``forward_features`` (the usual source) or, for
    models whose ``forward_features`` keeps only class tokens (PiT), timm's
    ``forward_intermediates`` for the last stage."""
    if source == "intermediates":
        fn: Callable[..., Any] = getattr(model, "forward_intermediates")  # noqa: B009
        return fn(x, indices=1, intermediates_only=True)
    features: Callable[..., Any] = getattr(model, "forward_features")  # noqa: B009
    return features(x)


def extract_features(model: nn.Module, x: torch.Tensor, source: str = "forward_features"
                     ) -> torch.Tensor:
    """The tensor a head consumes: :func:`raw_features`, the last item if it is a list."""
    return select_features(raw_features(model, x, source))


def select_features(out: Any) -> torch.Tensor:
    """The tensor a head consumes: the output itself, or the last item of a list / tuple."""
    while isinstance(out, (list, tuple)):
        if not out:
            raise ValueError("forward_features returned an empty list; nothing to attach a head to")
        out = out[-1]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"forward_features returned {type(out).__name__}, expected a tensor")
    return out


class _ParamUseRecorder(TorchFunctionMode):
    """Records which of the given tensors (by id) are passed to any torch function."""

    def __init__(self, watched: dict[int, str]):
        super().__init__()
        self.watched = watched
        self.used: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        for leaf in tree_leaves((args, kwargs)):
            name = self.watched.get(id(leaf))
            if name is not None:
                self.used.add(name)
        return func(*args, **kwargs)


def meta_twin(model: nn.Module) -> tuple[nn.Module, dict[str, nn.Parameter]]:
    """A deep copy of ``model`` whose parameters and buffers live on the meta device (no memory)."""
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    twin = copy.deepcopy(model, memo)
    return twin, dict(twin.named_parameters())


def _run_recorded(model: nn.Module, x: torch.Tensor, source: str
                  ) -> tuple[torch.Tensor, bool, set[str]]:
    """Features of ``x`` (eval mode, no grad), whether they came from a list, the params used."""
    watched = {id(p): n for n, p in model.named_parameters()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _ParamUseRecorder(watched) as rec:
            raw = raw_features(model, x, source)
            out = select_features(raw)
    finally:
        model.train(was_training)
    return out, isinstance(raw, (list, tuple)) and source != "intermediates", rec.used


def _on_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def probe_features(
    model: nn.Module, input_size: tuple[int, int] | None = None, in_chans: int | None = None,
    class_token: bool = False,
) -> Probe:
    """Run ``forward_features`` once at ``input_size`` and describe its output.

    Meta device first (a twin of the model without storage); a real batch of one as fallback.
    Raises ``ValueError`` when the backbone rejects the input size. ``class_token=True`` keeps
    an output that holds the class token but no patch tokens (PiT) instead of taking the last
    feature map: what the token head needs.
    """
    if not hasattr(model, "forward_features"):
        raise ValueError(f"{type(model).__name__} has no forward_features(); headswap works on "
                         "timm models (surgery.load_backbone / timm.create_model)")
    hw = input_size or default_input_size(model)
    chans = in_chans or model_in_chans(model)
    errors = []
    source = "forward_features"
    for where in ("meta", "real"):
        if where == "real" and _on_meta(model):
            break  # no real weights to fall back to
        try:
            if where == "meta":
                twin = model if _on_meta(model) else meta_twin(model)[0]
                x = torch.empty(1, chans, *hw, device="meta")
            else:
                twin = model
                x = torch.zeros(1, chans, *hw, device=next(model.parameters()).device)
            out, from_list, used = _run_recorded(twin, x, source)
            first = out.dim() == 3 and _channels_first(model, twin, tuple(out.shape), x, source)
            info = describe_features(model, tuple(out.shape), hw, from_list, source, first)
            keep = class_token and info.class_token
            if info.num_positions == 0 and not keep and hasattr(model, "forward_intermediates"):
                # forward_features kept only class tokens (PiT): take the last feature map instead
                source = "intermediates"
                out, from_list, used = _run_recorded(twin, x, source)
                info = describe_features(model, tuple(out.shape), hw, from_list, source)
        except Exception as err:  # the backbone's own error; explained below
            errors.append(one_line(err))
            continue
        if info.num_positions == 0 and not (class_token and info.class_token):
            raise ValueError(f"{_model_name(model)}: forward_features returns only prefix tokens "
                             f"{info.shape} and the model has no forward_intermediates()")
        return Probe(info, used)
    raise ValueError(
        f"{_model_name(model)} cannot run at input {hw[0]}x{hw[1]} with {chans} channels: "
        f"{errors[-1]}"
    )


def _channels_first(model: nn.Module, twin: nn.Module, shape: tuple[int, ...], x: torch.Tensor,
                    source: str) -> bool:
    """Whether a 3-D output is (B, C, L) maps rather than (B, L, C) tokens.

    The channel dimension is the one equal to ``num_features``; when neither is (EfficientViM
    reports the width of all its stages), the dimension that grows with the input is the spatial
    one: one more forward at a larger size tells.
    """
    channels = getattr(model, "num_features", None)
    if shape[2] == channels:
        return False
    if shape[1] == channels:
        return True
    h, w = x.shape[-2:]
    try:
        bigger = x.new_zeros(*x.shape[:-2], h + h // 2, w + w // 2)
        other = _run_recorded(twin, bigger, source)[0].shape
    except Exception:  # a fixed-size model: tokens are the common case
        return False
    return other[1] == shape[1] and other[2] != shape[2]


def _model_name(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return repr(cfg.get("architecture", type(model).__name__))


def _is_nhwc(model: nn.Module, shape: tuple[int, ...]) -> bool:
    fmt = getattr(model, "output_fmt", None)
    if fmt is not None:
        return str(getattr(fmt, "value", fmt)).upper().endswith("NHWC")
    channels = getattr(model, "num_features", None)
    return shape[-1] == channels and shape[1] != channels


def _token_grid(n_tokens: int, hw: tuple[int, int]) -> tuple[int, int] | None:
    """(gh, gw) with gh * gw == n_tokens and gh / gw matching the input's aspect ratio."""
    if n_tokens <= 0:
        return None
    gh = max(1, round(math.sqrt(n_tokens * hw[0] / hw[1])))
    for cand in (gh, gh - 1, gh + 1):
        if cand > 0 and n_tokens % cand == 0:
            gw = n_tokens // cand
            if abs(cand / gw - hw[0] / hw[1]) <= 0.25 * hw[0] / hw[1]:
                return cand, gw
    return None


def _prefix_tokens(model: nn.Module, n_tokens: int, hw: tuple[int, int]) -> int:
    """Class / distillation / register tokens in front of the patch tokens.

    timm's ``num_prefix_tokens`` when the model has it; otherwise counted from prefix-token
    parameters (volo keeps a ``cls_token`` but no ``num_prefix_tokens``); otherwise the smallest
    count that leaves a rectangular grid matching the input's aspect ratio.
    """
    value = getattr(model, "num_prefix_tokens", None)
    if isinstance(value, int):
        return value
    from_params = 0
    for name, p in model.named_parameters():
        if name.rsplit(".", 1)[-1] in _PREFIX_TOKEN_PARAMS and "." not in name and p.dim() == 3:
            from_params += int(p.shape[1])
    if from_params and (n_tokens == from_params or _token_grid(n_tokens - from_params, hw)):
        return from_params
    for k in range(0, min(9, n_tokens)):
        if _token_grid(n_tokens - k, hw):
            return k
    return 0


def describe_features(model: nn.Module, shape: tuple[int, ...], hw: tuple[int, int],
                      from_sequence: bool = False, source: str = "forward_features",
                      channels_first: bool = False) -> FeatureInfo:
    """Turn a feature shape into a FeatureInfo (layout, channels, grid, prefix tokens).

    ``channels_first`` says a 3-D output is (B, C, L) rather than tokens (B, L, C).
    """
    hw = (int(hw[0]), int(hw[1]))
    extra: dict[str, Any] = {"from_sequence": from_sequence, "source": source}
    if len(shape) == 4:
        if source != "intermediates" and _is_nhwc(model, shape):
            return FeatureInfo(shape[3], "NHWC", (shape[1], shape[2]), 0, hw, shape, **extra)
        return FeatureInfo(shape[1], "NCHW", (shape[2], shape[3]), 0, hw, shape, **extra)
    if len(shape) == 3:
        if channels_first:  # (B, C, L): flattened maps, no prefix tokens (EfficientViM)
            grid = _token_grid(shape[2], hw) or (shape[2],)
            return FeatureInfo(shape[1], "NCL", tuple(grid), 0, hw, shape, **extra)
        prefix = _prefix_tokens(model, shape[1], hw)
        n_patch = shape[1] - prefix
        grid = _token_grid(n_patch, hw) or (n_patch,)
        cls = prefix >= 1 and has_class_token(model, shape[2])
        return FeatureInfo(shape[2], "NLC", tuple(grid), prefix, hw, shape, class_token=cls,
                           **extra)
    if len(shape) == 2:  # already pooled inside forward_features: one position, no grid
        warnings.warn(f"{_model_name(model)} pools inside forward_features (features {shape}); "
                      "every head sees a single position", stacklevel=3)
        return FeatureInfo(shape[1], "NLC", (1, 1), 0, hw, (shape[0], 1, shape[1]), **extra)
    raise ValueError(f"{_model_name(model)}: forward_features returned shape {shape}; expected "
                     "NCHW/NHWC maps (4-D) or tokens (3-D)")
