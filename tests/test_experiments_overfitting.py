"""RunConfig's two overfitting fields: ``augment`` and ``early_stopping`` (validation, hooks,
cache keys, a real run and the command line)."""

from __future__ import annotations

import pytest
import torch

from cnnlab.cache import cache_key
from cnnlab.cli import build_parser
from cnnlab.config import RunConfig
from cnnlab.experiments import hooks_for, run
from cnnlab.techniques.overfitting import Augmentation, EarlyStopping


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(before)


def test_defaults_are_off() -> None:
    config = RunConfig()
    assert config.augment is False and config.early_stopping is None
    assert hooks_for(config) == []


def test_hooks_for_switches_the_hooks_on() -> None:
    hooks = hooks_for(RunConfig(augment=True, early_stopping=4, l2=1e-4))
    aug = [h for h in hooks if isinstance(h, Augmentation)]
    stop = [h for h in hooks if isinstance(h, EarlyStopping)]
    assert len(aug) == 1 and len(stop) == 1
    assert stop[0].patience == 4 and stop[0].restore_best
    assert not aug[0].hflip  # shifts and rotations only


@pytest.mark.parametrize(
    "change, match",
    [({"augment": "yes"}, "augment"), ({"augment": 1}, "augment"),
     ({"early_stopping": 0}, "early_stopping"), ({"early_stopping": -2}, "early_stopping"),
     ({"early_stopping": 2.5}, "early_stopping"), ({"early_stopping": True}, "early_stopping")],
)
def test_validate_names_the_bad_value(change: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match} value"):
        RunConfig(**change).validate()


def test_the_fields_are_part_of_the_cache_key() -> None:
    keys = {cache_key(RunConfig(), 0), cache_key(RunConfig(augment=True), 0),
            cache_key(RunConfig(early_stopping=3), 0), cache_key(RunConfig(early_stopping=4), 0)}
    assert len(keys) == 4


def test_run_with_early_stopping_stops_and_reports_the_restored_model() -> None:
    config = RunConfig("digits", train_size=300, width=4, epochs=60, lr=0.1, early_stopping=1)
    row = run(config, 0)
    epochs = len(row["history"]["val_loss"])
    assert row["early_stopping"] == 1
    assert epochs < 60 and row["history"]["stopped_early"]
    assert 0.2 < row["test_acc"] <= 1.0  # above chance (10%)


def test_run_with_augmentation_changes_training_but_is_reproducible() -> None:
    config = RunConfig("digits", train_size=300, width=4, epochs=2, augment=True)
    a, b = run(config, 0), run(config, 0)
    plain = run(RunConfig("digits", train_size=300, width=4, epochs=2), 0)
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["history"]["train_loss"] != plain["history"]["train_loss"]
    assert a["augment"] is True


def test_cli_accepts_the_fields() -> None:
    args = build_parser().parse_args(
        ["sweep", "--param", "early_stopping", "--values", "none", "2", "--augment", "true",
         "--early-stopping", "3"])
    assert args.augment is True and args.early_stopping == 3
    assert args.values == [None, 2]
