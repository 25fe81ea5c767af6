"""Timing, ratios of timings with their intervals, FLOP/s, matrix-product throughput, parameter
and FLOP counts, and a hardware description.

The theoretical peak of the hardware is :mod:`cnnlab.hardware`'s; here a matrix product is only
*measured* (:func:`matmul_gflops`), the best a tuned library does, never called the peak."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.stats import ratio_interval, timing_verdict

__all__ = [
    "Ratio",
    "Timing",
    "bf16_support",
    "cpu_flags",
    "cpu_model",
    "gflops",
    "hardware_summary",
    "load_average",
    "matmul_flops",
    "matmul_gflops",
    "matmul_timing",
    "model_flops",
    "num_threads",
    "synchronize",
    "time_fn",
    "throughput_fraction",
    "time_interleaved",
    "time_ratio",
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


# ----------------------------------------------------------------------------- FLOP/s and matmul


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


def matmul_timing(
    size: int = 1024,
    *,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Timing:
    """Seconds per square ``size x size`` matrix product (:func:`time_fn`, 2 warm-up calls).

    Args:
        size: matrix side (1024-2048 fills a CPU's caches and vector units; GPUs need 4096+).
        repeats: repeats; each is one product.
        device: where to run.
        dtype: element type (float32 unless you measure a lower precision).
        seed: seeds the random matrices.
    """
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    return time_fn(lambda: torch.mm(a, b), repeats=repeats, warmup=2, device=device)


def matmul_gflops(
    size: int = 1024,
    *,
    repeats: int = 5,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> float:
    """GFLOP/s of a square ``size x size`` matrix product: the best a tuned BLAS library does on
    this machine. It is a measurement, not the hardware's peak (:mod:`cnnlab.hardware`).

    Returns:
        ``2 size^3 / median time / 1e9`` (:func:`matmul_timing`, same arguments).
    """
    t = matmul_timing(size, repeats=repeats, device=device, dtype=dtype, seed=seed)
    return gflops(matmul_flops(size, size, size), t.median)


# ----------------------------------------------------------------------------- ratios


@dataclass(frozen=True)
class Ratio:
    """A ratio of timings measured in turns, with its 95% interval: the book's timing rule
    (:func:`cnnlab.stats.ratio_interval`, :func:`cnnlab.stats.timing_verdict`).

    ``value`` is the geometric mean of the paired ratios; ``low`` and ``high`` bound it (NaN with
    fewer than two pairs: one pair has no interval)."""

    value: float  # geometric mean of the per-repeat ratios
    low: float  # 95% interval (NaN: fewer than 2 pairs)
    high: float
    n: int  # pairs of measurements behind it

    @property
    def decision(self) -> int | None:
        """+1 if the interval lies above 1, -1 if below, 0 if it contains 1, ``None`` without an
        interval."""
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            return None
        return 1 if self.low > 1 else -1 if self.high < 1 else 0

    def word(self, above: str, below: str) -> str:
        """``above`` if the interval lies above 1, ``below`` if below 1, else
        :func:`~cnnlab.stats.timing_verdict`'s "no measurable difference on this machine";
        without an interval, "one repeat: no interval".

        For a time ratio ``a / b``, ``above`` is "slower" (a takes longer) and ``below``
        "faster"; for a speed-up ``t_base / t_variant`` the other way round."""
        if self.decision is None:
            return "one repeat: no interval"
        return timing_verdict(self.low, self.high, faster=below, slower=above)

    def text(self, fmt: str = "{:.2f}x") -> str:
        """``"2.37x (95% CI 1.90x to 2.96x, 5 repeats)"``; without an interval
        ``"2.37x (1 repeat, no interval)"``."""
        if self.decision is None:
            return f"{fmt.format(self.value)} ({self.n} repeat{'s' if self.n != 1 else ''}, " \
                   "no interval)"
        return (f"{fmt.format(self.value)} (95% CI {fmt.format(self.low)} to "
                f"{fmt.format(self.high)}, {self.n} repeats)")

    def interval(self) -> list[float | None]:
        """``[low, high]`` for JSON (``None`` where there is no interval)."""
        return [x if math.isfinite(x) else None for x in (self.low, self.high)]


def _times(t: Timing | Sequence[float]) -> tuple[float, ...]:
    return tuple(t.times) if isinstance(t, Timing) else tuple(float(x) for x in t)


def time_ratio(a: Timing | Sequence[float], b: Timing | Sequence[float]) -> Ratio:
    """The time ratio ``a / b`` of two functions timed in turns (:func:`time_interleaved`:
    ``a.times[i]`` and ``b.times[i]`` come from the same round).

    Returns:
        A :class:`Ratio`: the geometric mean of ``a[i] / b[i]`` and its 95% t-interval on the
        log scale (:func:`cnnlab.stats.ratio_interval`). Above 1: ``a`` is slower.
    """
    ta, tb = _times(a), _times(b)
    value, low, high = ratio_interval(ta, tb)  # one pair: the ratio, and NaN for the interval
    return Ratio(value, low, high, len(ta))


def throughput_fraction(flops: float, times: Timing | Sequence[float],
                        peak_gflops: float) -> Ratio:
    """The share of ``peak_gflops`` a kernel of ``flops`` FLOPs reached in each repeat
    (``flops / (t_i * peak)``): the time it would take at the peak over the time it took, as a
    :class:`Ratio` (geometric mean over the repeats, 95% interval).

    Args:
        flops: FLOPs per call.
        times: seconds per call, one per repeat.
        peak_gflops: the peak, in GFLOP/s (> 0).
    """
    if not peak_gflops > 0:
        raise ValueError(f"Invalid peak_gflops value: {peak_gflops!r} (must be > 0)")
    if not flops > 0:
        raise ValueError(f"Invalid flops value: {flops!r} (must be > 0)")
    ts = _times(times)
    ideal = flops / (peak_gflops * 1e9)  # seconds per call at the peak
    return time_ratio([ideal] * len(ts), ts)


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
