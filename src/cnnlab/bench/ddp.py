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

from cnnlab.bench.core import BenchConfig, Result, _device
from cnnlab.data import available
from cnnlab.perf import (
    load_average,
)

# ----------------------------------------------------------------------------- data-parallel


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
        The launch's figures (``bench`` -> single/parallel medians and ``speedup``;
        ``max_param_diff`` with ``check``), ``command`` and ``launch_seconds`` (start-up
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
            "load_average": [load_before, load_average()]}


