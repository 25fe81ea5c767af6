"""The benchmark runner behind ``python -m cnnlab bench`` and the convolution chapter's tables.

Every figure is a median of interleaved repeats (:func:`cnnlab.perf.time_interleaved`): the
variants compared in one table are timed round-robin in the same run, so background load slows
them alike and the ratios stay meaningful on a shared machine. Parts:

* ``conv``: one convolution as im2col + matmul (:func:`cnnlab.techniques.conv2d`) and as
  ``F.conv2d`` in the default (NCHW) and channels_last (NHWC) layouts: time, GFLOP/s, ratios,
  and the im2col matrix's size against the input's.
* ``naive``: the same three plus the explicit loops of :func:`~cnnlab.techniques.conv2d_naive`
  on a tiny input.
* ``peak``: the measured peak (the larger of a big fp32 matrix product and the best convolution)
  and the fraction of it each ``F.conv2d`` layout reaches.
* ``separable``: a standard convolution against a depthwise-separable one with the same input and
  output: parameters, FLOPs and time (the FLOP ratio and the time ratio differ).
* ``step``: a full SmallCNN training step (forward, backward, SGD) in fp32 NCHW, fp32
  channels_last, bf16 autocast (where the hardware has bf16) and ``torch.compile``.
* ``threads``: the same step with 1 and 2 intra-op threads.
* ``ddp``: 1 process vs N data-parallel processes of 1 thread each (torchrun, gloo/NCCL), through
  :mod:`cnnlab.parallel`.

The module also holds the runners of the chapter's multi-seed comparisons (one-layer conv vs
dense, depthwise-separable SmallCNN, NCHW and bf16 training), usable as ``runner=`` of
:func:`cnnlab.experiments.sweep`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.parallel import max_param_diff
from cnnlab.perf import (
    Peak,
    bf16_support,
    cpu_model,
    gflops,
    hardware_summary,
    load_average,
    matmul_gflops,
    num_threads,
    synchronize,
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

__all__ = [
    "CONV_CL",
    "CONV_IM2COL",
    "CONV_NAIVE",
    "CONV_NCHW",
    "PARTS",
    "STEP_BF16",
    "STEP_CL",
    "STEP_COMPILE",
    "STEP_NCHW",
    "Autocast",
    "BenchConfig",
    "bench_conv",
    "bench_ddp",
    "bench_naive",
    "bench_peak",
    "bench_separable",
    "bench_threads",
    "bench_train_step",
    "conv_layer_model",
    "dense_layer_model",
    "format_part",
    "format_table",
    "goals",
    "layer_costs",
    "load_results",
    "run_bench",
    "run_bf16",
    "run_conv_layer",
    "run_dense_layer",
    "run_nchw",
    "run_separable",
    "save_results",
    "shift_image",
    "tf32",
    "translation_error",
]

PARTS: tuple[str, ...] = ("conv", "naive", "peak", "separable", "step", "threads", "ddp")

Result = dict[str, Any]


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


# ----------------------------------------------------------------------------- convolution

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


def _device_name(dev: torch.device) -> str:
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()


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


# ----------------------------------------------------------------------------- training step


class Autocast(nn.Module):
    """Run ``module``'s forward under ``torch.autocast`` and return float32 outputs.

    Wrapping the model (rather than the training loop) lets :func:`cnnlab.train.fit` train in
    mixed precision unchanged: autocast runs the convolutions and matrix products in ``dtype``,
    the backward pass follows the forward's precision, and the weights stay float32.
    """

    def __init__(self, module: nn.Module, *, dtype: torch.dtype = torch.bfloat16,
                 device_type: str | None = None) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.device_type = device_type

    def forward(self, x: Tensor) -> Tensor:
        kind = self.device_type or x.device.type
        with torch.autocast(device_type=kind, dtype=self.dtype):
            out = self.module(x)
        return out.float()


STEP_NCHW = "fp32 NCHW"
STEP_CL = "fp32 channels_last"
STEP_BF16 = "bf16 autocast (channels_last)"
STEP_COMPILE = "torch.compile (channels_last)"


def _step_fn(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[], Tensor]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _small_cnn(cfg: BenchConfig, dev: torch.device, *, channels_last: bool) -> nn.Module:
    from cnnlab.models import build_model

    model = build_model((1, cfg.step_size, cfg.step_size), 10, seed=0,
                        width=cfg.step_width).to(dev)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _step_data(cfg: BenchConfig, dev: torch.device) -> tuple[Tensor, Tensor]:
    g = _gen(3)
    x = torch.randn(cfg.step_batch, 1, cfg.step_size, cfg.step_size, generator=g).to(dev)
    y = torch.randint(0, 10, (cfg.step_batch,), generator=g).to(dev)
    return x, y


@contextmanager
def _quiet_compile() -> Iterator[None]:
    """Silence the compiler's expected chatter: a CUDA build of PyTorch on a machine without a
    GPU logs "No CUDA runtime is found" when inductor looks for a toolchain, which is true and
    harmless here. Real errors still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.utils.cpp_extension", "torch._inductor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def bench_train_step(cfg: BenchConfig, *, compile_check_steps: int = 3) -> Result:
    """A full SmallCNN training step (forward, cross-entropy, backward, SGD) in several forms,
    on ``cfg.step_threads`` intra-op threads (default 1: how the book's sweeps train).

    Variants, each with its own copy of the same initial model: fp32 NCHW, fp32 channels_last,
    bf16 autocast (skipped with the reason where :func:`cnnlab.perf.bf16_support` says no) and
    ``torch.compile`` of the channels_last model (skipped if ``cfg.compile`` is off or it fails).

    Returns:
        ``variants`` (name -> seconds, spread, times, ``speedup`` vs fp32 NCHW),
        ``skipped_variants`` (name -> reason), ``compile_seconds`` (the first compiled step
        minus an eager step),
        ``compile_max_param_diff`` (compiled vs eager parameters after a few identical steps),
        ``bf16_reason``.
    """
    dev = _device(cfg)
    x, y = _step_data(cfg, dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    skipped: dict[str, str] = {}
    fns: dict[str, Callable[[], Tensor]] = {}
    out: Result = {}
    threads = cfg.step_threads if cfg.step_threads is not None else cfg.threads
    with num_threads(threads):
        out["threads"] = torch.get_num_threads()
        fns[STEP_NCHW] = _step_fn(_small_cnn(cfg, dev, channels_last=False), x, y)
        fns[STEP_CL] = _step_fn(_small_cnn(cfg, dev, channels_last=True), x_cl, y)
        ok, reason = bf16_support(dev)
        out["bf16_reason"] = reason
        if ok:
            fns[STEP_BF16] = _step_fn(Autocast(_small_cnn(cfg, dev, channels_last=True)), x_cl, y)
        else:
            skipped[STEP_BF16] = reason
        if cfg.compile:
            try:
                out.update(_compile_variant(cfg, dev, x_cl, y, fns, compile_check_steps))
            except Exception as exc:  # noqa: BLE001 (no C++ compiler, unsupported platform...)
                skipped[STEP_COMPILE] = f"torch.compile failed: {type(exc).__name__}: {exc}"
        else:
            skipped[STEP_COMPILE] = "not requested (compile=False)"
        timings = time_interleaved(fns, repeats=cfg.repeats, warmup=2, device=dev)
    variants = _figures(timings, 0.0)
    base = variants[STEP_NCHW]["seconds"]
    for v in variants.values():
        del v["gflops"]
        v["speedup"] = base / v["seconds"]
    out.update(variants=variants, skipped_variants=skipped, device=dev.type,
               shape={"batch": cfg.step_batch, "width": cfg.step_width, "size": cfg.step_size})
    return out


def _fx_cache_counts() -> tuple[int, int]:
    """Inductor's on-disk graph cache so far in this process: (hits, misses). A hit reuses code
    compiled by an earlier run, so the compile time then is far below a cold compile's."""
    try:
        from torch._dynamo.utils import counters

        c = counters["inductor"]
        return int(c["fxgraph_cache_hit"]), int(c["fxgraph_cache_miss"])
    except Exception:  # noqa: BLE001 (a private counter: absent in some versions)
        return 0, 0


def _compile_variant(cfg: BenchConfig, dev: torch.device, x: Tensor, y: Tensor,
                     fns: dict[str, Callable[[], Tensor]], check_steps: int) -> Result:
    """Add the compiled step to ``fns``; return its compile time and its difference from eager."""
    check_steps = max(check_steps, 2)
    model = _small_cnn(cfg, dev, channels_last=True)
    ref = copy.deepcopy(model)  # the same initial weights, trained eagerly
    step_ref = _step_fn(ref, x, y)
    step_ref()
    synchronize(dev)
    t0 = time.perf_counter()
    step_ref()  # a warm eager step: what the first compiled step costs beyond compiling
    synchronize(dev)
    eager_s = time.perf_counter() - t0
    step = _step_fn(torch.compile(model), x, y)
    hits, misses = _fx_cache_counts()
    with _quiet_compile():
        synchronize(dev)
        t0 = time.perf_counter()
        step()  # compiles the forward and the backward graphs, then runs them
        synchronize(dev)
        first = time.perf_counter() - t0
        for _ in range(check_steps - 1):
            step()
    for _ in range(check_steps - 2):
        step_ref()
    fns[STEP_COMPILE] = step
    hits2, misses2 = _fx_cache_counts()
    return {"compile_seconds": max(first - eager_s, 0.0), "compile_first_step": first,
            "compile_cache_hits": hits2 - hits, "compile_cache_misses": misses2 - misses,
            "compile_max_param_diff": max_param_diff(ref, model),
            "compile_check_steps": check_steps}


def bench_threads(cfg: BenchConfig, counts: Sequence[int] = (1, 2)) -> Result:
    """The fp32 channels_last training step with each intra-op thread count, interleaved.

    Returns:
        ``variants`` (``"N thread(s)"`` -> seconds, ...), ``speedup`` (1 thread / most threads),
        or ``skipped`` with the reason on a GPU (the step runs on the GPU, not on CPU threads).
    """
    dev = _device(cfg)
    if dev.type == "cuda":
        return {"skipped": "intra-op CPU threads do not run the GPU's training step"}
    x, y = _step_data(cfg, dev)
    x = x.contiguous(memory_format=torch.channels_last)
    fns = {}
    for n in counts:
        step = _step_fn(_small_cnn(cfg, dev, channels_last=True), x, y)

        def call(step: Callable[[], Tensor] = step, n: int = n) -> None:
            with num_threads(n):
                step()

        fns[f"{n} thread{'s' if n != 1 else ''}"] = call
    variants = _figures(time_interleaved(fns, repeats=cfg.repeats, warmup=2), 0.0)
    names = list(variants)
    for v in variants.values():
        del v["gflops"]
    return {"variants": variants, "cores": os.cpu_count(),
            "speedup": variants[names[0]]["seconds"] / variants[names[-1]]["seconds"]}


# ----------------------------------------------------------------------------- data-parallel


def bench_ddp(cfg: BenchConfig, *, check: bool = True) -> Result:
    """1 process vs ``cfg.ddp_procs`` data-parallel processes, one thread each, in one torchrun
    launch of :mod:`cnnlab.parallel` with ``--bench`` (interleaved epochs, medians).

    Returns:
        The launch's figures (``bench`` -> single/parallel medians and ``speedup``;
        ``max_param_diff`` with ``check``), ``command`` and ``launch_seconds`` (start-up
        included), or ``skipped`` with the reason (e.g. fewer GPUs than processes).
    Raises:
        RuntimeError: the launch failed; the message holds the end of its output.
    """
    from cnnlab.data import available

    dev = _device(cfg)
    if dev.type == "cuda" and torch.cuda.device_count() < cfg.ddp_procs:
        return {"skipped": f"{cfg.ddp_procs} processes need {cfg.ddp_procs} GPUs (NCCL runs "
                           f"one process per GPU); this machine has {torch.cuda.device_count()}"}
    dataset = cfg.ddp_dataset if available(cfg.ddp_dataset) else "digits"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={cfg.ddp_procs}", "-m", "cnnlab.parallel",
               "--dataset", dataset, "--train-size", str(cfg.ddp_train_size),
               "--width", str(cfg.ddp_width), "--epochs", "1", "--threads", "1",
               "--device", dev.type, "--bench", str(cfg.ddp_rounds), "--json", str(out)]
        if check:
            cmd.append("--check")
        env = dict(os.environ, OMP_NUM_THREADS="1", CNNLAB_PROGRESS="0")
        src = str(Path(__file__).resolve().parents[1])  # cnnlab importable in the workers
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        load_before = load_average()
        start = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env,
                              timeout=cfg.ddp_timeout)
        launch = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"the data-parallel benchmark failed (exit {proc.returncode}):\n"
                               f"{tail}")
        result = json.loads(out.read_text())
    shown = ["python", "-m", "torch.distributed.run"] + cmd[3:-2]  # without the temp file
    return {**result, "dataset": dataset, "command": " ".join(shown), "launch_seconds": launch,
            "load_average": [load_before, load_average()]}


# ----------------------------------------------------------------------------- the whole run


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TensorFloat-32 in CUDA matrix products and cuDNN convolutions for the
    block, then restore PyTorch's settings. TF32 keeps fp32's range with a 10-bit mantissa and
    runs on the tensor cores: several times faster, no longer true fp32. No effect on a CPU."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def run_bench(cfg: BenchConfig, parts: Sequence[str] = PARTS,
              progress: Callable[[str], None] | None = None) -> Result:
    """Run the chosen parts; a part that cannot run here is recorded as ``{"skipped": reason}``.

    Returns:
        A JSON-ready dict: ``hardware`` (cpu, cores, threads, torch, device name), ``config``
        and one entry per part.
    """
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"Unknown benchmark part(s): {unknown} (choose from {list(PARTS)})")
    dev = _device(cfg)
    with num_threads(cfg.threads):
        threads = torch.get_num_threads()
    res: Result = {
        "hardware": {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads,
                     "torch": torch.__version__.split("+")[0], "device": dev.type,
                     "device_name": _device_name(dev), "summary": hardware_summary(),
                     "load_average": [load_average()]},
        "config": asdict(cfg), "parts": list(parts),
    }
    if dev.type == "cuda":
        res["hardware"]["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                   "cudnn": torch.backends.cudnn.allow_tf32}
    steps: dict[str, Callable[[], Result]] = {
        "conv": lambda: bench_conv(cfg),
        "naive": lambda: bench_naive(cfg),
        "peak": lambda: bench_peak(cfg, res.get("conv") if "skipped" not in res.get(
            "conv", {"skipped": 1}) else None),
        "separable": lambda: bench_separable(cfg),
        "step": lambda: bench_train_step(cfg),
        "threads": lambda: bench_threads(cfg),
        "ddp": lambda: bench_ddp(cfg),
    }
    for part in PARTS:
        if part not in parts:
            continue
        if progress:
            progress(part)
        start = time.perf_counter()
        try:
            res[part] = steps[part]()
        except Exception as exc:  # noqa: BLE001 (a part that cannot run here is reported)
            res[part] = {"skipped": f"{type(exc).__name__}: {exc}"}
        res[part]["wall_seconds"] = time.perf_counter() - start
    res["hardware"]["load_average"].append(load_average())
    return res


def save_results(results: Result, path: str | os.PathLike) -> None:
    """Write :func:`run_bench`'s results as JSON (NaN written as null)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(clean(results), indent=2) + "\n")


def load_results(path: str | os.PathLike) -> Result | None:
    """Read results saved by :func:`save_results`; ``None`` if the file does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    return json.loads(p.read_text())


# ----------------------------------------------------------------------------- the table


def _ms(s: float) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def _num(v: float | None, fmt: str = ".3g") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)


def _rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return ["  " + fmt.format(*header), *("  " + fmt.format(*r) for r in rows)]


def _fmt_conv(conv: Result, res: Result) -> list[str]:
    s = conv["shape"]
    frac = (res.get("peak") or {}).get("fraction", {})
    base = conv["variants"][CONV_NCHW]["seconds"]
    header = ["variant", "time", "GFLOP/s", "time vs NCHW", *(["of peak"] if frac else []),
              "spread"]
    rows = [[name, _ms(v["seconds"]), _num(v["gflops"], ".1f"), f"{v['seconds'] / base:.2f}x",
             *([f"{frac[name]:.0%}" if name in frac else "n/a"] if frac else []),
             f"{v['spread']:.0%}"] for name, v in conv["variants"].items()]
    return [(f"[conv] {s['in_channels']}->{s['out_channels']} channels, {s['kernel']}x"
             f"{s['kernel']}, on {s['batch']}x{s['in_channels']}x{s['size']}x{s['size']} "
             f"({conv['flops'] / 1e9:.3g} GFLOP per call)"),
            *_rows(header, rows),
            (f"  im2col matrix {conv['im2col_bytes'] / 2**20:.3g} MiB = "
             f"{conv['im2col_ratio']:.2f}x the input; max |im2col - F.conv2d| = "
             f"{conv['max_abs_diff']:.1e}")]


def _fmt_naive(naive: Result, res: Result) -> list[str]:
    s = naive["shape"]
    base = naive["variants"][CONV_NCHW]["seconds"]
    rows = [[name, _ms(v["seconds"]), _num(v["gflops"], ".3g"), f"{v['seconds'] / base:.3g}x",
             f"{v['max_abs_diff']:.1e}"] for name, v in naive["variants"].items()]
    return [(f"[naive] on the CPU, tiny input {s['batch']}x{s['in_channels']}x{s['size']}x"
             f"{s['size']} -> {s['out_channels']} channels"),
            *_rows(["variant", "time", "GFLOP/s", "time vs F.conv2d", "max |diff|"], rows)]


def _fmt_peak(peak: Result, res: Result) -> list[str]:
    hw = res.get("hardware", {})
    where = hw["device_name"] if hw.get("device") == "cuda" else f"{peak['threads']} thread(s)"
    return [(f"[peak] {where}: fp32 matmul {peak['matmul_size']}^3 "
             f"{peak['matmul_gflops']:.1f} GFLOP/s, best conv ({peak['conv_name']}) "
             f"{peak['conv_gflops']:.1f} GFLOP/s -> peak {peak['peak_gflops']:.1f} GFLOP/s "
             f"(set by {peak['peak_source']})"),
            *(f"  {name}: {f:.0%} of peak" for name, f in peak["fraction"].items())]


def _fmt_separable(sep: Result, res: Result) -> list[str]:
    s = sep["shape"]
    rows = [[name, f"{sep['params'][name]:,}", f"{sep['flops'][name] / 1e9:.3g}",
             _ms(v["seconds"]), _num(v["gflops"], ".1f")] for name, v in sep["variants"].items()]
    return [(f"[separable] {s['in_channels']}->{s['out_channels']}, {s['kernel']}x{s['kernel']} "
             f"on {s['batch']}x{s['in_channels']}x{s['size']}x{s['size']}, forward+backward, "
             "channels_last"),
            *_rows(["layer", "params", "GFLOP", "time", "GFLOP/s"], rows),
            (f"  separable / standard: params {sep['param_ratio']:.2f}x, FLOPs "
             f"{sep['flop_ratio']:.2f}x, time {sep['time_ratio']:.2f}x")]


def _fmt_step(step: Result, res: Result) -> list[str]:
    s = step["shape"]
    rows = [[name, _ms(v["seconds"]), f"{v['speedup']:.2f}x", f"{v['spread']:.0%}"]
            for name, v in step["variants"].items()]
    cpu = "threads" in step and step.get("device") != "cuda"
    on = f", {step['threads']} thread(s)" if cpu else ""
    lines = [(f"[step] SmallCNN width {s['width']}, batch {s['batch']} of {s['size']}x"
              f"{s['size']}: forward + backward + SGD{on}"),
             *_rows(["variant", "time/step", "speed-up vs NCHW", "spread"], rows)]
    if "compile_seconds" in step:
        hits = step.get("compile_cache_hits", 0)
        cached = (f" ({hits} of {hits + step.get('compile_cache_misses', 0)} graphs from "
                  "inductor's on-disk cache)" if hits else "")
        lines.append(f"  torch.compile: {step['compile_seconds']:.1f} s to compile{cached}; max "
                     f"|param diff| vs eager after {step['compile_check_steps']} steps "
                     f"{step['compile_max_param_diff']:.1e}")
    lines += [f"  skipped {name}: {why}" for name, why in step["skipped_variants"].items()]
    return lines


def _fmt_threads(thr: Result, res: Result) -> list[str]:
    rows = [[name, _ms(v["seconds"]), f"{v['spread']:.0%}"] for name, v in thr["variants"].items()]
    return [f"[threads] the fp32 channels_last step, intra-op threads ({thr['cores']} cores)",
            *_rows(["threads", "time/step", "spread"], rows),
            f"  speed-up: {thr['speedup']:.2f}x"]


def _fmt_ddp(ddp: Result, res: Result) -> list[str]:
    b, n, c = ddp["bench"], ddp["world_size"], ddp["config"]
    lines = [(f"[ddp] {ddp['dataset']}, {c['train_size']} images/epoch, global batch "
              f"{c['batch_size']}, {ddp['backend']}, {len(b['single_times'])} interleaved rounds"),
             *_rows(["setup", "s/epoch"], [["1 process x 1 thread", f"{b['single_median']:.3g}"],
                                          [f"{n} processes x 1 thread",
                                           f"{b['parallel_median']:.3g}"]]),
             (f"  speed-up {b['speedup']:.2f}x; the whole launch, start-up included, took "
              f"{ddp['launch_seconds']:.1f} s")]
    if "max_param_diff" in ddp:
        lines.append(f"  --check: max |param diff| vs 1 process {ddp['max_param_diff']:.1e}")
    note = _load_note(ddp.get("load_average"), os.cpu_count())
    if note:
        lines.append("  " + note[2:])
    return lines


_FORMATTERS = {"conv": _fmt_conv, "naive": _fmt_naive, "peak": _fmt_peak,
               "separable": _fmt_separable, "step": _fmt_step, "threads": _fmt_threads,
               "ddp": _fmt_ddp}


def _ok(part: Result | None) -> bool:
    return bool(part) and "skipped" not in part


def goals(res: Result) -> list[tuple[str, float | None, bool | None]]:
    """The benchmark goals: ``(description, measured value, met)``; ``None`` where not measured.

    channels_last ``F.conv2d`` >= 60% of the measured peak; the im2col ``conv2d`` forward within
    3x of ``F.conv2d`` (NCHW); 2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1.
    """
    peak, conv, ddp = res.get("peak"), res.get("conv"), res.get("ddp")
    cl = peak["fraction"].get(CONV_CL) if _ok(peak) else None
    im2col = conv["ratio_im2col"] if _ok(conv) else None
    speedup = ddp["bench"]["speedup"] if _ok(ddp) else None
    return [
        ("channels_last F.conv2d >= 60% of the measured peak", cl,
         None if cl is None else cl >= 0.6),
        ("im2col conv2d forward within 3x of F.conv2d (NCHW)", im2col,
         None if im2col is None else im2col <= 3.0),
        ("2 data-parallel processes x 1 thread >= 1.4x faster than 1 x 1", speedup,
         None if speedup is None else speedup >= 1.4),
    ]


def _load_note(loads: Sequence[float | None] | None, cores: int | None) -> str:
    known = [x for x in (loads or []) if x is not None]
    if not known:
        return ""
    busy = cores is not None and max(known) > cores
    return (f"; load average {' -> '.join(f'{x:.1f}' for x in known)} on {cores} cores "
            + ("(above the core count: other jobs slowed the timings)" if busy
               else "(not above the core count)"))


def format_part(part: str, result: Result) -> str:
    """One part's section of :func:`format_table`, from that part's result alone (e.g.
    ``format_part("conv", bench_conv(cfg))``)."""
    if part not in _FORMATTERS:
        raise ValueError(f"Unknown benchmark part: {part!r} (choose from {list(PARTS)})")
    if not _ok(result):
        return f"[{part}] skipped: {result.get('skipped', 'not run')}"
    return "\n".join(_FORMATTERS[part](result, {}))


def format_table(res: Result, parts: Sequence[str] | None = None, *,
                 header: bool = True) -> str:
    """The benchmark as text: absolute figures and ratios side by side, then the goals.

    Args:
        res: :func:`run_bench`'s results (or a loaded JSON file of them).
        parts: the sections to show (default: every part in ``res``, then the goals).
        header: start with the hardware line and the repeat count.
    """
    hw, cfg = res["hardware"], res["config"]
    lines = []
    if header:
        lines += [(f"CNN Lab benchmark on {hw['device_name']} ({hw['device']}); CPU "
                   f"{hw['cpu']}, {hw['cores']} cores, {hw['threads']} torch threads; "
                   f"PyTorch {hw['torch']}"),
                  f"every time is the median of {cfg['repeats']} interleaved repeats"
                  + _load_note(hw.get("load_average"), hw.get("cores"))]
    show = [p for p in (parts or PARTS) if p in res]
    for part in show:
        lines.append("")
        if _ok(res[part]):
            lines += _FORMATTERS[part](res[part], res)
        else:
            lines.append(f"[{part}] skipped: {res[part].get('skipped', 'not run')}")
    if parts is None:
        lines += ["", "goals"]
        for text, value, met in goals(res):
            if value is None:
                lines.append(f"  {text}: not measured")
            else:
                shown = f"{value:.0%}" if "peak" in text else f"{value:.2f}x"
                lines.append(f"  {text}: {shown} -> {'met' if met else 'MISSED'}")
    return "\n".join(lines).lstrip("\n")


# ----------------------------------------------------------------------------- chapter runners


def layer_costs(input_shape: tuple[int, int, int], channels: int, *,
                kernel_size: int = 3) -> Result:
    """Parameters and FLOPs (per image) of a ``k x k`` convolution with ``channels`` outputs and
    same padding, and of the fully connected layer with the same input and output sizes."""
    c, h, w = input_shape
    conv_params = channels * c * kernel_size ** 2 + channels
    n_in, n_out = c * h * w, channels * h * w
    return {"conv_params": conv_params,
            "dense_params": n_in * n_out + n_out,
            "conv_flops": conv2d_flops(c, channels, kernel_size, h, w),
            "dense_flops": 2 * n_in * n_out,
            "in_features": n_in, "out_features": n_out}


def conv_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                     kernel_size: int = 3, seed: int = 0) -> nn.Module:
    """One convolution (same padding) -> ReLU -> flatten -> linear classifier."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(c, channels, kernel_size, padding=kernel_size // 2),  # (B, ch, H, W)
            nn.ReLU(), nn.Flatten(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))


def dense_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                      seed: int = 0) -> nn.Module:
    """The same as :func:`conv_layer_model` with the convolution replaced by a fully connected
    layer of the same input and output sizes (``C*H*W -> channels*H*W``): no sharing."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(),  # (B, C*H*W)
            nn.Linear(c * h * w, channels * h * w), nn.ReLU(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))


def shift_image(x: Tensor, dy: int, dx: int, *, fill: float = 0.0) -> Tensor:
    """Shift images ``(..., H, W)`` by ``(dy, dx)`` pixels (down, right), filling the uncovered
    pixels with ``fill`` (no wrap-around)."""
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def translation_error(layer: Callable[[Tensor], Tensor], x: Tensor, *, shift: int = 1,
                      out_shape: tuple[int, int, int] | None = None, border: int = 2) -> float:
    """How far ``layer`` is from translation equivariance: ``max |layer(shift(x)) -
    shift(layer(x))|`` over the interior (``border`` pixels from the edges are ignored, where
    shifted-in zeros and padding differ anyway), relative to ``max |layer(x)|``.

    A convolution gives ~0 (shift the input, the feature map shifts); a fully connected layer
    does not. ``out_shape`` ``(C, H, W)`` reshapes a flat output into a map.
    """
    with torch.no_grad():
        a = layer(shift_image(x, shift, shift))
        b = layer(x)
        if out_shape is not None:
            a, b = a.reshape(-1, *out_shape), b.reshape(-1, *out_shape)
        b = shift_image(b, shift, shift)
        m = border + shift
        err = (a - b)[..., m:-m, m:-m].abs().max()
        return float(err / b.abs().max().clamp_min(1e-12))


def _train_row(config: Any, seed: int, model: nn.Module, data: Any, **fit_kwargs: Any) -> Result:
    """Train with :func:`cnnlab.train.fit`; the row of :func:`cnnlab.experiments.run` plus
    ``params`` and ``shift_acc``: test accuracy on the test images shifted one pixel to the right
    (filled with the background value), which asks how much the model relies on where a pattern
    is."""
    from cnnlab.train import evaluate, fit

    hist = fit(model, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
               optimizer=config.optimizer, momentum=config.momentum,
               weight_decay=config.weight_decay, seed=seed, progress=False, **fit_kwargs)
    x_test, y_test = data.test
    shifted = shift_image(x_test, 0, 1, fill=float(x_test.amin()))
    _, shift_acc = evaluate(model, shifted, y_test)
    return {**config.to_dict(), "seed": seed, "test_acc": hist.test_acc,
            "val_acc": hist.val_acc[-1], "train_acc": hist.train_acc[-1],
            "train_loss": hist.train_loss[-1], "gap": hist.train_acc[-1] - hist.test_acc,
            "diverged": hist.diverged, "train_time": hist.train_time,
            "history": hist.to_dict(), "params": count_params(model), "shift_acc": shift_acc}


def _data(config: Any, seed: int) -> Any:
    from cnnlab.experiments import load_for

    return load_for(config, seed)


def run_conv_layer(config: Any, seed: int) -> Result:
    """Sweep runner: :func:`conv_layer_model` with ``config.width`` channels."""
    data = _data(config, seed)
    model = conv_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)
    return _train_row(config, seed, model, data)


def run_dense_layer(config: Any, seed: int) -> Result:
    """Sweep runner: :func:`dense_layer_model` with ``config.width`` output maps."""
    data = _data(config, seed)
    model = dense_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)
    return _train_row(config, seed, model, data)


def _small(config: Any, seed: int, data: Any, **kw: Any) -> nn.Module:
    from cnnlab.models import build_model

    return build_model(data.input_shape, data.num_classes, seed=seed, width=config.width,
                       batch_norm=config.batch_norm, dropout=config.dropout, **kw)


def run_separable(config: Any, seed: int) -> Result:
    """Sweep runner: ``SmallCNN(separable=True)`` (depthwise-separable second convolution)."""
    data = _data(config, seed)
    return _train_row(config, seed, _small(config, seed, data, separable=True), data)


def run_nchw(config: Any, seed: int) -> Result:
    """Sweep runner: SmallCNN trained in the default NCHW layout (``fit(channels_last=False)``)."""
    data = _data(config, seed)
    return _train_row(config, seed, _small(config, seed, data), data, channels_last=False)


def run_bf16(config: Any, seed: int) -> Result:
    """Sweep runner: SmallCNN trained under bf16 autocast (:class:`Autocast`), channels_last."""
    data = _data(config, seed)
    model = Autocast(_small(config, seed, data))
    return _train_row(config, seed, model, data)
