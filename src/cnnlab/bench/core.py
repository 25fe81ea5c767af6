"""The benchmark's configuration (:class:`BenchConfig`) and what every part shares."""


from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from cnnlab.perf import (
    cpu_model,
    gflops,
)

Result = dict[str, Any]  # a JSON-ready benchmark result


@dataclass(frozen=True)
class BenchConfig:
    """Sizes and repeats of one benchmark run (the defaults are the full command's)."""

    device: str = "cpu"  # "cpu" or "cuda"
    threads: int | None = None  # intra-op threads (None: PyTorch's current count)
    repeats: int = 7  # interleaved repeats per figure (the median is reported)
    batch: int = 32  # images in the timed convolution
    in_channels: int = 32  # C_in of the timed convolution
    out_channels: int = 64  # C_out of the timed convolution
    size: int = 28  # H = W of its input
    kernel: int = 3  # k x k filter (padding k // 2 keeps the size)
    matmul_size: int = 1024  # side of the square matrices of the peak measurement
    step_batch: int = 64  # images per training step
    step_width: int = 16  # SmallCNN width of the training step
    step_size: int = 28  # H = W of the training step's images (28: Fashion-MNIST)
    step_threads: int | None = 1  # threads of the step part: 1, as the book's sweeps train
    # (one single-threaded process per core); None: like `threads`
    compile: bool = True  # include torch.compile in the step part (costs its compile time)
    ddp_procs: int = 2  # data-parallel processes
    ddp_dataset: str = "fashion_mnist"  # falls back to digits where it is missing
    ddp_train_size: int = 2048  # training images per epoch of the data-parallel benchmark
    ddp_width: int = 16  # SmallCNN width of the data-parallel benchmark
    ddp_rounds: int = 5  # interleaved (1 process, N processes) epoch pairs
    ddp_timeout: float = 300.0  # seconds for the whole torchrun launch

    @classmethod
    def tiny(cls, **overrides: Any) -> BenchConfig:
        """Sizes that run in a second or two: for tests and smoke checks, not for figures."""
        base = cls(repeats=2, batch=2, in_channels=4, out_channels=8, size=8, matmul_size=64,
                   step_batch=8, step_width=4, step_size=8, compile=False, ddp_train_size=128,
                   ddp_width=4, ddp_rounds=1, ddp_dataset="digits")
        return replace(base, **overrides)


def _device(cfg: BenchConfig) -> torch.device:
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    return dev


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _figures(timings: dict[str, Any], flops: dict[str, float] | float) -> dict[str, Result]:
    out = {}
    for name, t in timings.items():
        f = flops[name] if isinstance(flops, dict) else flops
        out[name] = {"seconds": t.median, "gflops": gflops(f, t.median), "spread": t.spread,
                     "times": list(t.times)}
    return out



def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()

