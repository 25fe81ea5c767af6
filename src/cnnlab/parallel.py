"""Data-parallel training with ``torch.distributed`` DistributedDataParallel, run by torchrun.

One process per core (CPU, gloo backend) or per GPU (NCCL backend). Every process holds the whole
preloaded dataset and the same model; each global mini-batch of ``--batch-size`` images is split
into one shard per process, every process computes the gradient of its shard, and DDP averages the
gradients with an all-reduce during ``backward()``, so all copies take the same optimizer step::

    python -m torch.distributed.run --nproc_per_node=2 -m cnnlab.parallel \\
        --dataset digits --epochs 1

Options of note:

* ``--check`` also trains one process on the same global batches from the same initial weights and
  prints the largest absolute difference between the two sets of parameters; the command exits
  with status 1 if it exceeds ``--tol`` (1e-5). The model has no batch norm, whose per-shard
  statistics would differ from the full batch's (use ``nn.SyncBatchNorm`` on GPUs to keep it).
* ``--bench R`` times R interleaved rounds of one epoch on 1 process (rank 0 alone, the other
  ranks wait) and one epoch data-parallel on all of them, and prints the speed-up.
* ``--timeout S`` bounds every collective operation: a worker that hangs makes the others fail
  after S seconds instead of waiting forever. A worker that raises exits non-zero and torchrun then
  stops the others; either way the run ends with a non-zero status and a message naming the rank.

On several machines the command is the same on each, with torchrun's rendezvous options::

    python -m torch.distributed.run --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST:29400 --rdzv-id=job42 -m cnnlab.parallel --dataset fashion_mnist

Run without torchrun (no ``RANK``/``WORLD_SIZE`` in the environment), it trains in one process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from cnnlab.data import DATASETS, Dataset, load_dataset
from cnnlab.models import build_model
from cnnlab.train import evaluate

__all__ = [
    "DistContext",
    "ParallelConfig",
    "build_parser",
    "global_batches",
    "main",
    "max_param_diff",
    "shard",
    "train_epoch",
]


@dataclass(frozen=True)
class ParallelConfig:
    """One data-parallel run (the command-line options)."""

    dataset: str = "digits"  # a name of cnnlab.data.DATASETS
    train_size: int | None = None  # stratified training subset (None: the whole split)
    epochs: int = 1  # passes over the training split
    batch_size: int = 64  # GLOBAL mini-batch: split over the processes
    lr: float = 0.05  # SGD learning rate
    momentum: float = 0.9  # SGD momentum
    width: int = 16  # SmallCNN width (channels of the first convolution)
    seed: int = 0  # data split, initial weights and batch order
    threads: int = 1  # intra-op threads per process
    device: str = "auto"  # "auto" (CUDA if present), "cpu" or "cuda"
    timeout: float = 120.0  # seconds any collective may wait for the other processes
    channels_last: bool = True  # NHWC memory format (faster convolutions on CPUs)
    check: bool = False  # compare with single-process training on the same global batches
    tol: float = 1e-5  # largest allowed |parameter difference| for --check
    bench: int = 0  # rounds of (1-process epoch, data-parallel epoch) to time; 0 = off
    json: str | None = None  # write the figures to this file (rank 0)
    fail_rank: int | None = None  # testing: this rank raises at step `fail_step`
    fail_step: int = 0  # testing: the step (counted from 0) at which it fails
    fail_mode: str = "raise"  # testing: "raise" an exception or "hang" (sleep forever)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job."""

    rank: int  # 0 .. world_size-1 over all machines
    world_size: int  # processes in the job
    local_rank: int  # index on this machine (picks the GPU)
    device: torch.device  # where this process computes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def global_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[Tensor]:
    """The global mini-batches of one epoch: a permutation of ``range(n)`` seeded by
    ``(seed, epoch)``, cut into chunks of ``batch_size`` (the last one may be smaller).

    Every process computes the same list, so no indices need to be sent around.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"Invalid n / batch_size: {n} / {batch_size} (must be positive)")
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return list(torch.randperm(n, generator=gen).split(batch_size))


def shard(batch: Tensor, rank: int, world_size: int) -> Tensor:
    """This rank's part of a global batch: ``world_size`` nearly equal contiguous pieces."""
    if not 0 <= rank < world_size:
        raise ValueError(f"Invalid rank: {rank} (world size {world_size})")
    return batch.tensor_split(world_size)[rank]


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    batches: Sequence[Tensor],
    *,
    rank: int = 0,
    world_size: int = 1,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """One epoch over ``batches`` (global index batches); returns the mean training loss.

    Each process uses its :func:`shard` of every global batch. The loss is the shard's *sum* of
    cross-entropies scaled by ``world_size / len(global batch)``: DDP divides the summed
    gradients by ``world_size``, so the step is exactly the gradient of the global batch's mean
    loss, also when the shards differ in size by one image.
    """
    model.train()
    total = torch.zeros((), device=x.device)
    for step, idx in enumerate(batches):
        part = shard(idx, rank, world_size).to(x.device)
        if on_step is not None:
            on_step(step)
        out = model(x[part])
        loss = F.cross_entropy(out, y[part], reduction="sum") * (world_size / len(idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach() * len(idx) / world_size
    if world_size > 1:
        dist.all_reduce(total)
    return float(total) / sum(len(b) for b in batches)


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    """``max |p_a - p_b|`` over all parameters of two models of the same architecture."""
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    diffs = [(p - q).abs().max().item() for p, q in pairs]
    return max(diffs, default=0.0)


# ----------------------------------------------------------------------------- the job


def _context(cfg: ParallelConfig) -> DistContext:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: no CUDA device is available")
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if per_node > torch.cuda.device_count():
            raise RuntimeError(
                f"--device cuda: {per_node} processes on this machine but only "
                f"{torch.cuda.device_count()} GPU(s); NCCL needs one GPU per process "
                "(use --nproc_per_node equal to the GPU count, or --device cpu)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif want == "cpu":
        device = torch.device("cpu")
    else:
        raise ValueError(f"Invalid device: {cfg.device!r} (auto, cpu or cuda)")
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def _log(ctx: DistContext, msg: str) -> None:
    if ctx.rank == 0:
        print(msg, flush=True)


def _new_model(cfg: ParallelConfig, data: Dataset, device: torch.device) -> nn.Module:
    model = build_model(data.input_shape, data.num_classes, seed=cfg.seed, width=cfg.width)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _sgd(model: nn.Module, cfg: ParallelConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)


def _failure(cfg: ParallelConfig, ctx: DistContext) -> Callable[[int], None] | None:
    if cfg.fail_rank is None or cfg.fail_rank != ctx.rank:
        return None

    def on_step(step: int) -> None:
        if step == cfg.fail_step:
            if cfg.fail_mode == "hang":
                time.sleep(10 * 24 * 3600)  # a stuck worker: the others must time out
            raise RuntimeError(f"simulated failure of rank {ctx.rank} at step {step}")

    return on_step


def _sync(ctx: DistContext) -> None:
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    if ctx.distributed:
        # NCCL's barrier runs on a GPU: name this process's GPU, not a guessed one
        dist.barrier(device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


def run(cfg: ParallelConfig) -> dict[str, Any]:
    """Train as this process's share of the job and return the figures (on every rank)."""
    ctx = _context(cfg)
    torch.set_num_threads(cfg.threads)
    data = load_dataset(cfg.dataset, train_size=cfg.train_size, seed=cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    x = data.train[0].to(ctx.device).contiguous(memory_format=fmt)  # (N, C, H, W)
    y = data.train[1].to(ctx.device)
    if cfg.batch_size < ctx.world_size:
        raise ValueError(f"Invalid batch_size: {cfg.batch_size} (fewer images than the "
                         f"{ctx.world_size} processes)")
    model = _new_model(cfg, data, ctx.device)
    net: nn.Module = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    opt = _sgd(model, cfg)
    result: dict[str, Any] = {"config": asdict(cfg), "world_size": ctx.world_size,
                              "threads": cfg.threads, "device": str(ctx.device),
                              "backend": dist.get_backend() if ctx.distributed else None}
    fail = _failure(cfg, ctx)
    epoch_times, losses = [], []
    for epoch in range(cfg.epochs):
        batches = global_batches(len(y), cfg.batch_size, seed=cfg.seed, epoch=epoch)
        _sync(ctx)
        start = time.perf_counter()
        losses.append(train_epoch(net, opt, x, y, batches, rank=ctx.rank,
                                  world_size=ctx.world_size, on_step=fail))
        _sync(ctx)
        epoch_times.append(time.perf_counter() - start)
        _log(ctx, f"epoch {epoch + 1}/{cfg.epochs}: loss {losses[-1]:.4f}, "
                  f"{epoch_times[-1]:.2f} s on {ctx.world_size} process(es)")
    result.update(train_loss=losses, epoch_time=epoch_times)
    _, result["test_acc"] = evaluate(model, *data.test)
    _log(ctx, f"test accuracy: {result['test_acc']:.4f}")
    if cfg.check:
        result.update(_check(cfg, ctx, data, x, y, model))
    if cfg.bench:
        result["bench"] = _bench(cfg, ctx, data, x, y, net, opt)
    return result


def _check(cfg: ParallelConfig, ctx: DistContext, data: Dataset, x: Tensor, y: Tensor,
           trained: nn.Module) -> dict[str, Any]:
    """Train a single-process copy on the same global batches; compare the parameters."""
    ref = _new_model(cfg, data, ctx.device)
    opt = _sgd(ref, cfg)
    for epoch in range(cfg.epochs):
        batches = global_batches(len(y), cfg.batch_size, seed=cfg.seed, epoch=epoch)
        train_epoch(ref, opt, x, y, batches)
    diff = torch.tensor(max_param_diff(trained, ref), dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    d = float(diff)
    ok = d <= cfg.tol
    _log(ctx, f"check: max |parameter difference| data-parallel vs 1 process = {d:.3e} "
              f"(tolerance {cfg.tol:.0e}): {'OK' if ok else 'FAILED'}")
    return {"max_param_diff": d, "check_ok": ok}


def _bench(cfg: ParallelConfig, ctx: DistContext, data: Dataset, x: Tensor, y: Tensor,
           net: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Interleaved rounds: one epoch on rank 0 alone, one epoch data-parallel on all ranks."""
    single = _new_model(cfg, data, ctx.device)
    single_opt = _sgd(single, cfg)
    times: dict[str, list[float]] = {"single": [], "parallel": []}

    def one(kind: str, epoch: int) -> float:
        batches = global_batches(len(y), cfg.batch_size, seed=cfg.seed, epoch=epoch)
        _sync(ctx)
        start = time.perf_counter()
        if kind == "parallel":
            train_epoch(net, opt, x, y, batches, rank=ctx.rank, world_size=ctx.world_size)
        elif ctx.rank == 0:
            train_epoch(single, single_opt, x, y, batches)
        _sync(ctx)  # the other ranks wait here while rank 0 trains alone
        return time.perf_counter() - start

    one("single", 0)  # warm-up of both
    one("parallel", 0)
    for r in range(cfg.bench):
        order = ("single", "parallel") if r % 2 == 0 else ("parallel", "single")
        for kind in order:
            times[kind].append(one(kind, r + 1))
    t1, tn = median(times["single"]), median(times["parallel"])
    out = {"single_times": times["single"], "parallel_times": times["parallel"],
           "single_median": t1, "parallel_median": tn, "speedup": t1 / tn,
           "steps_per_epoch": math.ceil(len(y) / cfg.batch_size)}
    _log(ctx, f"bench: 1 process x {cfg.threads} thread(s) {t1:.3f} s/epoch, "
              f"{ctx.world_size} processes x {cfg.threads} thread(s) {tn:.3f} s/epoch: "
              f"speed-up {t1 / tn:.2f}x (median of {cfg.bench} interleaved rounds)")
    return out


# ----------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    d = ParallelConfig()
    p = argparse.ArgumentParser(
        prog="python -m torch.distributed.run --nproc_per_node=N -m cnnlab.parallel",
        description="Train SmallCNN data-parallel (DistributedDataParallel; gloo on CPU, NCCL "
        "on GPU) and print the final test accuracy.")
    p.add_argument("--dataset", default=d.dataset, choices=DATASETS)
    p.add_argument("--train-size", type=int, default=d.train_size)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="global mini-batch, split over the processes (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=d.threads,
                   help="intra-op threads per process (default %(default)s)")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help="seconds a collective waits for the other processes before failing")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--check", action="store_true",
                   help="also train 1 process on the same global batches; exit 1 if the "
                   "parameters differ by more than --tol")
    p.add_argument("--tol", type=float, default=d.tol)
    p.add_argument("--bench", type=int, default=d.bench, metavar="R",
                   help="time R interleaved rounds of 1-process vs data-parallel epochs")
    p.add_argument("--json", default=None, help="write the figures to this JSON file (rank 0)")
    p.add_argument("--fail-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fail-step", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fail-mode", default="raise", choices=("raise", "hang"),
                   help=argparse.SUPPRESS)
    return p


def _validate(cfg: ParallelConfig) -> None:
    for name in ("epochs", "batch_size", "width", "threads"):
        value = getattr(cfg, name)
        if value < 1:
            raise ValueError(f"Invalid {name} value: {value} (must be a positive int)")
    if not cfg.timeout > 0:
        raise ValueError(f"Invalid timeout value: {cfg.timeout} (must be > 0 seconds)")
    if cfg.bench < 0:
        raise ValueError(f"Invalid bench value: {cfg.bench} (must be >= 0)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of one process; returns the exit status."""
    cfg = ParallelConfig(**vars(build_parser().parse_args(argv)))
    rank = os.environ.get("RANK", "0")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        _validate(cfg)
        if distributed:
            cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
            dist.init_process_group("nccl" if cuda else "gloo",
                                    timeout=timedelta(seconds=cfg.timeout))
        result = run(cfg)
    except Exception as exc:  # noqa: BLE001 (any failure: report it, exit non-zero)
        msg = f"cnnlab.parallel: rank {rank} failed: {type(exc).__name__}: {exc}"
        text = str(exc)
        if "Timed out" in text or "timed out" in text:
            msg += (f"\n  (another process did not answer within --timeout {cfg.timeout:g} s: "
                    "it hangs or is far slower; see its log)")
        elif "closed by peer" in text or "Connection reset" in text:
            msg += "\n  (another process exited: its own error message is the cause)"
        print(msg, file=sys.stderr, flush=True)
        if distributed and dist.is_initialized():
            # no barrier: the peers may be gone; abort so no thread waits on them
            dist.destroy_process_group()
        return 1
    if distributed:
        dist.destroy_process_group()
    if rank == "0" and cfg.json:
        Path(cfg.json).write_text(json.dumps(result, indent=2))
    return 0 if result.get("check_ok", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
