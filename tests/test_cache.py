"""cnnlab.cache: keys that identify a run (and stay stable), atomic rows, corrupt files ignored."""

import hashlib
import json

import pytest
import torch

from cnnlab.cache import (
    CACHE_VERSION,
    cache_dir,
    cache_key,
    cache_path,
    device_kind,
    read_row,
    runner_name,
    write_row,
)
from cnnlab.config import RunConfig
from cnnlab.experiments import run


def _hand_key(config: dict, seed: int, runner: str = "cnnlab.experiments.run") -> str:
    payload = {"config": config, "seed": seed, "runner": runner, "device": device_kind(),
               "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def test_the_key_hashes_only_the_fields_away_from_their_default():
    # a field added later with a default that keeps the old behaviour must not change old keys
    assert cache_key(RunConfig(width=8, l2=0, val_size=None), 3) == _hand_key({"width": 8}, 3)
    assert cache_key(RunConfig(dropout=0.5, augment=True), 0) == _hand_key(
        {"dropout": 0.5, "augment": True}, 0)
    assert cache_key(RunConfig(l2=0), 0) == cache_key(RunConfig(l2=0.0), 0)  # int or float
    assert cache_key(RunConfig(lr_schedule="constant"), 0) == _hand_key({}, 0)  # added later
    assert cache_key(RunConfig(lr_schedule="cosine"), 0) == _hand_key({"lr_schedule": "cosine"}, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the pinned keys are the CPU ones")
def test_keys_are_pinned():
    # Version 2 keys (computed before the cache module was split out of cnnlab.experiments) were
    # b5259623447c25e221dae86e and 55263cf7e5bfafd7375a9824; version 3 (rows gained
    # train_eval_acc, and gap became eval-mode) and 4 (val_acc of the final weights) changed
    # only the version. A change here retrains every cached run: bump CACHE_VERSION on purpose,
    # never by accident.
    assert CACHE_VERSION == 4
    assert cache_key(RunConfig("digits", epochs=3), 0) == "a4a9d2357039cd56375ecd7b"
    assert cache_key(RunConfig("fashion_mnist", train_size=1000, l2=0.001, clip_weights=0.01),
                     4) == "e007693141e21baddb2ef11b"


def test_runs_with_weight_decay_have_their_own_keys():
    # weight decay used to act on every parameter and now acts on the weights only: the runs
    # with decay get keys of their own (they retrain), no other key changes
    assert cache_key(RunConfig(width=8), 0) == _hand_key({"width": 8}, 0)
    assert cache_key(RunConfig(weight_decay=5e-4), 0) != _hand_key({"weight_decay": 5e-4}, 0)
    assert cache_key(RunConfig(weight_decay=5e-4), 0) == _hand_key(
        {"weight_decay": 5e-4, "decay": "weights"}, 0)


def test_the_default_runner_is_experiments_run():
    assert runner_name(None) == runner_name(run) == "cnnlab.experiments.run"
    assert cache_key(RunConfig(), 0) == cache_key(RunConfig(), 0, run)
    assert cache_key(RunConfig(), 0, len) == _hand_key({}, 0, "builtins.len")


def test_cache_dir_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" and cache_dir(tmp_path) == tmp_path
    monkeypatch.delenv("CNNLAB_CACHE")
    assert cache_dir().parts[-3:] == (".cache", "cnnlab", "runs")
    path = cache_path(RunConfig(), 2, None, tmp_path)
    assert path == tmp_path / f"{cache_key(RunConfig(), 2)}.json"


def test_rows_round_trip_and_bad_files_read_as_missing(tmp_path):
    path = tmp_path / "a" / "row.json"
    assert read_row(path) is None
    write_row(path, {"seed": 1, "test_acc": 0.5})
    assert read_row(path) == {"seed": 1, "test_acc": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["row.json"]  # no temporary file left
    path.write_text('{"seed": 1, "test_')  # cut short
    assert read_row(path) is None
    path.write_text('{"test_acc": 0.5}')  # no seed: not a row
    assert read_row(path) is None
