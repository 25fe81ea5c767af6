"""Data-parallel training: the batch split is exact, and torchrun runs it on loopback (gloo).

The launches use ``--standalone`` (torchrun picks a free port on localhost), so two test runs on
one machine do not collide on the default port 29500.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import cnnlab
from cnnlab.models import SmallCNN
from cnnlab.parallel import global_batches, main, max_param_diff, shard, train_epoch
from cnnlab.perf import num_threads


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread (two OpenMP threads on a busy 2-core machine wait for
    each other and make each step many times slower)."""
    with num_threads(1):
        yield


def test_global_batches_cover_every_index_once_and_are_reproducible():
    batches = global_batches(10, 4, seed=1, epoch=0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = global_batches(10, 4, seed=1, epoch=0)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    other = global_batches(10, 4, seed=1, epoch=1)
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_shard_splits_a_batch_into_nearly_equal_parts():
    idx = torch.arange(7)
    parts = [shard(idx, r, 3) for r in range(3)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert torch.equal(torch.cat(parts), idx)
    with pytest.raises(ValueError, match="Invalid rank: 3"):
        shard(idx, 3, 3)


def test_summed_shard_gradients_equal_the_global_mean_gradient():
    """What DDP computes (the mean over ranks of each shard's scaled gradient) equals the
    gradient of the global batch's mean loss, also for unequal shards."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (7,), generator=g)
    model = SmallCNN(1, 10, input_size=8, width=4)
    full = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    world = 3
    summed = [torch.zeros_like(p) for p in model.parameters()]
    for r in range(world):
        part = shard(torch.arange(7), r, world)
        loss = F.cross_entropy(model(x[part]), y[part], reduction="sum") * (world / 7)
        for acc, grad in zip(summed, torch.autograd.grad(loss, list(model.parameters()))):
            acc += grad / world  # DDP's all-reduce averages over the ranks
    for a, b in zip(summed, full):
        assert_close(a, b)


def test_train_epoch_in_one_process_is_plain_sgd_on_the_mean_loss():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (10,), generator=g)
    a = SmallCNN(1, 10, input_size=8, width=4)
    b = SmallCNN(1, 10, input_size=8, width=4)
    b.load_state_dict(a.state_dict())
    batches = global_batches(10, 4, seed=0, epoch=0)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    train_epoch(a, opt_a, x, y, batches)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    for idx in batches:
        opt_b.zero_grad()
        F.cross_entropy(b(x[idx]), y[idx]).backward()
        opt_b.step()
    assert max_param_diff(a, b) < 1e-6


def test_main_without_torchrun_trains_one_process(capsys, monkeypatch, tmp_path):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "r.json"
    with num_threads(1):  # main sets the thread count: restore it afterwards
        code = main(["--dataset", "digits", "--epochs", "1", "--width", "4", "--check",
                     "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "test accuracy:" in text and "OK" in text
    result = json.loads(out.read_text())
    assert result["world_size"] == 1 and result["max_param_diff"] == 0.0


def test_check_beyond_tolerance_exits_non_zero(capsys, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with num_threads(1):
        code = main(["--dataset", "digits", "--epochs", "1", "--width", "4", "--train-size", "200",
                     "--check", "--tol", "-1"])  # no difference can be below -1
    assert code == 1 and "FAILED" in capsys.readouterr().out


def test_main_rejects_bad_options(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["--epochs", "0"]) == 1
    assert "Invalid epochs value: 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- torchrun


def _start(*args: str) -> tuple[subprocess.Popen, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNLAB_PROGRESS="0")
    src = str(Path(cnnlab.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cnnlab.parallel", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    return proc, time.perf_counter()


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    """The three torchrun launches, started together: most of each launch is starting Python
    and importing torch in 3 processes, so running them side by side saves most of the wall time.
    Yields name -> (Popen, start time, json path)."""
    out = tmp_path_factory.mktemp("ddp") / "ddp.json"
    runs = {
        "check": (*_start("--dataset", "digits", "--epochs", "1", "--check", "--bench", "1",
                          "--json", str(out)), out),
        "raise": (*_start("--dataset", "digits", "--epochs", "1", "--fail-rank", "1",
                          "--fail-step", "2", "--timeout", "60"), None),
        "hang": (*_start("--dataset", "digits", "--epochs", "1", "--fail-rank", "1",
                         "--fail-step", "2", "--fail-mode", "hang", "--timeout", "5"), None),
    }
    yield runs
    for proc, _, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _finish(run: tuple[subprocess.Popen, float, Path | None]) -> tuple[int, str, str, float]:
    proc, start, _ = run
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, stdout, stderr, time.perf_counter() - start


def test_torchrun_two_processes_match_one_process(launches):
    """The issue's command with --check (and one benchmark round) on 2 gloo processes."""
    code, stdout, stderr, _ = _finish(launches["check"])
    assert code == 0, stdout + stderr
    assert "test accuracy:" in stdout
    assert "check: max |parameter difference|" in stdout and "OK" in stdout
    result = json.loads(launches["check"][2].read_text())
    assert result["world_size"] == 2 and result["backend"] == "gloo"
    assert result["max_param_diff"] <= 1e-5
    assert result["test_acc"] > 0.3  # one epoch on digits
    assert result["bench"]["speedup"] > 0


def test_a_failing_worker_fails_the_run_with_its_message(launches):
    code, _, stderr, _ = _finish(launches["raise"])
    assert code != 0
    assert "rank 1 failed: RuntimeError: simulated failure of rank 1 at step 2" in stderr


def test_a_hanging_worker_times_out_instead_of_hanging_the_run(launches):
    code, _, stderr, seconds = _finish(launches["hang"])
    assert code != 0
    assert "rank 0 failed" in stderr and "did not answer within --timeout 5 s" in stderr
    assert seconds < 200
