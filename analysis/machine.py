"""The machine a figure was measured on: CPU model, cores, GPU and versions.

Every committed report names its machine; this is the one place that reads it, so the study
reports and the benchmarks name it alike.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["cpu_name", "machine_info"]


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
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "timm": timm.__version__}
