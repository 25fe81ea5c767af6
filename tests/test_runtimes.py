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


def M(start: float, probe: float, label: str = "", took: float = 3.0):  # noqa: N802
    """A probe mark: started at ``start``, took ``took`` seconds, measured ``probe``."""
    from cnnlab.runtimes import ProbeMark
    return ProbeMark(start, start + took, probe, label)


def test_each_stretch_is_divided_by_the_mean_of_the_probes_at_its_own_ends():
    from cnnlab.runtimes import Stretch, stretches
    # 100 s at 0.5 s a probe, then 150 s while the machine slowed to 1.0 s a probe
    marks = [M(0, 0.5, "unit"), M(103, 0.5, "dropout"), M(256, 1.0)]
    assert stretches(marks) == [Stretch("unit", 100.0, 200.0, 200.0, 200.0),
                                Stretch("dropout", 150.0, 200.0, 150.0, 300.0)]
    # one probe for the whole 250 s (the old way) would have said 250 / 0.75 = 333
    with pytest.raises(ValueError, match="need a probe at the start and the end"):
        stretches(marks[:1])
    with pytest.raises(ValueError, match="'dropout' starts before the one before it ends"):
        stretches([M(0, 0.5), M(2, 0.5, "dropout")])
    with pytest.raises(ValueError, match="Invalid probe time: 0"):
        stretches([M(0, 0.5), M(10, 0)])


def test_cost_text_sums_the_stretches_and_names_those_the_speed_changed_in():
    from cnnlab.runtimes import cost_text
    assert cost_text("make book", [M(0, 0.5, took=2), M(494, 0.5)]) == (
        "make book: 8 min 12 s = 984 probe runs (divided by the mean of the probes at its start "
        "and end; the probe took 0.50-0.50 s)")
    text = cost_text("make test", [M(0, 0.5, "unit"), M(103, 0.52, "dropout"), M(256, 1.0)])
    assert text == (
        "make test: 4 min 10 s = 393 probe runs (2 stretches, each divided by the mean of the "
        "probes at its ends; the probe took 0.50-1.00 s; the machine's speed changed by more "
        "than 10% during dropout: 342-488 had it changed at once) + 3 s in the 1 probe between")
    assert "changed" not in cost_text("x", [M(0, 1.0), M(10, 0.91)])


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


def test_stretch_costs_lists_each_part_in_time_order_and_adds_up_repeated_labels():
    from cnnlab.runtimes import Stretch, stretch_costs
    parts = [Stretch("unit tests", 240.0, 500.0, 480, 520), Stretch("dropout", 30.0, 60.0, 60, 60),
             Stretch("unit tests", 10.0, 20.0, 20, 20), Stretch("", 5.0, 10.0, 10, 10)]
    assert stretch_costs(parts) == ["  unit tests    4 min 10 s =    520 probe runs",
                                    "  dropout             30 s =     60 probe runs",
                                    "  (unlabelled)         5 s =     10 probe runs"]


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


def test_the_cost_script_probes_between_the_parts_of_every_open_target(tmp_path, monkeypatch):
    cost = load_script("cost")
    state, taken = tmp_path / "cost", []

    def probe() -> float:
        taken.append(0.5 + 0.01 * len(taken))
        return taken[-1]

    assert cost.mark("dropout", state, probe) is None and taken == []  # nothing open: no probe
    with pytest.raises(SystemExit, match="`make book` was not started"):
        cost.stop("book", state, probe)
    assert cost.start("test", "unit tests", state, probe).label == "unit tests"
    # as pytest -p cost runs it before each notebook
    monkeypatch.setattr(cost, "STATE", state)
    monkeypatch.setattr(cost, "probe_run", probe)
    cost.pytest_runtest_setup(type("Item", (), {"path": tmp_path / "dropout.ipynb"})())
    cost.start("book", "book build", state, probe)  # nested in make test: its probes mark both
    book = cost.stop("book", state, probe, cache=tmp_path / "none")
    assert book[0].startswith("make book: 0 s = 0 probe runs (divided by the mean of the probes "
                              "at its start and end; the probe took 0.52-0.53 s)")
    assert [line.split()[0] for line in book[1:]] == ["book"]
    test = cost.stop("test", state, probe, cache=tmp_path / "none")
    assert test[0].startswith("make test: 0 s = 0 probe runs (4 stretches, each divided by the "
                              "mean of the probes at its ends; the probe took 0.50-0.54 s)")
    assert [line.split(" s =")[0].rsplit(None, 1)[0].strip() for line in test[1:]] == [
        "unit tests", "dropout", "book build", "after make book"]
    assert len(taken) == 5 and cost.open_targets(state) == []
    cost.mark("dropout", state, probe)  # both stopped: no probe
    assert len(taken) == 5
    cost.start("old", "x", state, probe)  # an interrupted run: open for six hours, not longer
    assert cost.open_targets(state) == [state / "old.json"]
    assert cost.open_targets(state, now=time.time() + cost.OPEN_FOR + 1) == []
