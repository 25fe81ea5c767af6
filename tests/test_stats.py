"""cnnlab.stats: the book's one statistics policy, checked against SciPy and by hand."""

import math

import pytest
from scipy import stats

from cnnlab.stats import ci_compare, ci_text, confidence_interval, summarize, verdict


def _row(mean: float, low: float, high: float) -> dict:
    return {"test_acc": mean, "test_acc_low": low, "test_acc_high": high}


def test_confidence_interval_matches_scipy():
    xs = [0.81, 0.84, 0.79, 0.86, 0.83]
    mean, low, high = confidence_interval(xs)
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 5, scale=stats.sem(xs))
    assert mean == pytest.approx(0.826)
    assert (low, high) == pytest.approx((lo, hi))


def test_confidence_interval_edge_cases():
    assert confidence_interval([0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(v) for v in confidence_interval([]))
    assert confidence_interval([1.0, float("nan"), 3.0])[0] == 2.0


def test_summarize_counts_diverged_runs():
    rows = [{"lr": 1.0, "test_acc": 0.1, "diverged": True},
            {"lr": 1.0, "test_acc": 0.9, "diverged": False}]
    (s,) = summarize(rows, "lr", ("test_acc",))
    assert s["n"] == 2 and s["n_diverged"] == 1 and s["test_acc"] == pytest.approx(0.5)


def test_verdict_words_follow_the_interval():
    assert verdict(0.01, 0.02) == "raises"
    assert verdict(-0.02, -0.01) == "lowers"
    assert verdict(-0.01, 0.02) == "does not measurably change"
    assert verdict(0.1, 0.2, "wider", "narrower", "same") == "wider"


def test_ci_compare_needs_separated_intervals() -> None:
    base = _row(0.80, 0.78, 0.82)
    assert ci_compare(_row(0.85, 0.83, 0.87), base) == 1
    assert ci_compare(_row(0.70, 0.69, 0.71), base) == -1
    assert ci_compare(_row(0.83, 0.81, 0.85), base) == 0  # overlapping: not established
    assert ci_compare(_row(0.9, math.nan, math.nan), base) == 0


def test_ci_text() -> None:
    assert ci_text(_row(0.8912, 0.8875, 0.8949)) == "89.1% (88.8\u201389.5%)"
    row = {"t": 2.345, "t_low": 2.0, "t_high": 2.75}
    assert ci_text(row, "t", percent=False, digits=2) == "2.35 (2.00\u20132.75)"
