import json
import os

import pytest
import torch

import cnnlab.experiments
from cnnlab.cache import cache_key
from cnnlab.config import RunConfig
from cnnlab.experiments import (
    default_model,
    hooks_for,
    load_for,
    run,
    run_cached,
    run_jobs,
    seeds_of,
    sweep,
)
from cnnlab.models import conv_layer_model
from cnnlab.stats import paired_difference, verdict
from cnnlab.techniques import weight_stats

CALLS = []


def fake_runner(config, seed):
    """Deterministic stand-in for training: accuracy depends on dropout and seed."""
    CALLS.append((config.dropout, seed))
    acc = 0.9 - config.dropout / 10 + seed / 1000
    return {**config.to_dict(), "seed": seed, "test_acc": acc, "train_acc": acc + 0.05,
            "gap": 0.05, "diverged": False, "train_time": 0.1}


class Interrupt(Exception):
    pass


def interrupting_runner(config, seed):
    if len(CALLS) >= 3:
        raise Interrupt
    return fake_runner(config, seed)


interrupting_runner.__qualname__ = "fake_runner"  # same cache entries as fake_runner


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def test_sweep_summarizes_per_value(tmp_cache):
    res = sweep(RunConfig(), "dropout", [0.0, 0.5], 3, runner=fake_runner)
    assert len(res.rows) == 6 and [s["dropout"] for s in res.summary] == [0.0, 0.5]
    s0 = res.summary[0]
    assert s0["n"] == 3 and s0["test_acc"] == pytest.approx(0.901)
    assert s0["test_acc_low"] < s0["test_acc"] < s0["test_acc_high"]
    assert res.column("test_acc") == [s["test_acc"] for s in res.summary]


def test_cache_reuses_finished_runs(tmp_cache):
    sweep(RunConfig(), "dropout", [0.0, 0.5], 2, runner=fake_runner)
    assert len(CALLS) == 4
    sweep(RunConfig(), "dropout", [0.0, 0.5, 0.25], 2, runner=fake_runner)
    assert len(CALLS) == 6  # only the new value trained
    files = list(tmp_cache.glob("*.json"))
    assert len(files) == 6 and all(json.loads(f.read_text())["seed"] in (0, 1) for f in files)


def test_interrupted_sweep_resumes(tmp_cache):
    with pytest.raises(Interrupt):
        sweep(RunConfig(), "dropout", [0.0, 0.5], 3, runner=interrupting_runner)
    assert len(CALLS) == 3
    CALLS.clear()
    res = sweep(RunConfig(), "dropout", [0.0, 0.5], 3, runner=fake_runner)
    assert len(CALLS) == 3 and len(res.rows) == 6  # the 3 finished runs came from the cache


def test_corrupt_cache_entry_is_recomputed(tmp_cache):
    row = run_cached(RunConfig(), 0, runner=fake_runner)
    path = tmp_cache / f"{cache_key(RunConfig(), 0, fake_runner)}.json"
    path.write_text('{"seed": 0, "test_acc": 0.9')  # truncated JSON
    again = run_cached(RunConfig(), 0, runner=fake_runner)
    assert again == row and len(CALLS) == 2
    assert json.loads(path.read_text()) == row


def test_cache_key_covers_config_seed_and_runner():
    base = cache_key(RunConfig(), 0, fake_runner)
    assert base == cache_key(RunConfig(), 0, fake_runner)
    assert base != cache_key(RunConfig(dropout=0.1), 0, fake_runner)
    assert base != cache_key(RunConfig(), 1, fake_runner)
    assert base != cache_key(RunConfig(), 0, run)
    # the same run written with an int or a float is one cache entry
    assert cache_key(RunConfig(l2=0), 0, run) == cache_key(RunConfig(l2=0.0), 0, run)
    assert cache_key(RunConfig(lr=1), 0, run) == cache_key(RunConfig(lr=1.0), 0, run)
    assert cache_key(RunConfig(epochs=2), 0, run) != cache_key(RunConfig(epochs=3), 0, run)
    assert cache_key(RunConfig(val_size=500), 0, run) != cache_key(RunConfig(), 0, run)


def test_run_uses_val_size(tmp_cache):
    row = run(RunConfig(train_size=100, val_size=50, epochs=1, width=4), seed=0)
    assert row["val_size"] == 50 and not row["diverged"]
    assert load_for(RunConfig(val_size=50), 0).val[1].shape == (50,)
    assert len(load_for(RunConfig(), 0).val[1]) == 143  # digits: 10% of the 1,438 train images


def test_run_trains_the_model_and_options_it_is_given(monkeypatch):
    cfg = RunConfig(train_size=100, epochs=1, width=3)
    seen = {}
    fit_kwargs = []
    real_fit = cnnlab.experiments.fit

    def spy_fit(model, data, **kwargs):
        fit_kwargs.append(kwargs)
        return real_fit(model, data, **kwargs)

    def make_model(config, data, seed):
        seen["made"] = (config, seed, data.input_shape)
        seen["model"] = conv_layer_model(data.input_shape, data.num_classes, config.width,
                                         seed=seed)
        return seen["model"]

    def extra(model, data):
        seen["extra"] = model
        return {"n_test": len(data.test[1]), "test_acc_again": 1.5}

    monkeypatch.setattr(cnnlab.experiments, "fit", spy_fit)
    row = run(cfg, 2, make_model=make_model, fit_options={"channels_last": False}, extra=extra)
    assert seen["made"] == (cfg, 2, (1, 8, 8)) and seen["extra"] is seen["model"]
    assert fit_kwargs[0]["channels_last"] is False and fit_kwargs[0]["seed"] == 2
    assert row["n_test"] == len(load_for(cfg, 2).test[1]) and row["test_acc_again"] == 1.5
    assert row["weights"] == weight_stats(seen["model"])  # the trained model's, not a SmallCNN's
    assert row["seed"] == 2 and row["width"] == 3 and 0.0 <= row["test_acc"] <= 1.0
    plain = run(cfg, 2)  # the default model and fit's defaults
    assert "channels_last" not in fit_kwargs[1] and "n_test" not in plain
    assert run(cfg, 2, make_model=default_model)["train_loss"] == plain["train_loss"]
    with pytest.raises(ValueError, match=r"Invalid fit_options: \['epochs', 'seed'\]"):
        run(cfg, 0, fit_options={"seed": 1, "epochs": 2, "channels_last": True})


def test_use_cache_false_writes_nothing(tmp_cache):
    sweep(RunConfig(), "dropout", [0.0], 2, runner=fake_runner, use_cache=False)
    assert not tmp_cache.exists() or not list(tmp_cache.iterdir())


@pytest.mark.parametrize(
    "param,values,match",
    [
        ("dropuot", [0.1], "Unknown sweep parameter: 'dropuot'"),
        ("dropout", [0.1, 1.5], "Invalid dropout value: 1.5"),
        ("l2", [-0.1], "Invalid l2 value: -0.1"),
        ("clip_weights", [0.0], "Invalid clip_weights value: 0.0"),
        ("val_size", [0], "Invalid val_size value: 0"),
        ("val_size", [2.5], "Invalid val_size value: 2.5"),
        ("dropout", [], "at least one value"),
    ],
)
def test_bad_sweeps_fail_before_training(tmp_cache, param, values, match):
    with pytest.raises(ValueError, match=match):
        sweep(RunConfig(), param, values, 2, runner=fake_runner)
    assert CALLS == []


def test_real_run_row(tmp_cache):
    cfg = RunConfig(dataset="digits", width=4, epochs=2, l2=1e-3, clip_grad_norm=5.0)
    row = run_cached(cfg, 0)
    assert row["seed"] == 0 and row["l2"] == 1e-3 and 0.5 < row["test_acc"] <= 1.0
    assert len(row["history"]["val_acc"]) == 2 and row["weights"]["count"] > 0
    assert row["gap"] == pytest.approx(row["train_eval_acc"] - row["test_acc"])  # eval mode
    assert row["train_eval_acc"] == row["history"]["train_eval_acc"]
    assert run_cached(cfg, 0) == json.loads(json.dumps(row))  # what the cache returns


def test_parallel_sweep_matches_serial(tmp_path):
    cfg = RunConfig(dataset="digits", width=4, epochs=1)
    par = sweep(cfg, "dropout", [0.0, 0.5], 2, workers=2, cache=tmp_path / "a")
    ser = sweep(cfg, "dropout", [0.0, 0.5], 2, workers=1, cache=tmp_path / "b")
    assert [(r["dropout"], r["seed"]) for r in par.rows] == [(0.0, 0), (0.0, 1), (0.5, 0), (0.5, 1)]
    # one thread vs two may change float summation order: equal up to rounding
    for a, b in zip(par.rows, ser.rows):
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.02)
    assert len(list((tmp_path / "a").glob("*.json"))) == 4  # workers wrote the cache


def test_default_workers(monkeypatch):
    from cnnlab.experiments import default_workers

    monkeypatch.setenv("CNNLAB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.delenv("CNNLAB_WORKERS")
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # a notebook
    assert default_workers() == (1 if torch.cuda.is_available() else min(2, os.cpu_count()))
    script = types.ModuleType("__main__")
    script.__file__ = "/tmp/my_script.py"  # an unguarded script must not spawn workers
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert default_workers() == 1


def test_run_jobs_mixes_configurations_and_keeps_job_order(tmp_cache):
    jobs = [(RunConfig(dropout=0.5), 1), (RunConfig(), 0), (RunConfig(dropout=0.5), 0)]
    rows = run_jobs(jobs, runner=fake_runner, workers=1)
    assert [(r["dropout"], r["seed"]) for r in rows] == [(0.5, 1), (0.0, 0), (0.5, 0)]
    assert len(CALLS) == 3
    again = run_jobs(jobs[::-1], runner=fake_runner, workers=1)  # all cached now
    assert len(CALLS) == 3 and again == rows[::-1]
    with pytest.raises(ValueError, match="Invalid dropout value: 1.5"):
        run_jobs([(RunConfig(), 0), (RunConfig(dropout=1.5), 0)], runner=fake_runner)
    assert len(CALLS) == 3  # nothing trained before the bad config was found


def test_paired_difference_pairs_runs_by_seed(tmp_cache):
    res = sweep(RunConfig(), "dropout", [0.0, 0.5], 3, runner=fake_runner, workers=1)
    # fake accuracy: 0.9 - dropout / 10 + seed / 1000, so every seed differs by exactly -0.05
    mean, low, high = paired_difference(res, 0.5)
    assert mean == pytest.approx(-0.05) and low == pytest.approx(-0.05)
    assert high == pytest.approx(-0.05)
    assert verdict(low, high) == "lowers"
    assert paired_difference(res, 0.0, baseline=0.5)[0] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="no run for"):
        paired_difference(res, 0.3)


def test_paired_difference_takes_none_as_a_baseline_value(tmp_cache):
    res = sweep(RunConfig(), "clip_weights", [0.1, None], 2, runner=fake_runner, workers=1)
    assert paired_difference(res, 0.1, baseline=None)[0] == pytest.approx(0.0)  # None = "off"


def test_seeds_of_counts_from_zero_keeps_lists_and_rejects_none_at_all(tmp_path):
    assert seeds_of(3) == [0, 1, 2]
    assert seeds_of((4, 7)) == [4, 7]
    for empty in (0, []):
        with pytest.raises(ValueError, match=r"Invalid seeds: (0|\[\])"):
            seeds_of(empty)
    with pytest.raises(ValueError, match="Invalid seeds"):  # before anything trains
        sweep(RunConfig(epochs=1), "lr", [0.1], seeds=[], cache=tmp_path)


def test_start_workers_warms_the_session_pool_that_sweeps_then_use(tmp_path):
    from cnnlab.experiments import start_workers
    from cnnlab.pool import session_pool, shutdown_session_pool, worker_state

    shutdown_session_pool()
    futures = start_workers("digits", workers=2)
    assert len(futures) == 2  # one per worker
    states = [f.result(timeout=120) for f in futures]
    assert all(s.threads == 1 and s.dynamo_imported and s.datasets_read == ("digits",)
               for s in states)
    pool = session_pool(2)
    assert pool.running
    cfg = RunConfig(dataset="digits", width=4, epochs=1)
    rows = sweep(cfg, "dropout", [0.0, 0.5], 2, workers=2, cache=tmp_path).rows
    assert session_pool(2) is pool and len(rows) == 4  # the sweep trained in the same pool
    # the same two processes (a ready worker may have answered both start-up futures)
    pids = {pool.submit(worker_state).result(timeout=60).pid for _ in range(6)}
    assert len(pids | {s.pid for s in states}) <= 2
    assert start_workers(workers=1) == []  # one worker: nothing to start
    shutdown_session_pool()
    assert not pool.running


def test_a_sweep_trains_in_a_pool_its_caller_owns(tmp_path):
    from cnnlab.pool import WorkerPool, worker_state

    cfg = RunConfig(dataset="digits", width=4, epochs=1)
    serial = sweep(cfg, "dropout", [0.0, 0.5], 2, workers=1, use_cache=False).rows
    with WorkerPool(2) as pool:
        rows = sweep(cfg, "dropout", [0.0, 0.5], 2, pool=pool, cache=tmp_path).rows
        assert pool.running and pool.submit(worker_state).result(timeout=60).threads == 1
    assert not pool.running  # the with block shut it down
    assert [r["test_acc"] for r in rows] == [r["test_acc"] for r in serial]


@pytest.mark.parametrize(("args", "match"), [
    ((0,), "Invalid workers value: 0"), ((True,), "Invalid workers value: True"),
    ((2, ("imagenet",)), "Unknown dataset: 'imagenet'"),
])
def test_worker_pool_rejects_bad_input(args, match):
    from cnnlab.pool import WorkerPool

    with pytest.raises(ValueError, match=match):
        WorkerPool(*args)


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("imagenet",), {}, "Unknown dataset: 'imagenet'"),
    ((), {"workers": 0}, "Invalid workers value: 0"),
])
def test_start_workers_rejects_bad_input(args, kwargs, match):
    from cnnlab.experiments import start_workers

    with pytest.raises(ValueError, match=match):
        start_workers(*args, **kwargs)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_weight_decay_acts_on_the_weights_only(optimizer):
    # a learning rate of 1e-30 makes the data gradient's step vanish next to float32's rounding of
    # each parameter, so what moves is the decay alone: with SGD, w -> w - lr * (g + wd * w) is
    # still w; a huge decay (lr * wd = 0.5) halves every decayed parameter in one step.
    cfg = RunConfig(train_size=64, epochs=1, width=3, batch_norm=True, batch_size=64,
                    optimizer=optimizer, momentum=0.0, lr=1e-30, weight_decay=5e29)
    made = {}

    def make_model(config, data, seed):
        made["model"] = default_model(config, data, seed)
        made["before"] = {n: p.detach().clone() for n, p in made["model"].named_parameters()}
        return made["model"]

    run(cfg, 0, make_model=make_model)
    for name, p in made["model"].named_parameters():
        factor = 0.5 if p.ndim >= 2 else 1.0  # kernels and linear matrices halve; biases and
        assert torch.allclose(p.detach(), factor * made["before"][name],  # BN's scales and
                              rtol=1e-4, atol=1e-20), name                # shifts stay



def test_right_label_share_counts_the_labels_label_noise_left_right():
    from cnnlab.experiments import right_label_share
    from cnnlab.techniques import noisy_regime
    config = noisy_regime("digits")
    noisy, clean = load_for(config, 1).train[1], load_for(RunConfig(**{
        **config.to_dict(), "label_noise": 0.0}), 1).train[1]
    share = right_label_share(config, 1)
    assert share == pytest.approx(int((noisy == clean).sum()) / len(clean))
    assert 0.55 < share < 0.75  # 40% replaced, about a tenth of those by their own class
    assert right_label_share(RunConfig(train_size=100), 0) == 1.0


def test_an_lr_schedule_is_a_hook_over_the_configs_epochs():
    from cnnlab.train import CosineLR
    (schedule,) = hooks_for(RunConfig(epochs=7, lr_schedule="cosine"))
    assert isinstance(schedule, CosineLR) and schedule.epochs == 7
    assert hooks_for(RunConfig(lr_schedule="constant")) == []


@pytest.mark.parametrize("value", ["step", None, "Cosine"])
def test_an_unknown_lr_schedule_is_named(value):
    with pytest.raises(ValueError, match=f"Invalid lr_schedule value: {value!r}"):
        RunConfig(lr_schedule=value).validate()
