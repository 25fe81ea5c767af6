"""The whole benchmark run: the parts in order, a part that cannot run recorded as skipped,
results saved and read as JSON, and results saved by an earlier version brought to the current
format (:func:`update_results`)."""


from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cnnlab.bench.conv import (
    CONV_CL,
    CONV_IM2COL,
    CONV_NAIVE,
    CONV_NCHW,
    _precisions,
    bench_conv,
    bench_naive,
    bench_peak,
    bench_separable,
        peak_figures,
)
from cnnlab.bench.core import (
    DDP_PARALLEL,
    DDP_SINGLE,
    BenchConfig,
    Result,
    _device,
    _device_name,
    _ratio_fields,
    time_ratio,
)
from cnnlab.bench.ddp import bench_ddp
from cnnlab.bench.step import STEP_NCHW, bench_threads, bench_train_step, step_flops
from cnnlab.hardware import HardwarePeak, gpu_peak
from cnnlab.perf import (
    cpu_model,
    hardware_summary,
    load_average,
    num_threads,
)

PARTS: tuple[str, ...] = ("conv", "naive", "peak", "separable", "step", "threads", "ddp")


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




def _ok(part: Any) -> bool:
    return isinstance(part, dict) and bool(part) and "skipped" not in part


def update_results(results: Result) -> Result:
    """A copy of saved results in the current format, for results saved by an earlier version
    (``book/data/bench_cuda*.json``). Every part keeps its raw repeats, so what is missing is
    computed from them:

    * each reported ratio as the geometric mean of the paired repeats with its 95% interval
      (``<key>_ci``; :func:`~cnnlab.bench.core.time_ratio`);
    * the peak part against the hardware's peak: for a GPU, the data-sheet figure of the
      stored device name (:func:`~cnnlab.hardware.gpu_peak`), at the precision the
      stored TF32 flags allowed; a CPU's peak cannot be known from a saved result (``None``);
    * the training step's FLOPs and GFLOP/s.

    Figures already there are kept; results in the current format come back unchanged, and so
    do parts without raw repeats (hand-made results).
    """
    res = copy.deepcopy(results)
    hw = res.get("hardware", {})
    conv = res.get("conv")
    if _ok(conv) and "variants" in conv and "ratio_im2col_ci" not in conv:
        conv.update(_ratio_fields("ratio_im2col", time_ratio(conv, CONV_IM2COL, CONV_NCHW)),
                    **_ratio_fields("ratio_im2col_cl", time_ratio(conv, CONV_IM2COL, CONV_CL)),
                    **_ratio_fields("speedup_cl", time_ratio(conv, CONV_NCHW, CONV_CL)))
    naive = res.get("naive")
    if _ok(naive) and "variants" in naive and "slowdown_naive_ci" not in naive:
        naive.update(_ratio_fields("slowdown_naive", time_ratio(naive, CONV_NAIVE, CONV_NCHW)))
    peak = res.get("peak")
    if (_ok(peak) and "fraction_hardware" not in peak and "matmul_gflops" in peak and _ok(conv)
            and "variants" in conv):
        name = hw.get("device_name", "")
        if hw.get("device") == "cuda":
            sheet = gpu_peak(name)
        else:
            sheet = HardwarePeak("cpu", name, None, source="not known from a saved result")
        dev = torch.device("cuda" if hw.get("device") == "cuda" else "cpu")
        precision, mm_precision = _precisions(dev, hw.get("tf32") or {})
        res["peak"] = peak_figures(conv, sheet, matmul_size=peak["matmul_size"],
                                   matmul_gflops=peak["matmul_gflops"],
                                   threads=peak.get("threads", hw.get("threads", 1)),
                                   precision=precision, matmul_precision=mm_precision)
    sep = res.get("separable")
    if _ok(sep) and "variants" in sep and "time_ratio_ci" not in sep:
        sep.update(_ratio_fields("time_ratio", time_ratio(sep, "separable", "standard")))
    step = res.get("step")
    if _ok(step) and "variants" in step and "shape" in step:
        if "flops" not in step:
            step["flops"] = step_flops(step["shape"])
        for name, v in step["variants"].items():
            v.setdefault("gflops", step["flops"] / v["seconds"] / 1e9)
            if "speedup_ci" not in v:
                v.update(_ratio_fields("speedup", time_ratio(step, STEP_NCHW, name)))
    thr = res.get("threads")
    if _ok(thr) and "variants" in thr and "speedup_ci" not in thr:
        names = list(thr["variants"])
        thr.update(_ratio_fields("speedup", time_ratio(thr, names[0], names[-1])))
    ddp = res.get("ddp")
    if _ok(ddp) and "bench" in ddp and "speedup_ci" not in ddp:
        ddp.update(_ratio_fields("speedup", time_ratio(ddp, DDP_SINGLE, DDP_PARALLEL)))
    return res
