"""Pretrained weights offline: say at once that a download cannot work, not after timm's retries.

``timm.create_model(name, pretrained=True)`` downloads from the Hugging Face hub (or a URL) unless
the weights are cached; offline, the hub client retries for most of a minute before it gives up.
:func:`check_weights_reachable` looks at the cache and at the network first, and raises a
ValueError that names the way out (local weights) when neither can deliver the weights.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["OFFLINE_HINT", "check_weights_reachable"]

OFFLINE_HINT = ("Use local weights instead: --checkpoint FILE (checkpoint=PATH in Python; a state "
                "dict saved with torch.save) or pretrained_cfg_overlay=dict(file=PATH)")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _hf_cache() -> Path:
    """The Hugging Face hub cache, as the hub client finds it (read at call time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface")
    return Path(home) / "hub"


def _hf_cached(repo_id: str, filename: str | None) -> bool:
    """Whether a snapshot of ``repo_id`` (holding ``filename``, or any weights) is cached."""
    snapshots = _hf_cache() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    return snapshots.is_dir() and any((snap / n).is_file() for snap in snapshots.iterdir()
                                      for n in names)


def _source(name: str, timm_kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """``(host, cache)`` that timm would download ``name``'s weights from, or None when it needs
    no download (a local file, already cached, or no download source known)."""
    import timm.models
    import torch

    overlay = timm_kwargs.get("pretrained_cfg_overlay") or {}
    if overlay.get("file") or overlay.get("state_dict"):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or cfg.file or cfg.state_dict:
        return None
    if cfg.hf_hub_id:
        if _hf_cached(cfg.hf_hub_id.split("@")[0], cfg.hf_hub_filename):
            return None
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return urlparse(endpoint).hostname or "huggingface.co", str(_hf_cache())
    if cfg.url:
        url = cfg.url if isinstance(cfg.url, str) else cfg.url[0]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        if (cache / os.path.basename(urlparse(url).path)).is_file():
            return None
        return urlparse(url).hostname or url, str(cache)
    return None


def check_weights_reachable(name: str, timm_kwargs: dict[str, Any], timeout: float = 5.0) -> None:
    """Raise ValueError at once when ``name``'s pretrained weights are not cached and cannot be
    downloaded: ``HF_HUB_OFFLINE`` is set, or the host does not answer within ``timeout`` s.

    Behind a proxy (``HTTPS_PROXY`` and the like) the host is not probed; timm's own download
    then reports what happens.
    """
    found = _source(name, timm_kwargs)
    if found is None:
        return
    host, cache = found
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline and host.endswith("huggingface.co"):
        reason = "HF_HUB_OFFLINE is set"
    elif any(os.environ.get(v) for v in _PROXY_VARS):
        return
    else:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            return
        except OSError as err:
            reason = f"{host} is unreachable ({err.strerror or type(err).__name__})"
    raise ValueError(f"cannot download pretrained weights for {name!r}: {reason}, and they are "
                     f"not in the local cache ({cache}). Offline? {OFFLINE_HINT}")
