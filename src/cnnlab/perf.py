"""Timing, FLOP/s, peak measurement, parameter and FLOP counts, and a hardware description."""

from __future__ import annotations

import os
import platform

import torch

__all__ = ["cpu_model", "hardware_summary"]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_summary() -> str:
    """One line naming what produced a page's numbers: CPU, cores, torch threads, GPU, torch."""
    parts = [f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    else:
        parts.append("no GPU")
    parts.append(f"PyTorch {torch.__version__.split('+')[0]}")
    return "; ".join(parts)
