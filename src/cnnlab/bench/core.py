"""The benchmark's configuration (:class:`BenchConfig`) and what every part shares: the raw
repeats of each part (:func:`timings`) and the ratio of two of them with its interval
(:func:`time_ratio`), the book's timing rule."""


from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from cnnlab.perf import (
    Ratio,
    cpu_model,
    gflops,
)
from cnnlab.perf import time_ratio as _time_ratio

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
    matmul_size: int = 1024  # side of the square fp32 matrices of the measured matrix product
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
    # the scaling curve: (width, images per rank per step) of each model timed in the same
    # rounds, in order of growing work per step; the last one is the speed-up reported (and
    # the goal's); (): ddp_width at a global batch of 64 only
    ddp_sizes: tuple[tuple[int, int], ...] = ()
    ddp_threads: int = 0  # also time 1 process x this many threads (0: off)
    ddp_budget: float | None = None  # seconds of rounds after which no new one starts (at
    # least 3 rounds are run); None: all ddp_rounds
    ddp_tta_epochs: int = 0  # time to accuracy at the last size: epochs each (0: off)
    ddp_tta_target: float = 0.75  # the validation accuracy the time to accuracy is taken at
    ddp_bn: bool = False  # per-rank batch-norm statistics against the global batch's

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



DDP_SINGLE = "single"  # the data-parallel part's series: 1 process x 1 thread ...
DDP_THREADS = "threads"  # ... 1 process x ddp_threads threads (where timed) ...
DDP_PARALLEL = "parallel"  # ... and N processes x 1 thread, timed in interleaved rounds


def timings(part: Result) -> dict[str, list[float]]:
    """The per-repeat seconds of each timed series of one part's result, in the order run:
    ``variants`` -> ``times`` for the convolution, step and thread parts, and
    :data:`DDP_SINGLE`, :data:`DDP_THREADS` (where timed) and :data:`DDP_PARALLEL` (seconds
    per epoch) for the data-parallel part and for each size of its scaling curve (an entry of
    its ``scaling`` list). Series of one part were timed in turns, so their ``i``-th entries
    are a pair."""
    if "variants" in part:
        return {name: list(v["times"]) for name, v in part["variants"].items()}
    if "bench" in part:
        b = part["bench"]
        return {name: list(b[f"{name}_times"])
                for name in (DDP_SINGLE, DDP_THREADS, DDP_PARALLEL) if f"{name}_times" in b}
    raise ValueError(f"Invalid part: no timed series in it (keys {sorted(part)})")


def time_ratio(part: Result, a: str, b: str) -> Ratio:
    """The time of series ``a`` over that of ``b`` in one part (:func:`timings`), paired by
    repeat: a :class:`~cnnlab.perf.Ratio` with its 95% interval. Works on results saved
    before this function existed, since every part keeps its raw repeats.

    Example: ``time_ratio(conv, CONV_IM2COL, CONV_NCHW)`` is how many times longer im2col takes;
    ``time_ratio(step, STEP_NCHW, STEP_CL)`` is channels_last's speed-up."""
    series = timings(part)
    for name in (a, b):
        if name not in series:
            raise ValueError(f"Invalid series: {name!r} (this part has {list(series)})")
    return _time_ratio(series[a], series[b])


def _ratio_fields(key: str, ratio: Ratio) -> Result:
    """``{key: value, key_ci: [low, high]}``: how a part stores a ratio it reports."""
    return {key: ratio.value, f"{key}_ci": ratio.interval()}
