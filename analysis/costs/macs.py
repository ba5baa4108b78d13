"""MAC counting with two engines: fvcore (default) and torch's flop formulas.

Every figure is in MACs (fvcore's convention: one fused multiply-add counts as one); torch's
formulas give FLOPs = 2 x MACs and are converted. fvcore traces real tensors with
``torch.jit.trace``; the torch counter dispatches on meta or fake tensors, so it needs no memory
for weights. Both get our extra rules (analysis.costs.mac_rules: attention, pooling,
normalisation, ...), so they follow one convention and GAP and GMP heads cost the same; what
neither has a rule for is reported under ``uncounted``. See docs/costs.md.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from surgery import HeadSwapped

from .mac_rules import FVCORE_EXTRA_HANDLES, TORCH_EXTRA_FORMULAS

__all__ = [
    "count_flops", "FLOP_COUNTERS", "FVCORE_EXTRA_HANDLES", "TORCH_EXTRA_FORMULAS",
    "MacCounterMode", "op_category",
]

# ops that move, view or create data, and a few element-wise ones: never reported as uncounted,
# by either counter (fvcore ignores most of them too)
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
    "reciprocal",
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
        uncounted = {_bare(k): n for k, n in sorted(analysis.unsupported_ops().items())
                     if _bare(k) not in _NO_MACS}  # the same list as the torch counter's
    head = int(by_module.get("head", 0)) if isinstance(model, HeadSwapped) else None
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
        if isinstance(model, HeadSwapped):
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
