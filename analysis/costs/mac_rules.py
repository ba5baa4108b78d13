"""The extra MAC rules, one table per counter: what fvcore and torch's formulas miss.

:data:`FVCORE_EXTRA_HANDLES` maps a traced operator name to a handle (jit inputs, outputs ->
MACs); :data:`TORCH_EXTRA_FORMULAS` gives torch's flop counter the same rules (as FLOPs, 2 x
MACs, which analysis.costs.macs converts back). Each handle's docstring states its formula. Pooling
and reductions count one MAC per input element, so GAP and GMP heads cost the same; a power
(GeM) one per output element.
"""

from __future__ import annotations

from collections.abc import Callable
from math import prod
from typing import Any

import torch

__all__ = ["FVCORE_EXTRA_HANDLES", "TORCH_EXTRA_FORMULAS"]

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


def _pow_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::pow: one MAC per output element (GeM's power and its root: x^p, then m^(1/p)).

    A power is not a multiply-add, but it is the work GeM adds over an average; element-wise
    ops such as relu or add stay uncounted, as in fvcore.
    """
    shape = _shape(outputs[0])
    return prod(shape) if shape is not None else 0


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
    "aten::pow": _pow_jit,
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


def _pow(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """aten.pow: one MAC (two FLOPs) per output element, as the fvcore handle."""
    return 2 * prod(out_shape) if out_shape is not None else 0


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
        "mean": _numel2, "sum": _numel2, "amax": _numel2, "max": _max_reduce, "pow": _pow,
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
