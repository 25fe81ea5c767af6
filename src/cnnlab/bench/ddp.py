"""The data-parallel part: 1 process against N processes of one thread each, run by torchrun."""


from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from cnnlab.bench.core import (
    DDP_PARALLEL,
    DDP_SINGLE,
    DDP_THREADS,
    BenchConfig,
    Result,
    _device,
    _ratio_fields,
    time_ratio,
)
from cnnlab.data import available
from cnnlab.models import build_model
from cnnlab.parallel import time_to_target
from cnnlab.perf import Ratio, load_average
from cnnlab.perf import time_ratio as _time_ratio

# ----------------------------------------------------------------------------- data-parallel

# (C, H, W) of each dataset's images: the size of the model, hence of the gradient all-reduced
_INPUT_SHAPES = {"digits": (1, 8, 8), "fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28),
                 "cifar10": (3, 32, 32)}


def grad_bytes(dataset: str, width: int) -> int:
    """Bytes of the gradient one data-parallel step all-reduces: one fp32 value per parameter of
    the SmallCNN of ``width`` that :mod:`cnnlab.parallel` trains on ``dataset``, whatever the
    batch size."""
    model = build_model(_INPUT_SHAPES[dataset], 10, width=width)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _stop_group(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """End ``proc``'s process group (it was started with ``start_new_session``): SIGTERM, then
    SIGKILL after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break  # the group is gone
        try:
            proc.wait(grace)
            time.sleep(0.2)  # its workers get the same signal; give them a moment to exit
        except subprocess.TimeoutExpired:
            continue
    proc.wait()


def _size_figures(size: Result) -> Result:
    """One size of the scaling curve, as ``bench_ddp`` reports it: what was timed, the raw
    rounds under ``bench`` (so :func:`~cnnlab.bench.core.time_ratio` works on the entry) and
    each speed-up of the paired rounds with its interval."""
    out = {k: size.get(k) for k in ("width", "batch_per_rank", "global_batch",
                                    "steps_per_epoch", "grad_bytes", "flops_per_step",
                                    "allreduce_seconds")}
    out["bench"] = size
    out.update(_ratio_fields("speedup", time_ratio(out, DDP_SINGLE, DDP_PARALLEL)))
    if f"{DDP_THREADS}_times" in size:
        out.update(_ratio_fields("speedup_threads", time_ratio(out, DDP_THREADS, DDP_PARALLEL)))
        out.update(_ratio_fields("threads_speedup", time_ratio(out, DDP_SINGLE, DDP_THREADS)))
    return out


def _startup(startup: Result | None, launched_unix: float) -> Result:
    """Where the seconds before the first step went, from the worker's clock readings (rank 0):
    ``launcher_seconds`` (torchrun starting Python and PyTorch, then the worker process),
    ``import_seconds`` (the worker importing PyTorch and cnnlab), ``init_seconds`` (connecting
    the workers: ``init_process_group``), ``load_seconds`` (loading the data) and
    ``ready_seconds`` (from the launch to the first step, all of it)."""
    if not startup:
        return {}
    proc, main = startup.get("process_unix"), startup["main_unix"]
    return {"launcher_seconds": None if proc is None else proc - launched_unix,
            "import_seconds": None if proc is None else main - proc,
            "init_seconds": startup["init_seconds"], "load_seconds": startup["load_seconds"],
            "ready_seconds": startup["ready_unix"] - launched_unix}


def _tta_figures(tta: Result, target: float) -> Result:
    """The time-to-accuracy runs with the training seconds at which each first reached
    ``target`` (``None``: not within its epochs)."""
    out = {**tta, "target": target}
    for kind in (DDP_SINGLE, DDP_PARALLEL):
        out[f"{kind}_to_target"] = time_to_target(tta[kind]["seconds"], tta[kind]["val_acc"],
                                                  target)
    return out


def step_costs(size: Result) -> dict[str, float | None]:
    """Milliseconds per training step of one size of the scaling curve (an entry of
    :func:`bench_ddp`'s ``scaling``; medians): ``single`` (1 process x 1 thread), ``threads``
    (1 x T threads; ``None`` where not timed), ``parallel`` (N processes x 1 thread), ``even``
    (``single / N``: an even split of the work, the ideal), ``extra`` (``parallel - even``: what
    the exchange, the waiting and the shared cores cost per step) and ``allreduce`` (one
    all-reduce of the gradient alone; ``None`` in one process)."""
    b, steps = size["bench"], size["steps_per_epoch"]
    n = size["global_batch"] // size["batch_per_rank"]  # processes
    ms = {k: (b[f"{k}_median"] / steps * 1e3 if f"{k}_median" in b else None)
          for k in (DDP_SINGLE, DDP_THREADS, DDP_PARALLEL)}
    even = ms[DDP_SINGLE] / n
    ar = size.get("allreduce_seconds")
    return {**ms, "even": even, "extra": ms[DDP_PARALLEL] - even,
            "allreduce": None if ar is None else ar * 1e3}


def speedup_change(ddp: Result, base: int = 0, other: int = -1) -> Ratio:
    """How the speed-up of N processes over 1 process x 1 thread changed from size ``base``
    to size ``other`` of the scaling curve (indices into ``scaling``; default the smallest and
    the largest): the per-round speed-up at ``other`` over the one at ``base``, paired by round
    (the sizes were timed in the same rounds), as a :class:`~cnnlab.perf.Ratio` with its 95%
    interval. Above 1: the speed-up grew."""
    sizes = ddp.get("scaling") or []
    if len(sizes) < 2:
        raise ValueError(f"Invalid result: {len(sizes)} size(s) in its scaling curve (needs 2)")

    def per_round(size: Result) -> list[float]:
        b = size["bench"]
        return [a / p for a, p in zip(b["single_times"], b["parallel_times"], strict=True)]

    return _time_ratio(per_round(sizes[other]), per_round(sizes[base]))


def speedup_curve(ddp: Result) -> tuple[list[float], dict[str, list[Ratio]]]:
    """The scaling curve of :func:`bench_ddp`'s result, ready for
    :func:`cnnlab.plots.plot_speedups`: the GFLOP of one training step (the global batch) of
    each size, and per comparison the speed-up of N processes x 1 thread (a
    :class:`~cnnlab.perf.Ratio` of the paired rounds) over 1 process x 1 thread and, where
    timed, over 1 process x T threads."""
    sizes = ddp.get("scaling") or []
    if not sizes:
        raise ValueError("Invalid result: no scaling curve in it (bench_ddp with ddp_sizes)")
    n, t = ddp["world_size"], ddp["bench"].get("threads")
    curves = {f"{n} processes x 1 thread over 1 x 1":
              [time_ratio(s, DDP_SINGLE, DDP_PARALLEL) for s in sizes]}
    if t:
        curves[f"{n} processes x 1 thread over 1 x {t} threads"] = [
            time_ratio(s, DDP_THREADS, DDP_PARALLEL) for s in sizes]
    return [s["flops_per_step"] / 1e9 for s in sizes], curves


def bench_ddp(cfg: BenchConfig, *, check: bool = True) -> Result:
    """1 process vs ``cfg.ddp_procs`` data-parallel processes, one thread each, in one torchrun
    launch of :mod:`cnnlab.parallel` with ``--bench`` (interleaved epochs, medians); with
    ``cfg.ddp_sizes`` a scaling curve (every size in the same rounds, plus 1 process x
    ``cfg.ddp_threads`` threads if set), time to accuracy (``cfg.ddp_tta_epochs``) and the
    per-rank batch-norm statistics (``cfg.ddp_bn``), all in the same launch.

    Returns:
        The launch's figures (``bench`` -> per-round and median seconds per epoch, ``speedup`` of
        the medians, ``steps_per_epoch``, of the last size; ``max_param_diff`` with ``check``;
        ``grad_bytes`` and ``world_size``), ``speedup`` (1 process / N processes, the geometric
        mean of the paired rounds, last size) with ``speedup_ci``, ``command``,
        ``launch_seconds`` (start-up included) and ``startup`` (where the seconds before the
        first step went); with sizes, ``scaling`` (one entry per size: ``width``,
        ``batch_per_rank``, ``global_batch``, ``flops_per_step``, ``grad_bytes``, the raw rounds
        under ``bench``, ``speedup``, and with threads ``speedup_threads`` (1 x T threads / N
        processes) and ``threads_speedup`` (1 x 1 / 1 x T), each with ``_ci``); ``tta`` (each
        run's cumulative training seconds and validation accuracy per epoch, ``target`` and
        ``single_to_target`` / ``parallel_to_target``); ``bn`` (how far each rank's statistics
        are from the global batch's, and the all-reduced ones). Or ``skipped`` with the reason
        (e.g. fewer GPUs than processes).
    Raises:
        RuntimeError: the launch failed; the message holds the end of its output.
    """
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
               "--device", dev.type, "--bench", str(cfg.ddp_rounds)]
        if cfg.ddp_sizes:
            cmd += ["--sizes", ",".join(f"{w}:{b}" for w, b in cfg.ddp_sizes)]
        if cfg.ddp_threads:
            cmd += ["--bench-threads", str(cfg.ddp_threads)]
        if cfg.ddp_budget is not None:
            cmd += ["--bench-budget", f"{cfg.ddp_budget:g}"]
        if cfg.ddp_tta_epochs:
            cmd += ["--tta", str(cfg.ddp_tta_epochs)]
        if cfg.ddp_bn:
            cmd.append("--bn")
        if check:
            cmd.append("--check")
        cmd += ["--json", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS="1", CNNLAB_PROGRESS="0")
        src = str(Path(__file__).resolve().parents[1])  # cnnlab importable in the workers
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        load_before = load_average()
        launched = time.time()  # the workers' clock readings are Unix times
        start = time.perf_counter()
        # torchrun and its workers in a group of their own: whatever ends this call (Ctrl-C,
        # SIGTERM, the timeout) ends all of them, and none is left behind
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=cfg.ddp_timeout)
        except BaseException:
            _stop_group(proc)
            raise
        launch = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            tail = (stdout + stderr)[-3000:]
            raise RuntimeError(f"the data-parallel benchmark failed (exit {proc.returncode}):\n"
                               f"{tail}")
        result = json.loads(out.read_text())
    shown = ["python", "-m", "torch.distributed.run"] + cmd[3:-2]  # without the temp file
    res = {**result, "dataset": dataset, "command": " ".join(shown), "launch_seconds": launch,
           "load_average": [load_before, load_average()],
           "startup": _startup(result.get("startup"), launched),
           "grad_bytes": result["bench"].get("grad_bytes", grad_bytes(dataset, cfg.ddp_width)),
           **_ratio_fields("speedup", time_ratio(result, DDP_SINGLE, DDP_PARALLEL))}
    if "sizes" in result["bench"]:
        res["scaling"] = [_size_figures(size) for size in result["bench"]["sizes"]]
    if "tta" in result:
        res["tta"] = _tta_figures(result["tta"], cfg.ddp_tta_target)
    return res


