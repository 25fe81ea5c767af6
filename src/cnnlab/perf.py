"""Timing, FLOP/s, peak measurement, parameter and FLOP counts, and a hardware description."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "Peak",
    "Timing",
    "bf16_support",
    "cpu_flags",
    "cpu_model",
    "gflops",
    "hardware_summary",
    "load_average",
    "matmul_flops",
    "matmul_gflops",
    "measure_peak",
    "model_flops",
    "num_threads",
    "synchronize",
    "time_fn",
    "time_interleaved",
]


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


def load_average() -> float | None:
    """The 1-minute load average: how many processes wanted a core, on average, over the last
    minute (``None`` where the OS does not say). Above the core count, every timing is slowed
    by other jobs; print it next to timings taken on a shared machine."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return None


# ----------------------------------------------------------------------------- timing


@dataclass(frozen=True)
class Timing:
    """Wall-clock seconds per call of one function, from interleaved repeats."""

    name: str  # what was timed
    times: tuple[float, ...]  # seconds per call, one entry per repeat (in the order run)

    @property
    def median(self) -> float:
        """The median over repeats: robust to a repeat slowed down by another process."""
        return float(statistics.median(self.times))

    @property
    def spread(self) -> float:
        """``(max - min) / median`` over repeats: how noisy the measurement was."""
        return (max(self.times) - min(self.times)) / self.median if self.median > 0 else 0.0


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait for queued GPU work on ``device`` (a no-op on the CPU): CUDA calls return before
    the kernels finish, so a timer read without this measures only the launch."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    number: int = 1,
    warmup: int = 1,
    device: str | torch.device | None = None,
) -> dict[str, Timing]:
    """Time several functions fairly: repeat *rounds*, each round calls every function.

    Running variant A five times and then variant B five times lets a background job that starts
    half-way slow only B. Interleaving (A B A B ...; the order rotates each round) spreads such
    noise over all variants, and the median per variant drops the rounds it hit hardest.

    Args:
        fns: name -> function of no arguments (the call that is timed).
        repeats: rounds; each variant's median is over this many measurements.
        number: calls per measurement (the measurement is divided by it); raise it for calls
            much shorter than a millisecond.
        warmup: untimed calls of each function first (allocator, caches, lazy initialization).
        device: ``"cuda"`` synchronizes before and after each measurement.
    Returns:
        name -> :class:`Timing` (seconds per call), in the order of ``fns``.
    """
    if not fns:
        raise ValueError("Invalid fns: nothing to time")
    for name, value in (("repeats", repeats), ("number", number)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name} value: {value!r} (must be a positive int)")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"Invalid warmup value: {warmup!r} (must be an int >= 0)")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: no fixed first slot
        for name in order:
            fn = fns[name]
            synchronize(device)
            start = time.perf_counter()
            for _ in range(number):
                fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / number)
    return {name: Timing(name, tuple(times[name])) for name in names}


def time_fn(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    number: int = 1,
    warmup: int = 1,
    device: str | torch.device | None = None,
) -> Timing:
    """:func:`time_interleaved` for a single function."""
    return time_interleaved({"fn": fn}, repeats=repeats, number=number, warmup=warmup,
                            device=device)["fn"]


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads (``torch.set_num_threads``), then restore the
    previous count. ``None`` leaves the count as it is."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Invalid number of threads: {n!r} (must be a positive int)")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ----------------------------------------------------------------------------- FLOP/s and peak


def gflops(flops: float, seconds: float) -> float:
    """Throughput in GFLOP/s: ``flops / seconds / 1e9`` (NaN for a non-positive time)."""
    if flops < 0:
        raise ValueError(f"Invalid flops value: {flops} (must be >= 0)")
    return flops / seconds / 1e9 if seconds > 0 else math.nan


def matmul_flops(m: int, k: int, n: int) -> int:
    """FLOPs of an ``(m, k) @ (k, n)`` product: ``2 m k n`` (a multiply-add counts as 2)."""
    for name, value in (("m", m), ("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Invalid {name} value: {value!r} (must be a positive int)")
    return 2 * m * k * n


def matmul_gflops(
    size: int = 1024,
    *,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> float:
    """GFLOP/s of a square ``size x size`` matrix product: the best the BLAS library does on
    this machine, the usual stand-in for its peak.

    Args:
        size: matrix side (1024-2048 fills a CPU's caches and vector units; GPUs need 4096+).
        repeats: interleaved repeats; the median is used.
        device: where to run.
        dtype: element type (float32 unless you measure a lower precision).
        seed: seeds the random matrices.
    Returns:
        ``2 size^3 / median time / 1e9``.
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    t = time_fn(lambda: torch.mm(a, b), repeats=repeats, warmup=2, device=device)
    return gflops(matmul_flops(size, size, size), t.median)


@dataclass(frozen=True)
class Peak:
    """A machine's measured fp32 peak: the larger of a big matrix product and the best conv."""

    matmul_gflops: float  # square fp32 matrix product
    conv_gflops: float  # the fastest convolution measured
    conv_name: str  # which convolution that was
    threads: int  # intra-op threads during the measurement
    device: str  # "cpu" or a CUDA device name

    @property
    def gflops(self) -> float:
        """The peak: ``max(matmul_gflops, conv_gflops)``."""
        return max(self.matmul_gflops, self.conv_gflops)

    @property
    def source(self) -> str:
        """``"matmul"`` or the name of the convolution that set the peak."""
        return "matmul" if self.matmul_gflops >= self.conv_gflops else self.conv_name

    def fraction(self, value_gflops: float) -> float:
        """``value_gflops`` as a fraction of the peak."""
        return value_gflops / self.gflops if self.gflops > 0 else math.nan


def measure_peak(
    conv_gflops: Mapping[str, float],
    *,
    matmul_size: int = 1024,
    repeats: int = 5,
    device: str | torch.device = "cpu",
) -> Peak:
    """The machine's measured peak: a big fp32 matrix product, or the best convolution in
    ``conv_gflops`` (name -> GFLOP/s, measured by the caller) if that is faster.

    The vendor's theoretical peak (cores x clock x FLOPs per cycle) is rarely reached and hard to
    know inside a virtual machine; the best a tuned library reaches here is the honest limit.

    Args:
        conv_gflops: convolution variants already measured (may be empty).
        matmul_size: side of the square matrices.
        repeats: interleaved repeats for the matrix product.
        device: where to run.
    Returns:
        A :class:`Peak`.
    """
    mm = matmul_gflops(matmul_size, repeats=repeats, device=device)
    best = max(conv_gflops.items(), key=lambda kv: kv[1], default=("none", 0.0))
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return Peak(matmul_gflops=mm, conv_gflops=float(best[1]), conv_name=best[0],
                threads=torch.get_num_threads(), device=name)


def model_flops(model: torch.nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``model`` on ``example`` (a multiply-add counts as 2), as
    counted by ``torch.utils.flop_counter``: convolutions (grouped ones included) and matrix
    products; element-wise work (ReLU, pooling, bias) is not counted.

    Args:
        model: any module; it runs once, in eval mode and without gradients (its mode is
            restored).
        example: an input batch; divide by its batch size for FLOPs per image.
    Returns:
        The FLOP count.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- capabilities


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support(device: str | torch.device = "cpu") -> tuple[bool, str]:
    """Whether bfloat16 autocast runs natively fast on ``device``, and why (or why not).

    On a CPU, bf16 matrix units (AMX) or AVX-512 BF16 instructions make oneDNN's bf16
    convolutions fast; without them PyTorch emulates bf16 and autocast only slows training.

    Returns:
        ``(supported, reason)``; the reason is a sentence for the reader either way.
    """
    dev = torch.device(device)
    if dev.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, f"{torch.cuda.get_device_name(dev)} supports bf16"
        return False, "this GPU has no bf16 support (needs compute capability 8.0 or newer)"
    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch build has no oneDNN (mkldnn), so CPU bf16 would be emulated"
    flags = cpu_flags()
    native = sorted(flags & {"amx_bf16", "avx512_bf16"})
    if native:
        return True, f"the CPU has native bf16 instructions ({', '.join(native)})"
    return False, ("the CPU has neither AMX nor AVX-512 BF16 instructions, so bf16 would be "
                   "emulated and slower than fp32")
