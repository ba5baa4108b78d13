"""The machine: which device a run uses, and what it was measured on.

Every committed report names its machine and every tool resolves ``--device auto`` the same way;
this module is the one place for both.
"""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_name", "cpu_seconds", "describe_machine", "machine_info", "resolve_device"]


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:1`` as given.

    A CUDA device asked for on a machine without one (or an index past the last GPU) is a
    ValueError that says so, before any model is built.
    """
    if isinstance(name, str) and name.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"unknown device {str(name)!r} ({err}); use auto, cpu, cuda or "
                         "cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} asked for but CUDA is not available on this "
                             "machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(name)!r}: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_name() -> str:
    """The CPU model as ``/proc/cpuinfo`` names it ("model name"), else what ``platform`` knows
    (the processor, or the architecture such as ``x86_64``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, GPU (None without CUDA), Python, torch and timm versions: what every
    committed figure names."""
    import timm

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__}


def describe_machine(info: dict[str, Any] | None = None, with_load: bool = False) -> str:
    """One line naming the machine for a committed report: CPU, cores, GPU, Python, torch and
    timm versions (of ``info``, a recorded :func:`machine_info`; this machine, with its torch
    threads, when None), and (``with_load``) the load average, which says whether other jobs
    shared the machine while the figures were taken."""
    here = info is None
    info = machine_info() if info is None else info
    gpu = f", GPU {info.get('gpu')}" if info.get("gpu") else ", no GPU"
    threads = f", {torch.get_num_threads()} torch threads" if here else ""
    text = (f"{info.get('cpu')}, {info.get('cores')} cores{gpu}{threads}; Python "
            f"{info.get('python')}, torch {info.get('torch')}, timm {info.get('timm')}")
    if with_load and hasattr(os, "getloadavg"):
        text += "; load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return text


def cpu_seconds() -> float:
    """CPU time in seconds (user + system, every thread) of this process and of its child
    processes that have ended (a study's workers): beside the wall time, how much of the machine
    a job used."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
