"""The whole benchmark run: the parts in order, a part that cannot run recorded as skipped,
results saved and read as JSON."""


from __future__ import annotations

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

from cnnlab.bench.conv import bench_conv, bench_naive, bench_peak, bench_separable
from cnnlab.bench.core import BenchConfig, Result, _device, _device_name
from cnnlab.bench.ddp import bench_ddp
from cnnlab.bench.step import bench_threads, bench_train_step
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


