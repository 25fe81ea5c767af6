"""The training-step parts: a SmallCNN step in fp32 NCHW, channels_last, bf16 autocast and
``torch.compile``, and the same step with 1 and 2 threads."""


from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.bench.core import (
    BenchConfig,
    Result,
    _device,
    _figures,
    _gen,
    _ratio_fields,
    time_ratio,
)
from cnnlab.models import build_model
from cnnlab.parallel import max_param_diff
from cnnlab.perf import (
    bf16_support,
    model_flops,
    num_threads,
    synchronize,
    time_interleaved,
)

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
        ``variants`` (name -> seconds, spread, times, gflops at the median time, ``speedup`` vs
        fp32 NCHW: the paired repeats' geometric mean, with ``speedup_ci``), ``flops`` (per
        step, :func:`step_flops`),
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
    shape = {"batch": cfg.step_batch, "width": cfg.step_width, "size": cfg.step_size}
    flops = step_flops(shape)
    part: Result = {"variants": _figures(timings, flops)}
    for name, v in part["variants"].items():
        v.update(_ratio_fields("speedup", time_ratio(part, STEP_NCHW, name)))
    out.update(variants=part["variants"], skipped_variants=skipped, device=dev.type,
               shape=shape, flops=flops)
    return out


def step_flops(shape: dict[str, int]) -> int:
    """FLOPs of one training step of the step part's SmallCNN (``shape``: ``batch``, ``width``,
    ``size``), counted as 3 forward passes: the backward pass computes two products per layer
    (the gradients of the input and of the weights), each as costly as the forward one (this
    counts the first layer's input gradient, which is not needed: a slight overcount). The
    SGD update and element-wise work are not counted."""
    model = build_model((1, shape["size"], shape["size"]), 10, width=shape["width"])
    return 3 * model_flops(model, torch.zeros(shape["batch"], 1, shape["size"], shape["size"]))


def _fx_cache_counts() -> tuple[int, int]:
    """Inductor's on-disk graph cache so far in this process: (hits, misses). A hit reuses code
    compiled by an earlier run, so the compile time then is far below a cold compile's."""
    try:
        # Here, not at the top: a private module (it may be missing or move), and importing it
        # pulls in TorchDynamo (~1.4 s); only the compile variant reads it.
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
        ``variants`` (``"N thread(s)"`` -> seconds, ...), ``speedup`` (the time with the fewest
        threads / with the most, paired repeats) with ``speedup_ci``, or ``skipped`` with the
        reason on a GPU (the step runs on the GPU, not on CPU threads).
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
    part: Result = {"variants": _figures(time_interleaved(fns, repeats=cfg.repeats, warmup=2),
                                         0.0)}
    names = list(part["variants"])
    for v in part["variants"].values():
        del v["gflops"]
    return {**part, "cores": os.cpu_count(),
            **_ratio_fields("speedup", time_ratio(part, names[0], names[-1]))}


