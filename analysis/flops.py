"""MAC counting with two engines: fvcore (default) and torch's flop formulas.

Convention (fvcore's, kept everywhere): one fused multiply-add counts as one, so every figure
here is in MACs and tables say "GMACs". torch's formulas (the ``torch.utils.flop_counter``
registry) give FLOPs = 2 x MACs; they are converted. fvcore traces real tensors with
``torch.jit.trace`` (it cannot trace the meta device); the torch counter dispatches on meta or
fake tensors, so it needs no memory for weights and computes nothing.

fvcore misses operators that carry real multiply-adds (``scaled_dot_product_attention``,
``baddbmm``, convolutions with ``padding='same'``, ...) and has no rule for the pooling operators
our heads use (``mean``, ``amax``, max pooling), so a GMP head would cost nothing. The extra
handles live in one table, :data:`FVCORE_EXTRA_HANDLES`; the torch counter gets the same rules
(pooling, normalisation, resampling) in :data:`TORCH_EXTRA_FORMULAS`, so both counters follow one
convention and GAP and GMP heads cost the same. Pooling and reductions: one MAC per input element.
Anything neither counter has a rule for is reported under ``uncounted`` (op name -> calls).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from math import prod
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = [
    "count_flops", "FLOP_COUNTERS", "FVCORE_EXTRA_HANDLES", "TORCH_EXTRA_FORMULAS",
    "MACS_CONVENTION", "MacCounterMode", "op_category",
]

MACS_CONVENTION = "MACs: one fused multiply-add counts as one (fvcore's convention); GMACs = 1e9 MACs"

# ----------------------------------------------------------------------------------------------
# fvcore: extra handles, one table. A handle takes the traced op's jit inputs/outputs -> MACs.


def _shape(value: Any) -> list[int] | None:
    """Static shape of a jit value, or None when it is not a tensor (None, int, list...)."""
    try:
        if value.isCompleteTensor():
            return list(value.type().sizes())
    except (AttributeError, RuntimeError):
        pass
    return None


def _sdpa_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention(q, k, v, ...): Q K^T then softmax(.) V.

    q (..., L, E), k (..., S, E), v (..., S, Ev): MACs = prod(...) * L * S * (E + Ev); the batch
    dims are the query's (grouped-query attention broadcasts k and v). Softmax, mask and scale are
    element-wise and not counted.
    """
    q, k, v = (_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        return 0
    return prod(q[:-2]) * q[-2] * k[-2] * (q[-1] + v[-1])


def _per_input_element_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """Pooling and reductions (mean, amax, max/avg/adaptive pooling, vector norm).

    One MAC per input element, the rule fvcore applies to ``adaptive_avg_pool2d``, so a global
    average and a global max over the same grid cost the same.
    """
    shape = _shape(inputs[0])
    return prod(shape) if shape is not None else 0


def _max_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::max: a reduction (over all or one dim) costs one MAC per input element.

    ``max(a, b)`` between two tensors is element-wise, like relu: zero, as fvcore's convention.
    """
    if len(inputs) > 1 and _shape(inputs[1]) is not None:
        return 0
    return _per_input_element_jit(inputs, outputs)


def _baddbmm_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::baddbmm(input, b1 (n, c, t), b2 (n, t, d)): MACs = n * c * t * d."""
    a, b = _shape(inputs[1]), _shape(inputs[2])
    if a is None or b is None:
        return 0
    return a[0] * a[1] * a[2] * b[2]


def _matmul_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::matmul / mm with broadcasting and 1-D operands: prod(out batch) * n * k * m.

    Replaces fvcore's handle, which asserts 2 operands of rank >= 2 and ignores a broadcast first
    operand. MACs = (output elements) * k, k the contracted length.
    """
    a, out = _shape(inputs[0]), _shape(outputs[0])
    if a is None or out is None:
        return 0
    return prod(out) * a[-1]


def _conv_mode_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::_convolution_mode (conv with ``padding='same'|'valid'``), like any convolution.

    MACs = batch * prod(weight shape) * prod(output spatial dims): every output position costs
    Cout/groups * Cin * kernel multiply-adds (weight shape is (Cout, Cin/groups, *kernel)).
    """
    x, w, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    if x is None or w is None or out is None:
        return 0
    return x[0] * prod(w) * prod(out[2:])


def _resample_jit(taps: int) -> Callable[[list[Any], list[Any]], int]:
    """Interpolation: ``taps`` MACs per output element (nearest 1, bilinear 4, bicubic 16)."""

    def handle(inputs: list[Any], outputs: list[Any]) -> int:
        shape = _shape(outputs[0])
        return taps * prod(shape) if shape is not None else 0

    handle.__doc__ = f"Interpolation: {taps} MAC(s) per output element."
    return handle


def _rms_norm_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::rms_norm(x, shape, weight, eps): fvcore's norm rule, numel * (5 affine, else 4)."""
    shape = _shape(inputs[0])
    if shape is None:
        return 0
    return prod(shape) * (5 if len(inputs) > 2 and _shape(inputs[2]) is not None else 4)


def _lstm_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::lstm(input, hx, params, ...): each 2-D weight (W_ih (4H, I), W_hh (4H, H), per
    layer and direction) multiplies one vector per time step and sequence.

    MACs = (time steps * batch) * sum of the weight matrices' sizes; gates are element-wise.
    """
    x = _shape(inputs[0])
    if x is None:
        return 0
    weights = [_shape(w) for w in inputs[2].node().inputs()]
    return prod(x[:2]) * sum(prod(w) for w in weights if w is not None and len(w) == 2)


FVCORE_EXTRA_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": _sdpa_jit,
    "aten::baddbmm": _baddbmm_jit,
    "aten::matmul": _matmul_jit,
    "aten::_convolution_mode": _conv_mode_jit,
    "aten::mean": _per_input_element_jit,
    "aten::amax": _per_input_element_jit,
    "aten::max": _max_jit,
    "aten::max_pool1d": _per_input_element_jit,
    "aten::max_pool2d": _per_input_element_jit,
    "aten::max_pool3d": _per_input_element_jit,
    "aten::avg_pool1d": _per_input_element_jit,
    "aten::avg_pool2d": _per_input_element_jit,
    "aten::avg_pool3d": _per_input_element_jit,
    "aten::adaptive_max_pool1d": _per_input_element_jit,
    "aten::adaptive_max_pool2d": _per_input_element_jit,
    "aten::adaptive_avg_pool1d": _per_input_element_jit,
    "aten::adaptive_avg_pool3d": _per_input_element_jit,
    "aten::linalg_vector_norm": _per_input_element_jit,
    "aten::rms_norm": _rms_norm_jit,
    "aten::sum": _per_input_element_jit,
    "aten::lstm": _lstm_jit,
    "aten::upsample_bicubic2d": _resample_jit(16),
    "aten::_upsample_bilinear2d_aa": _resample_jit(4),
}

# ----------------------------------------------------------------------------------------------
# torch.utils.flop_counter: the same rules as shape formulas. They return FLOPs (2 x MACs),
# torch's unit, since the whole count is halved at the end.


def _numel2(x_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Pooling / reductions: one MAC (two FLOPs) per input element."""
    return 2 * prod(x_shape)


def _max_reduce(x_shape: Any, *args: Any, **kwargs: Any) -> int:
    """aten.max: a reduction is one MAC per input element; max(a, b) element-wise is zero."""
    if args and isinstance(args[0], torch.Size):
        return 0
    return 2 * prod(x_shape)


def _norm(weight_index: int) -> Callable[..., int]:
    """fvcore's rule for layer/group norm (and batch norm in training): numel * (5 affine, 4)."""

    def formula(x_shape: Any, *args: Any, **kwargs: Any) -> int:
        affine = len(args) >= weight_index and args[weight_index - 1] is not None
        return 2 * prod(x_shape) * (5 if affine else 4)

    return formula


def _bn_eval(x_shape: Any, weight: Any = None, *args: Any, **kwargs: Any) -> int:
    """Batch norm at inference (fvcore's rule): numel * (2 with affine, else 1)."""
    return 2 * prod(x_shape) * (2 if weight is not None else 1)


def _bn_any(x_shape: Any, weight: Any = None, bias: Any = None, rm: Any = None,
            rv: Any = None, training: bool = False, *args: Any, **kwargs: Any) -> int:
    """aten.native_batch_norm: training -> norm rule, inference -> batch-norm eval rule."""
    if training:
        return 2 * prod(x_shape) * (5 if weight is not None else 4)
    return _bn_eval(x_shape, weight)


def _resample(taps: int) -> Callable[..., int]:
    def formula(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return 2 * taps * prod(out_shape)
    return formula


def _sdpa_cpu(q: Any, k: Any, v: Any, *args: Any, **kwargs: Any) -> int:
    """The CPU fused attention kernel, missing from torch's registry: same as the others."""
    from torch.utils.flop_counter import sdpa_flop_count
    return sdpa_flop_count(q, k, v)


def _lstm(x_shape: Any, hx: Any, params: Any, *args: Any, **kwargs: Any) -> int:
    """aten.lstm: (time steps * batch) * sum of the 2-D weight sizes, as the fvcore handle."""
    if not isinstance(x_shape, torch.Size):  # packed-sequence overload: not modelled
        return 0
    return 2 * prod(x_shape[:2]) * sum(prod(w) for w in params if len(w) == 2)


def _mkldnn_rnn_layer(x_shape: Any, w_ih: Any, w_hh: Any, *args: Any, **kwargs: Any) -> int:
    """One LSTM layer and direction of the CPU kernel: (time steps * batch) * (|W_ih| + |W_hh|)."""
    return 2 * prod(x_shape[:2]) * (prod(w_ih) + prod(w_hh))


def _torch_extra_formulas() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    table: dict[str, Callable[..., int]] = {
        "_scaled_dot_product_flash_attention_for_cpu": _sdpa_cpu,
        "mean": _numel2, "sum": _numel2, "amax": _numel2, "max": _max_reduce,
        "linalg_vector_norm": _numel2,
        "max_pool1d": _numel2, "max_pool2d": _numel2, "max_pool3d": _numel2,
        "max_pool2d_with_indices": _numel2, "max_pool3d_with_indices": _numel2,
        "avg_pool1d": _numel2, "avg_pool2d": _numel2, "avg_pool3d": _numel2,
        "_adaptive_avg_pool2d": _numel2, "_adaptive_avg_pool3d": _numel2,
        "adaptive_max_pool1d": _numel2, "adaptive_max_pool2d": _numel2,
        "native_layer_norm": _norm(2), "native_group_norm": _norm(1), "_fused_rms_norm": _norm(2),
        "_native_batch_norm_legit_no_training": _bn_eval, "_native_batch_norm_legit": _norm(1),
        "native_batch_norm": _bn_any,
        "upsample_nearest2d": _resample(1), "_upsample_nearest_exact2d": _resample(1),
        "upsample_bilinear2d": _resample(4), "upsample_bicubic2d": _resample(16),
        "_upsample_bilinear2d_aa": _resample(4),
        "grid_sampler_2d": _resample(4), "lstm": _lstm,
        "mkldnn_rnn_layer": _mkldnn_rnn_layer,
    }
    return {getattr(aten, name): f for name, f in table.items() if hasattr(aten, name)}


TORCH_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = _torch_extra_formulas()

# ops that move, view or create data: never reported as uncounted (fvcore ignores them too)
_NO_MACS = {
    "Int", "ScalarImplicit", "alias", "arange", "as_strided", "cat", "chunk", "clone",
    "constant_pad_nd", "contiguous", "copy", "copy_", "detach", "dropout", "empty", "empty_like",
    "empty_strided", "expand", "expand_as", "flatten", "full", "full_like", "gather", "index",
    "index_put_", "index_select", "lift_fresh", "lift_fresh_copy", "masked_fill", "narrow",
    "new_empty", "new_full", "new_zeros", "nonzero", "ones", "ones_like", "permute", "repeat",
    "reshape", "reshape_as", "roll", "scalar_tensor", "select", "size", "slice", "split",
    "split_with_sizes", "squeeze", "stack", "t", "to", "_to_copy", "transpose", "type_as",
    "unbind", "unsqueeze", "unsqueeze_", "view", "_unsafe_view", "zeros", "zeros_like", "fill_",
    "pad", "eye", "_reshape_alias", "unfold", "im2col", "tile", "meshgrid", "dropout_",
    "feature_dropout", "unsafe_split", "unsafe_chunk", "device", "relu", "relu_", "clamp",
    "clamp_", "floor", "floor_divide", "remainder", "eq", "ge", "gt", "bitwise_not", "__and__",
}

_CATEGORIES = (
    ("attention", ("attention",)),
    ("conv", ("conv",)),
    ("matmul", ("linear", "addmm", "mm", "bmm", "matmul", "einsum", "baddbmm")),
    ("norm", ("norm",)),
    ("pool", ("pool", "mean", "amax", "max", "sum", "vector_norm")),
    ("rnn", ("lstm",)),
)


def _bare(op: str) -> str:
    """Operator name without namespace, the same for both counters: 'aten::mean' -> 'mean'."""
    return op.split("::")[-1].split(".")[-1] if "::" in op else op.split(".")[-1]


def op_category(op: str) -> str:
    """Coarse kind of an operator name from either counter: attention, conv, matmul, norm,
    pool (pooling and reductions), rnn or other."""
    name = _bare(op)
    for category, keys in _CATEGORIES:
        if any(k == name or (k in name and k not in ("mm", "max")) for k in keys):
            return category
    return "other"


# ----------------------------------------------------------------------------------------------


def _is_swapped(model: nn.Module) -> bool:
    return isinstance(getattr(model, "head", None), nn.Module) and callable(
        getattr(model, "head_parameters", None))


def _on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def _device(model: nn.Module) -> torch.device:
    for t in [*model.parameters(), *model.buffers()]:
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Count the inference graph (dropout off, batch norm with running stats), then restore."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _fvcore(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """fvcore's jit-trace counter plus our extra handles; needs real tensors (no meta)."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError as err:  # pragma: no cover - fvcore is a dependency
        raise ValueError("counter 'fvcore' needs fvcore: pip install fvcore, or use "
                         "counter='torch'") from err
    if _on_meta(model):
        raise ValueError("counter 'fvcore' traces real tensors and cannot run a model on the meta "
                         "device; build it on CPU or use counter='torch'")
    x = torch.zeros(shape, device=_device(model))
    with _eval_mode(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x).set_op_handle(**FVCORE_EXTRA_HANDLES)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none").ancestor_mode("caller")
        total = int(analysis.total())
        by_module = analysis.by_module()
        by_op = {_bare(k): int(v) for k, v in analysis.by_operator().items()}
        uncounted = {_bare(k): n for k, n in sorted(analysis.unsupported_ops().items())}
    head = int(by_module.get("head", 0)) if _is_swapped(model) else None
    return {"total": total, "head": head, "by_operator": by_op, "uncounted": uncounted}


class MacCounterMode(TorchDispatchMode):
    """torch's flop formulas (plus ours) applied to every op run inside ``with MacCounterMode():``.

    The same dispatch rule as ``torch.utils.flop_counter.FlopCounterMode`` (an op without a
    formula is first decomposed, and counted only if it cannot be), minus its per-module hooks,
    which double the cost of a meta forward pass. ``flops`` (torch's unit, 2 x MACs) and
    ``uncounted`` accumulate until :meth:`take`.
    """

    _REGISTRY: dict[Any, Callable[..., int]] = {}
    _QUERIES = ("is_contiguous", "is_strides_like_format", "is_non_overlapping_and_dense",
                "size", "sym_size", "stride", "sym_stride", "storage_offset",
                "sym_storage_offset", "numel", "sym_numel", "dim", "sym_is_contiguous", "layout")

    def __init__(self) -> None:
        super().__init__()
        if not MacCounterMode._REGISTRY:
            from torch.utils.flop_counter import flop_registry, shape_wrapper
            MacCounterMode._REGISTRY = {
                **flop_registry, **{k: shape_wrapper(v) for k, v in TORCH_EXTRA_FORMULAS.items()}}
        self.flops: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()

    def take(self) -> tuple[Counter[str], Counter[str]]:
        """FLOPs (torch's unit: 2 x MACs) by operator and uncounted calls so far; then resets."""
        flops, uncounted = self.flops, self.uncounted
        self.flops, self.uncounted = Counter(), Counter()
        return flops, uncounted

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        packet = getattr(func, "_overloadpacket", None)
        if packet is None:  # higher-order operators (cond, ...): not modelled
            return NotImplemented
        name = packet.__name__
        if name in self._QUERIES:
            return NotImplemented
        formula = self._REGISTRY.get(packet)
        if formula is None and func is not torch.ops.prim.device.default:
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            self.flops[name] += formula(*args, **kwargs, out_val=out)
        elif name not in _NO_MACS and name.rstrip("_") not in _NO_MACS:
            self.uncounted[name] += 1
        return out


def _torch(model: nn.Module, shape: tuple[int, ...]) -> dict[str, Any]:
    """torch's flop formulas on the meta device (or fake tensors): no memory, no compute.

    A swapped model is counted in two passes, ``forward_features`` (backbone) then ``head`` on
    those features, which is what its ``forward`` does.
    """
    mode = MacCounterMode()
    if _on_meta(model):
        fake: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        device = torch.device("meta")
    else:  # real weights: fake tensors stand in for them, nothing is computed
        from torch._subclasses.fake_tensor import FakeTensorMode
        fake, device = FakeTensorMode(allow_non_fake_inputs=True), _device(model)
    with _eval_mode(model), fake:
        x = torch.empty(shape, device=device)
        if _is_swapped(model):
            swapped: Any = model  # a surgery.HeadSwapped
            with mode:
                features = swapped.forward_features(x)
            flops, uncounted = mode.take()
            with mode:
                swapped.forward_head(features)
            head_flops, head_uncounted = mode.take()
            head: int | None = sum(head_flops.values()) // 2
            flops, uncounted = flops + head_flops, uncounted + head_uncounted
        else:
            with mode:
                model(x)
            (flops, uncounted), head = mode.take(), None
    return {"total": sum(flops.values()) // 2, "head": head,
            "by_operator": {k: v // 2 for k, v in flops.items()},
            "uncounted": dict(sorted(uncounted.items()))}


FLOP_COUNTERS: dict[str, Callable[[nn.Module, tuple[int, ...]], dict[str, Any]]] = {
    "fvcore": _fvcore,
    "torch": _torch,
}


def _check_input(input_size: Any, batch_size: Any) -> tuple[int, ...]:
    size = tuple(input_size) if isinstance(input_size, (tuple, list)) else (input_size,)
    if len(size) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size):
        raise ValueError(f"input_size must be (channels, height, width) positive ints, got "
                         f"{input_size!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return (batch_size, *size)


def count_flops(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224),
                batch_size: int = 1, counter: str = "fvcore") -> dict[str, Any]:
    """Count the MACs of one inference forward pass of ``batch_size`` images.

    Returns ``total``, ``backbone`` and ``head`` (MACs; for a ``surgery.HeadSwapped`` the head is
    everything run inside ``model.head``, the backbone the rest; both ``None`` for other modules),
    ``uncounted`` (operator name -> calls that no rule counted: element-wise ops such as add or
    gelu, or anything unknown), ``by_operator`` and ``by_category`` (MACs), and ``counter``.
    ``counter`` is a key of :data:`FLOP_COUNTERS`: ``fvcore`` (jit trace, real tensors) or
    ``torch`` (torch.utils.flop_counter on meta or fake tensors, nothing computed).
    """
    if counter not in FLOP_COUNTERS:
        raise ValueError(f"unknown counter {counter!r}; choose from {', '.join(FLOP_COUNTERS)}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"count_flops expects an nn.Module, got {type(model).__name__}")
    shape = _check_input(input_size, batch_size)
    result = FLOP_COUNTERS[counter](model, shape)
    head = result["head"]
    categories: Counter[str] = Counter()
    for op, macs in result["by_operator"].items():
        categories[op_category(op)] += macs
    return {
        "total": result["total"],
        "backbone": None if head is None else result["total"] - head,
        "head": head,
        "uncounted": result["uncounted"],
        "by_operator": result["by_operator"],
        "by_category": dict(categories),
        "counter": counter,
        "input_size": list(shape[1:]),
        "batch_size": shape[0],
    }
