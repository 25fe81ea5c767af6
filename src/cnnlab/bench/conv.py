"""The convolution parts: im2col against ``F.conv2d`` in both layouts, the naive loops, the
fraction of the hardware's peak (and of a measured matrix product) each layout reaches, and the
depthwise-separable layer."""


from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.bench.core import (
    BenchConfig,
    Result,
    _device,
    _figures,
    _gen,
    _ratio_fields,
    time_ratio,
)
from cnnlab.hardware import HardwarePeak, hardware_peak
from cnnlab.perf import (
    Ratio,
    gflops,
    matmul_flops,
    matmul_timing,
    num_threads,
    throughput_fraction,
    time_interleaved,
)
from cnnlab.techniques.conv import (
    DepthwiseSeparableConv2d,
    conv2d,
    conv2d_flops,
    conv2d_naive,
    count_params,
    im2col_bytes,
)

CONV_IM2COL = "im2col conv2d"
CONV_NCHW = "F.conv2d (NCHW)"
CONV_CL = "F.conv2d (channels_last)"
CONV_NAIVE = "naive loops"


def bench_conv(cfg: BenchConfig) -> Result:
    """One ``k x k`` convolution (stride 1, same padding) three ways: im2col + matmul (cnnlab),
    ``F.conv2d`` on NCHW tensors and ``F.conv2d`` on channels_last tensors.

    Returns:
        ``shape`` (N, C_in, C_out, H, k), ``flops``, ``variants`` (name -> seconds and gflops
        of the median repeat, spread, times), ``ratio_im2col`` (im2col time / NCHW F.conv2d
        time), ``ratio_im2col_cl`` (im2col / channels_last), ``speedup_cl`` (NCHW time /
        channels_last time), each a geometric mean of the paired repeats
        (:func:`~cnnlab.bench.core.time_ratio`) with its 95% interval under ``<key>_ci``;
        ``max_abs_diff`` (im2col vs F.conv2d), ``input_bytes``, ``im2col_bytes`` and
        ``im2col_ratio``.
    """
    dev = _device(cfg)
    n, c, o, h, k = cfg.batch, cfg.in_channels, cfg.out_channels, cfg.size, cfg.kernel
    g = _gen(0)
    x = torch.randn(n, c, h, h, generator=g).to(dev)  # (N, C, H, W)
    w = (torch.randn(o, c, k, k, generator=g) / math.sqrt(c * k * k)).to(dev)  # (O, C, k, k)
    x_cl = x.contiguous(memory_format=torch.channels_last)  # same shape, NHWC strides
    w_cl = w.contiguous(memory_format=torch.channels_last)
    pad = k // 2
    with torch.inference_mode(), num_threads(cfg.threads):
        diff = float((conv2d(x, w, padding=pad) - F.conv2d(x, w, padding=pad)).abs().max())
        timings = time_interleaved({
            CONV_IM2COL: lambda: conv2d(x, w, padding=pad),
            CONV_NCHW: lambda: F.conv2d(x, w, padding=pad),
            CONV_CL: lambda: F.conv2d(x_cl, w_cl, padding=pad),
        }, repeats=cfg.repeats, warmup=2, device=dev)
    flops = conv2d_flops(c, o, k, h, h, batch=n)
    part: Result = {"variants": _figures(timings, flops)}
    cols = im2col_bytes(c, k, h, h, batch=n)
    inp = x.numel() * x.element_size()
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": k},
            "flops": flops, **part,
            **_ratio_fields("ratio_im2col", time_ratio(part, CONV_IM2COL, CONV_NCHW)),
            **_ratio_fields("ratio_im2col_cl", time_ratio(part, CONV_IM2COL, CONV_CL)),
            **_ratio_fields("speedup_cl", time_ratio(part, CONV_NCHW, CONV_CL)),
            "max_abs_diff": diff, "input_bytes": inp, "im2col_bytes": cols,
            "im2col_ratio": cols / inp}


def bench_naive(cfg: BenchConfig, *, shape: tuple[int, int, int, int] = (1, 3, 8, 4)) -> Result:
    """The explicit loops against im2col and ``F.conv2d`` on a tiny input (``shape`` is
    ``(N, C_in, H, C_out)``; 3x3 filters, padding 1): outputs and GFLOP/s of each.

    Always on one CPU thread: a tiny input gives threads nothing to split, only barriers to wait
    at (on a busy machine a second thread makes every call many times slower).

    Returns:
        ``variants`` (with ``max_abs_diff`` against ``F.conv2d``) and ``slowdown_naive`` (loops'
        time / ``F.conv2d``'s, paired repeats) with ``slowdown_naive_ci``."""
    n, c, h, o = shape
    g = _gen(1)
    x = torch.randn(n, c, h, h, generator=g)
    w = torch.randn(o, c, 3, 3, generator=g)
    b = torch.randn(o, generator=g)
    with torch.inference_mode(), num_threads(cfg.threads):
        ref = F.conv2d(x, w, b, padding=1)
        diffs = {CONV_NAIVE: float((conv2d_naive(x, w, b, padding=1) - ref).abs().max()),
                 CONV_IM2COL: float((conv2d(x, w, b, padding=1) - ref).abs().max()),
                 CONV_NCHW: 0.0}
    with torch.inference_mode(), num_threads(1):
        timings = time_interleaved({
            CONV_NAIVE: lambda: conv2d_naive(x, w, b, padding=1),
            CONV_IM2COL: lambda: conv2d(x, w, b, padding=1),
            CONV_NCHW: lambda: F.conv2d(x, w, b, padding=1),
        }, repeats=max(3, cfg.repeats), warmup=1)
    flops = conv2d_flops(c, o, 3, h, h, batch=n)
    variants = _figures(timings, flops)
    for name, v in variants.items():
        v["max_abs_diff"] = diffs[name]
    part: Result = {"variants": variants}
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": 3},
            "flops": flops, **part,
            **_ratio_fields("slowdown_naive", time_ratio(part, CONV_NAIVE, CONV_NCHW))}


def _precisions(dev: torch.device, tf32: dict[str, bool] | None = None) -> tuple[str, str]:
    """The precision the convolutions and the matrix product run in: ``"tf32"`` on a GPU where
    cuDNN (convolutions) or cuBLAS (matrix products) may use TF32, else ``"fp32"``. ``tf32``:
    recorded flags (``{"cudnn": ..., "matmul": ...}``) instead of PyTorch's current ones."""
    if dev.type != "cuda":
        return "fp32", "fp32"
    if tf32 is None:
        tf32 = {"cudnn": torch.backends.cudnn.allow_tf32,
                "matmul": torch.backends.cuda.matmul.allow_tf32}
    return ("tf32" if tf32.get("cudnn") else "fp32", "tf32" if tf32.get("matmul") else "fp32")


def peak_figures(conv: Result, hw: HardwarePeak, *, matmul_size: int, matmul_gflops: float,
                 threads: int, precision: str = "fp32", matmul_precision: str = "fp32",
                 matmul_times: list[float] | None = None) -> Result:
    """The peak part from its measurements: every convolution of ``conv`` as a fraction of the
    hardware's peak ``hw`` (at ``precision``; with a 95% interval over the repeats,
    :func:`~cnnlab.perf.throughput_fraction`) and of the measured matrix product (medians).

    Returns:
        ``hardware`` (the peak's name, GFLOP/s per precision, ``source``, ``assumptions``),
        ``precision`` and ``hardware_gflops`` (the peak the convolutions are held to; ``None``
        where unknown), ``matmul_size``, ``matmul_gflops``, ``matmul_precision``,
        ``matmul_of_hardware`` (the matrix product against its own precision's peak),
        ``threads``, ``fraction_hardware`` (variant -> share of the hardware peak, ``None`` where
        unknown) with ``fraction_hardware_ci``, and ``fraction_matmul`` (variant -> GFLOP/s over
        the matrix product's).
    """
    peak = getattr(hw, f"{precision}_gflops")
    mm_peak = getattr(hw, f"{matmul_precision}_gflops")
    frac_hw: dict[str, float | None] = {}
    frac_ci: dict[str, list[float | None]] = {}
    for name in conv["variants"]:
        r = hardware_fraction(conv, {"hardware_gflops": peak}, name)
        frac_hw[name] = None if r is None else r.value
        frac_ci[name] = [None, None] if r is None else r.interval()
    out: Result = {
        "hardware": {"device": hw.device, "name": hw.name, "fp32_gflops": hw.fp32_gflops,
                     "tf32_gflops": hw.tf32_gflops, "bf16_gflops": hw.bf16_gflops,
                     "source": hw.source, "assumptions": list(hw.assumptions)},
        "precision": precision, "hardware_gflops": peak,
        "matmul_size": matmul_size, "matmul_gflops": matmul_gflops,
        "matmul_precision": matmul_precision,
        "matmul_of_hardware": matmul_gflops / mm_peak if mm_peak else None,
        "threads": threads,
        "fraction_hardware": frac_hw, "fraction_hardware_ci": frac_ci,
        "fraction_matmul": {name: v["gflops"] / matmul_gflops
                            for name, v in conv["variants"].items()},
    }
    if matmul_times is not None:
        out["matmul_times"] = matmul_times
    return out


def hardware_fraction(conv: Result, peak: Result, name: str) -> Ratio | None:
    """The share of the hardware peak (``peak``'s ``hardware_gflops``) that convolution
    ``name`` of ``conv`` reached, as a :class:`~cnnlab.perf.Ratio` over its repeats (what
    :func:`peak_figures` stores as ``fraction_hardware`` and its interval); ``None`` where the
    peak is unknown."""
    if not peak.get("hardware_gflops"):
        return None
    return throughput_fraction(conv["flops"], conv["variants"][name]["times"],
                               peak["hardware_gflops"])


def bench_peak(cfg: BenchConfig, conv: Result | None = None) -> Result:
    """How close each ``F.conv2d`` layout gets to the hardware's theoretical peak
    (:func:`cnnlab.hardware.hardware_peak`, which does not depend on anything measured here) and
    to the best a tuned library does, a large matrix product measured now.

    Args:
        cfg: sizes (``matmul_size``), repeats and threads (the CPU peak counts that many cores).
        conv: a :func:`bench_conv` result (measured now if not given).
    Returns:
        :func:`peak_figures`' fields, with ``matmul_times`` (seconds per product, each repeat).
    """
    conv = conv or bench_conv(cfg)
    dev = _device(cfg)
    with num_threads(cfg.threads):
        mm = matmul_timing(cfg.matmul_size, repeats=cfg.repeats, device=dev)
        threads = torch.get_num_threads()
        hw = hardware_peak(dev, threads=threads)
    precision, mm_precision = _precisions(dev)
    size = cfg.matmul_size
    return peak_figures(conv, hw, matmul_size=size, threads=threads, precision=precision,
                        matmul_gflops=gflops(matmul_flops(size, size, size), mm.median),
                        matmul_precision=mm_precision, matmul_times=list(mm.times))


# ----------------------------------------------------------------------------- separable


def bench_separable(cfg: BenchConfig) -> Result:
    """A standard ``k x k`` convolution vs a depthwise-separable one (depthwise ``k x k`` +
    pointwise ``1 x 1``), same input and output, channels_last, forward and backward.

    Returns:
        ``params``, ``flops`` and ``variants`` per kind, ``flop_ratio`` and ``param_ratio``
        (separable / standard) and ``time_ratio`` (separable / standard, paired repeats) with
        ``time_ratio_ci``: a FLOP ratio far below the time ratio means the separable layer does
        not run at the standard one's GFLOP/s.
    """
    dev = _device(cfg)
    n, c, o, h, k = cfg.batch, cfg.in_channels, cfg.out_channels, cfg.size, cfg.kernel
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        std = nn.Conv2d(c, o, k, padding=k // 2, bias=False)
        sep = DepthwiseSeparableConv2d(c, o, k, padding=k // 2, bias=False)
    fmt = torch.channels_last
    std, sep = std.to(dev, memory_format=fmt), sep.to(dev, memory_format=fmt)
    x = torch.randn(n, c, h, h, generator=_gen(2)).to(dev).contiguous(memory_format=fmt)
    x.requires_grad_(True)

    def fwd_bwd(layer: nn.Module) -> Callable[[], None]:
        def call() -> None:
            layer(x).sum().backward()
        return call

    with num_threads(cfg.threads):
        timings = time_interleaved({"standard": fwd_bwd(std), "separable": fwd_bwd(sep)},
                                   repeats=cfg.repeats, warmup=2, device=dev)
    flops = {"standard": 3 * conv2d_flops(c, o, k, h, h, batch=n),  # forward + 2x for backward
             "separable": 3 * (conv2d_flops(c, c, k, h, h, groups=c, batch=n)
                               + conv2d_flops(c, o, 1, h, h, batch=n))}
    part: Result = {"variants": _figures(timings, flops)}
    params = {"standard": count_params(std), "separable": count_params(sep)}
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": k},
            "params": params, "flops": flops, **part,
            "param_ratio": params["separable"] / params["standard"],
            "flop_ratio": flops["separable"] / flops["standard"],
            **_ratio_fields("time_ratio", time_ratio(part, "separable", "standard"))}


