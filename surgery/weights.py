"""Weights files a backbone starts from: state dicts, timm checkpoints, ``.safetensors`` files and
headswap model files.

:func:`read_weights` reads any of them into the backbone's state dict. A headswap model file
(``surgery.save``, e.g. a run's ``best.pt``) gives its backbone's weights (its head is dropped)
and its recipe: the architecture, input channels and timm options it was built with and the
normalisation it was trained with, which :func:`checkpoint_settings` hands to whoever builds the
backbone, so that a file alone is enough to start from it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .files import why_unreadable
from .model_file import read_model_file

has_safetensors = importlib.util.find_spec("safetensors") is not None  # only .safetensors need it

__all__ = ["WeightsFile", "checkpoint_settings", "has_safetensors", "read_state_dict",
           "read_weights"]

# keys under which timm / common trainers store the weights inside a checkpoint dict
_STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "module")
_EXPECTED = ("expected a state dict (torch.save(model.state_dict(), path)), a timm training "
             "checkpoint, a .safetensors file or a headswap model file (surgery.save)")


@dataclass
class WeightsFile:
    """A weights file read: the backbone's ``state`` (names -> tensors), the file's ``kind``
    (``state dict``, ``safetensors`` or ``headswap``) and, for a headswap file, its ``recipe``."""

    state: dict[str, torch.Tensor]
    kind: str
    recipe: dict[str, Any] = field(default_factory=dict)


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise ValueError(f"checkpoint {str(path)!r} is a directory; pass the weights file itself "
                         f"({_EXPECTED})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist ({_EXPECTED})")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not has_safetensors:
        raise ValueError(f"reading {str(path)!r} needs the safetensors package: pip install "
                         "safetensors (or pip install 'headswap[safetensors]')")
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as err:  # a header or size the library refuses
        raise ValueError(f"could not read checkpoint {str(path)!r}: {why_unreadable(path, err)}; "
                         f"{_EXPECTED}") from None


def _headswap(path: Path) -> WeightsFile:
    """A headswap model file's backbone weights and recipe (its checksum verified)."""
    payload = read_model_file(path)
    state = {k.removeprefix("backbone."): v for k, v in payload["state_dict"].items()
             if k.startswith("backbone.")}
    return WeightsFile(state, "headswap", dict(payload["recipe"]))


def read_weights(path: str | Path) -> WeightsFile:
    """Read a weights file: a plain state dict, a checkpoint dict holding one (timm, DDP), a
    ``.safetensors`` file (timm's hub format) or a headswap model file (its backbone, its head
    dropped). Prefixes added by DataParallel / DDP (``module.``) are stripped."""
    path = Path(path)
    _check_path(path)
    if path.suffix == ".safetensors":
        state: Any = _read_safetensors(path)
        kind = "safetensors"
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt or foreign file
            raise ValueError(f"could not read checkpoint {str(path)!r}: "
                             f"{why_unreadable(path, err)}; {_EXPECTED}") from None
        fmt = obj.get("format") if isinstance(obj, Mapping) else None
        if fmt == "headswap":
            return _headswap(path)
        if isinstance(fmt, str) and fmt.startswith("headswap"):  # e.g. a head-only checkpoint
            raise ValueError(f"checkpoint {str(path)!r} is a headswap {fmt!r} file without "
                             "backbone weights; start from the run's best.pt, a whole model")
        state, kind = obj, "state dict"
        if isinstance(obj, Mapping):
            state = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), Mapping)),
                         obj)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor)
                                                 for v in state.values()):
        raise ValueError(f"checkpoint {str(path)!r} holds no state dict (a mapping of names to "
                         f"tensors); found {type(state).__name__}")
    return WeightsFile({k.removeprefix("module."): v for k, v in state.items()}, kind)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The backbone weights of any file :func:`read_weights` reads."""
    return read_weights(path).state


def checkpoint_settings(path: str | Path | None) -> dict[str, Any]:
    """What a headswap model file says about the backbone in it: ``backbone`` (the architecture),
    ``in_chans``, ``timm_kwargs``, ``normalization`` (``{"mean": [...], "std": [...]}``, 0..1
    pixel scale, when the file records it) and ``removed`` (the modules its swap removed).
    Empty for other weights files (and for None), which carry none of that."""
    if path is None or Path(path).suffix == ".safetensors":
        return {}
    w = read_weights(path)
    if w.kind != "headswap":
        return {}
    r = w.recipe
    out = {"backbone": r.get("backbone"), "in_chans": int(r.get("in_chans", 3)),
           "timm_kwargs": dict(r.get("timm_kwargs") or {}), "removed": list(r.get("removed") or [])}
    if r.get("normalization"):
        out["normalization"] = dict(r["normalization"])
    return out
