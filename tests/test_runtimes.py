"""cnnlab.runtimes: the probe run and the run-time phrase chapters glue into their opening box."""

from __future__ import annotations

import math

import pytest

from cnnlab.runtimes import format_duration, probe_run, runtime_text

STORED = {"meta": {"cores": 2, "hardware": "x"},
          "notebooks": {"dropout": {"seconds": 125.4, "probe_seconds": 1.25}}}


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"),
                                               (75.4, "1 min 15 s"), (3600, "60 min 00 s")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("bad", [-1, math.nan])
def test_format_duration_rejects_bad_values(bad: float) -> None:
    with pytest.raises(ValueError, match="Invalid duration"):
        format_duration(bad)


def test_runtime_text_states_seconds_probe_runs_and_the_machine() -> None:
    assert runtime_text(STORED, "dropout") == (
        "2 min 05 s (100 probe runs) on a 2-core CPU with an empty run cache")


@pytest.mark.parametrize("stored", [None, {}, STORED])
def test_runtime_text_without_a_measurement_says_so(stored) -> None:
    assert "not measured" in runtime_text(stored, "conv")


def test_probe_run_is_a_real_training_run() -> None:
    seconds = probe_run(repeats=1)
    assert 0.05 < seconds < 60
    with pytest.raises(ValueError, match="Invalid repeats value: 0"):
        probe_run(repeats=0)


def test_cost_text_in_seconds_and_probe_runs():
    from cnnlab.runtimes import cost_text
    assert cost_text("make book", 492.0, 0.5) == (
        "make book: 8 min 12 s = 984 probe runs (probe 0.50 s, measured at the start)")
    with pytest.raises(ValueError, match="Invalid probe time: 0"):
        cost_text("make book", 10.0, 0)
