"""The convolution parts: im2col against ``F.conv2d`` in both layouts, the naive loops, the
fraction of the peak each layout reaches, and the depthwise-separable layer."""


from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.bench.core import BenchConfig, Result, _device, _device_name, _figures, _gen
from cnnlab.perf import (
    Peak,
    matmul_gflops,
    num_threads,
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
        ``shape`` (N, C_in, C_out, H, k), ``flops``, ``variants`` (name -> seconds, gflops,
        spread, times), ``ratio_im2col`` (im2col time / NCHW F.conv2d time), ``speedup_cl``
        (NCHW time / channels_last time), ``max_abs_diff`` (im2col vs F.conv2d),
        ``input_bytes``, ``im2col_bytes`` and ``im2col_ratio``.
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
    variants = _figures(timings, flops)
    t = {name: v["seconds"] for name, v in variants.items()}
    cols = im2col_bytes(c, k, h, h, batch=n)
    inp = x.numel() * x.element_size()
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": k},
            "flops": flops, "variants": variants,
            "ratio_im2col": t[CONV_IM2COL] / t[CONV_NCHW],
            "ratio_im2col_cl": t[CONV_IM2COL] / t[CONV_CL],
            "speedup_cl": t[CONV_NCHW] / t[CONV_CL],
            "max_abs_diff": diff, "input_bytes": inp, "im2col_bytes": cols,
            "im2col_ratio": cols / inp}


def bench_naive(cfg: BenchConfig, *, shape: tuple[int, int, int, int] = (1, 3, 8, 4)) -> Result:
    """The explicit loops against im2col and ``F.conv2d`` on a tiny input (``shape`` is
    ``(N, C_in, H, C_out)``; 3x3 filters, padding 1): outputs and GFLOP/s of each.

    Always on one CPU thread: a tiny input gives threads nothing to split, only barriers to wait
    at (on a busy machine a second thread makes every call many times slower)."""
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
    base = variants[CONV_NCHW]["seconds"]
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": 3},
            "flops": flops, "variants": variants,
            "slowdown_naive": variants[CONV_NAIVE]["seconds"] / base}


def bench_peak(cfg: BenchConfig, conv: Result | None = None) -> Result:
    """The measured peak and the fraction of it each ``F.conv2d`` layout reaches.

    Args:
        cfg: sizes (``matmul_size``) and repeats.
        conv: a :func:`bench_conv` result (measured now if not given).
    Returns:
        ``matmul_gflops``, ``conv_gflops`` and ``conv_name`` (the best convolution),
        ``peak_gflops``, ``peak_source``, ``fraction`` (variant -> share of the peak).
    """
    conv = conv or bench_conv(cfg)
    dev = _device(cfg)
    with num_threads(cfg.threads):
        mm = matmul_gflops(cfg.matmul_size, repeats=cfg.repeats, device=dev)
        threads = torch.get_num_threads()
    best = max(conv["variants"].items(), key=lambda kv: kv[1]["gflops"])
    peak = Peak(matmul_gflops=mm, conv_gflops=best[1]["gflops"], conv_name=best[0],
                threads=threads, device=_device_name(dev))
    return {"matmul_size": cfg.matmul_size, "matmul_gflops": mm,
            "conv_gflops": peak.conv_gflops, "conv_name": peak.conv_name,
            "peak_gflops": peak.gflops, "peak_source": peak.source, "threads": threads,
            "fraction": {name: peak.fraction(v["gflops"])
                         for name, v in conv["variants"].items()}}



# ----------------------------------------------------------------------------- separable


def bench_separable(cfg: BenchConfig) -> Result:
    """A standard ``k x k`` convolution vs a depthwise-separable one (depthwise ``k x k`` +
    pointwise ``1 x 1``), same input and output, channels_last, forward and backward.

    Returns:
        ``params``, ``flops`` and ``variants`` per kind, ``flop_ratio`` and ``param_ratio``
        (separable / standard) and ``time_ratio`` (separable / standard): a FLOP ratio far below
        the time ratio means the separable layer does not run at the standard one's GFLOP/s.
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
    variants = _figures(timings, flops)
    params = {"standard": count_params(std), "separable": count_params(sep)}
    return {"shape": {"batch": n, "in_channels": c, "out_channels": o, "size": h, "kernel": k},
            "params": params, "flops": flops, "variants": variants,
            "param_ratio": params["separable"] / params["standard"],
            "flop_ratio": flops["separable"] / flops["standard"],
            "time_ratio": variants["separable"]["seconds"] / variants["standard"]["seconds"]}


