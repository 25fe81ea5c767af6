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
    BenchConfig,
    Result,
    _device,
    _ratio_fields,
    time_ratio,
)
from cnnlab.data import available
from cnnlab.models import build_model
from cnnlab.perf import (
    load_average,
)

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


def bench_ddp(cfg: BenchConfig, *, check: bool = True) -> Result:
    """1 process vs ``cfg.ddp_procs`` data-parallel processes, one thread each, in one torchrun
    launch of :mod:`cnnlab.parallel` with ``--bench`` (interleaved epochs, medians).

    Returns:
        The launch's figures (``bench`` -> per-round and median seconds per epoch, ``speedup`` of
        the medians, ``steps_per_epoch``; ``max_param_diff`` with ``check``; ``grad_bytes``
        and ``world_size``), ``speedup`` (1 process / N processes, the geometric mean of the
        paired rounds) with ``speedup_ci``, ``command`` and ``launch_seconds`` (start-up
        included), or ``skipped`` with the reason (e.g. fewer GPUs than processes).
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
               "--device", dev.type, "--bench", str(cfg.ddp_rounds), "--json", str(out)]
        if check:
            cmd.append("--check")
        env = dict(os.environ, OMP_NUM_THREADS="1", CNNLAB_PROGRESS="0")
        src = str(Path(__file__).resolve().parents[1])  # cnnlab importable in the workers
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        load_before = load_average()
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
    return {**result, "dataset": dataset, "command": " ".join(shown), "launch_seconds": launch,
            "load_average": [load_before, load_average()],
            "grad_bytes": grad_bytes(dataset, cfg.ddp_width),
            **_ratio_fields("speedup", time_ratio(result, DDP_SINGLE, DDP_PARALLEL))}


