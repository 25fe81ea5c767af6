"""cnnlab.runtimes: the probe run and the run-time phrase chapters glue into their opening box."""

from __future__ import annotations

import math
import time

import pytest

from cnnlab.runtimes import format_duration, probe_run, runtime_text

from .scripts import load_script

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


def test_cost_text_with_a_probe_at_both_ends_uses_their_mean_and_flags_drift():
    from cnnlab.runtimes import cost_text
    assert cost_text("make book", 500.0, 0.5, 0.52) == (
        "make book: 8 min 20 s = 980 probe runs (probe 0.51 s, the mean of 0.50 s at the start "
        "and 0.52 s at the end, +4%)")
    slow = cost_text("make test", 500.0, 0.4, 0.6)  # the machine slowed by half during the run
    assert "= 1,000 probe runs" in slow and "+50%: the machine's speed changed" in slow
    assert "changed" not in cost_text("x", 1.0, 1.0, 0.91)
    with pytest.raises(ValueError, match="Invalid probe time: nan"):
        cost_text("make book", 10.0, 0.5, float("nan"))


def test_probe_unit_is_the_start_probe_or_the_mean_of_both_ends():
    from cnnlab.runtimes import probe_unit
    assert probe_unit(0.5) == 0.5 and probe_unit(0.4, 0.6) == pytest.approx(0.5)
    for bad in (0, -1.0, float("inf"), "0.5"):
        with pytest.raises(ValueError, match="Invalid probe time"):
            probe_unit(0.5, bad)


def test_chapter_costs_lists_each_notebook_longest_first():
    from cnnlab.runtimes import chapter_costs
    assert chapter_costs({"dropout": 30.0, "choosing": 129.0}, 0.5) == [
        "  choosing  2 min 09 s =    258 probe runs",
        "  dropout         30 s =     60 probe runs"]
    assert chapter_costs({}, 0.5) == []
    with pytest.raises(ValueError, match="Invalid probe time"):
        chapter_costs({"a": 1.0}, 0)


def test_cost_script_lists_the_chapters_a_build_executed(tmp_path):
    import nbformat
    from jupyter_cache import get_cache
    cost = load_script("cost")
    assert cost.executed_since(tmp_path / "none", 0.0) == {}
    cache = get_cache(str(tmp_path / "jc"))
    for name in ("old", "new"):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print('{name}')")])
        nb_path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, nb_path)
        if name == "new":
            since = time.time()
        cache.cache_notebook_file(nb_path, check_validity=False, data={"execution_seconds": 12.5})
    assert cost.executed_since(tmp_path / "jc", since) == {"new": 12.5}
    assert set(cost.executed_since(tmp_path / "jc", 0.0)) == {"old", "new"}
