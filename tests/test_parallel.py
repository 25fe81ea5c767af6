"""Data-parallel training: the batch split is exact, and torchrun runs it on loopback (gloo).

The launches use ``--standalone`` (torchrun picks a free port on localhost), so two test runs on
one machine do not collide on the default port 29500.
"""

from __future__ import annotations

import json
import os
import statistics
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
from cnnlab.parallel import (
    bn_batch_stats,
    combine_bn_stats,
    global_batches,
    main,
    max_param_diff,
    parse_sizes,
    shard,
    sync_bn_stats,
    time_to_target,
    train_epoch,
)
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


def test_parse_sizes_reads_width_and_batch_per_rank():
    assert parse_sizes("16:32, 32:64") == [(16, 32), (32, 64)]
    assert parse_sizes("8:1") == [(8, 1)]
    for bad in ("16", "16:x", "16:32:1", "0:32", "16:-1"):
        with pytest.raises(ValueError, match="Invalid size"):
            parse_sizes(bad)


def test_bn_batch_stats_are_what_batchnorm_normalizes_with():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 3, 5, 4, generator=g) * 2 + 1
    mean, var = bn_batch_stats(x)
    bn = torch.nn.BatchNorm2d(3, affine=False, momentum=1.0)  # running stats = this batch's
    out = bn.train()(x)
    m = 6 * 5 * 4
    assert_close(mean, bn.running_mean)
    assert_close(var * m / (m - 1), bn.running_var)  # the running average is unbiased
    assert_close(out, (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps))
    with pytest.raises(ValueError, match=r"Invalid input shape: \(6, 3\)"):
        bn_batch_stats(torch.zeros(6, 3))


def test_combined_statistics_of_parts_are_those_of_the_whole_batch():
    """Unequal parts, as the shards of a batch that does not split evenly."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 4, 3, 3, generator=g) + torch.arange(4.0)[:, None, None]
    parts = [x[:4], x[4:6], x[6:]]
    stats = [bn_batch_stats(p) for p in parts]
    counts = torch.tensor([p.numel() // p.shape[1] for p in parts])
    mean, var = combine_bn_stats(counts, torch.stack([s[0] for s in stats]),
                                 torch.stack([s[1] for s in stats]))
    ref_mean, ref_var = bn_batch_stats(x)
    assert_close(mean, ref_mean)
    assert_close(var, ref_var)
    assert not torch.allclose(stats[0][0], ref_mean, atol=1e-3)  # a part alone is off
    with pytest.raises(ValueError, match="Invalid shapes"):
        combine_bn_stats(counts[:2], torch.stack([s[0] for s in stats]),
                         torch.stack([s[1] for s in stats]))


def test_sync_bn_stats_without_a_process_group_is_the_local_batch():
    x = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(4))
    for got, ref in zip(sync_bn_stats(x), bn_batch_stats(x)):
        assert_close(got, ref)


def test_time_to_target_is_the_first_epoch_that_reaches_it():
    seconds, accs = [1.0, 2.5, 4.0], [0.5, 0.8, 0.7]
    assert time_to_target(seconds, accs, 0.75) == 2.5
    assert time_to_target(seconds, accs, 0.8) == 2.5  # reached means >=
    assert time_to_target(seconds, accs, 0.5) == 1.0
    assert time_to_target(seconds, accs, 0.9) is None
    with pytest.raises(ValueError, match="Invalid lengths"):
        time_to_target(seconds, accs[:2], 0.5)


def test_main_in_one_process_runs_the_scaling_bench_tta_and_bn(monkeypatch, tmp_path):
    """The worker's code paths without torchrun (one process: rank 0 is every rank)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "r.json"
    with num_threads(1):
        code = main(["--dataset", "digits", "--train-size", "96", "--width", "4", "--bench", "5",
                     "--bench-budget", "1e-9", "--sizes", "4:8,6:16", "--bench-threads", "2",
                     "--tta", "2", "--tta-val", "50", "--bn", "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    b = r["bench"]
    assert b["rounds"] == 3  # the budget is spent at once: the minimum number of rounds
    assert [(s["width"], s["batch_per_rank"]) for s in b["sizes"]] == [(4, 8), (6, 16)]
    assert b["width"] == 6 and b["threads"] == 2  # the top level is the last size
    for s in b["sizes"]:
        for kind in ("single", "threads", "parallel"):
            assert len(s[f"{kind}_times"]) == 3
            assert s[f"{kind}_median"] == statistics.median(s[f"{kind}_times"])
        assert s["steps_per_epoch"] == -(-96 // s["batch_per_rank"])
        model = SmallCNN(1, 10, input_size=8, width=s["width"])
        assert s["grad_bytes"] == 4 * sum(p.numel() for p in model.parameters())
        assert s["allreduce_seconds"] is None  # nothing to exchange in one process
    tta = r["tta"]
    assert tta["width"] == 6 and tta["global_batch"] == 16 and tta["val_images"] == 50
    for kind in ("single", "parallel"):
        assert len(tta[kind]["seconds"]) == len(tta[kind]["val_acc"]) == 2
        assert tta[kind]["seconds"][1] > tta[kind]["seconds"][0] > 0
    assert tta["single"]["val_acc"] == tta["parallel"]["val_acc"]  # the same steps
    bn = r["bn"]
    assert bn["width"] == 4 and bn["batch_per_rank"] == 8 and bn["channels"] == 4
    assert bn["rank_mean_off_std"] == 0.0 and bn["synced_mean_diff"] < 1e-6  # one rank: global
    st = r["startup"]
    assert st["ready_unix"] >= st["main_unix"] and st["init_seconds"] == 0.0


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
