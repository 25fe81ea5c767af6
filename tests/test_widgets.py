import pytest

from cnnlab.config import RunConfig
from cnnlab.widgets import PanelState, describe, sweep_panel

from .test_experiments import CALLS, fake_runner


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def diverging_runner(config, seed):
    row = fake_runner(config, seed)
    return row | {"test_acc": 0.1, "diverged": seed == 0}


def test_panel_trains_and_accumulates(tmp_cache):
    state = PanelState(RunConfig(), "dropout", runner=fake_runner)
    msg = state.train(0.5, 3)
    assert msg.startswith("dropout = 0.5: test_acc 85.1%") and "over 3 seeds" in msg
    state.train(0.0, 2)
    assert [s["dropout"] for s in state.summary()] == [0.0, 0.5]
    state.train(0.5, 1)  # retraining a value replaces its runs
    assert [s["n"] for s in state.summary()] == [2, 1]
    fig = state.figure()
    assert len(fig.axes[0].lines[0].get_xdata()) == 2


@pytest.mark.parametrize("value,seeds,match", [(1.5, 2, "Invalid dropout value: 1.5"),
                                                (-0.1, 2, "Invalid dropout value: -0.1"),
                                                (0.5, 0, "Invalid number of seeds: 0")])
def test_bad_input_is_a_message_not_a_crash(tmp_cache, value, seeds, match):
    state = PanelState(RunConfig(), "dropout", runner=fake_runner)
    assert match in state.train(value, seeds)
    assert CALLS == [] and state.rows == []


def test_divergence_is_reported(tmp_cache):
    state = PanelState(RunConfig(), "lr", runner=diverging_runner)
    assert "1 of 3 runs diverged" in state.train(10.0, 3)


def test_describe():
    s = {"p": 0.1, "test_acc": 0.9, "test_acc_low": 0.88, "test_acc_high": 0.92, "n": 3,
         "n_diverged": 0}
    assert describe(s, "p") == "p = 0.1: test_acc 90.0% (95% CI 88.0%-92.0%) over 3 seeds."
    one = {**s, "n": 1, "test_acc_low": float("nan"), "test_acc_high": float("nan")}
    assert describe(one, "p") == "p = 0.1: test_acc 90.0% (1 seed: no interval) over 1 seed."
    bad = {**s, "n": 5, "n_collapsed": 2, "test_acc_low": float("nan")}
    assert describe(bad, "p") == "p = 0.1: test_acc 90.0% (2 of 5 runs collapsed) over 5 seeds."


def test_sweep_panel_builds_and_its_button_trains(tmp_cache):
    panel = sweep_panel(RunConfig(), "dropout", [0.0, 0.25, 0.5], runner=fake_runner, seeds=2)
    slider, seeds, button = panel.children[0].children
    assert slider.value == 0.25 and seeds.value == 2
    button.click()
    assert "dropout = 0.25" in panel.children[1].value and len(CALLS) == 2
