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
    mean, low, high = confidence_interval([0.5])  # one value: no interval
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
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


# ----------------------------------------------------------------------------- the policy

from cnnlab.stats import (  # noqa: E402
    Comparison,
    adjust,
    best_on_validation,
    collapsed,
    compare_paired,
    compare_rows,
    holm,
    paired_t_test,
    ratio_interval,
    timing_verdict,
)


def test_compare_paired_matches_scipy_ttest_rel_and_t_interval():
    a = {0: 0.71, 1: 0.64, 2: 0.80, 3: 0.69, 4: 0.75}
    b = {0: 0.60, 1: 0.62, 2: 0.55, 3: 0.58, 4: 0.61}
    c = compare_paired(a, b)
    diffs = [a[s] - b[s] for s in range(5)]
    ref = stats.ttest_rel([a[s] for s in range(5)], [b[s] for s in range(5)])
    lo, hi = stats.t.interval(0.95, 4, loc=sum(diffs) / 5, scale=stats.sem(diffs))
    assert c.p == pytest.approx(ref.pvalue)
    assert (c.diff, c.low, c.high) == pytest.approx((sum(diffs) / 5, lo, hi))
    assert c.n == 5 and c.n_agree == 5 and c.decision == 1 and c.word() == "helps"


def test_compare_paired_counts_seeds_that_agree_and_says_no_difference():
    c = compare_paired({0: 0.5, 1: 0.6, 2: 0.4}, {0: 0.45, 1: 0.5, 2: 0.5})
    assert c.n_agree == 2  # +0.05, +0.10 agree with the mean (+0.0167); -0.10 does not
    assert c.decision == 0 and c.word() == "no measurable difference"
    assert c.word(same="same") == "same"
    assert "2 of 3 seeds agree" in c.text()


def test_interval_and_test_agree():
    """The 95% interval excludes 0 exactly when the paired t-test's p is below 0.05."""
    import random
    rng = random.Random(0)
    for _ in range(200):
        a = {s: rng.gauss(0.7, 0.05) for s in range(5)}
        b = {s: a[s] + rng.gauss(0.02, 0.03) for s in range(5)}
        c = compare_paired(a, b)
        assert (c.low > 0 or c.high < 0) == (c.p < 0.05)


def test_paired_t_test_edge_cases():
    assert paired_t_test([0.1, 0.1, 0.1]) == 0.0
    assert paired_t_test([0.0, 0.0]) == 1.0
    assert math.isnan(paired_t_test([0.3]))


def test_compare_paired_rejects_unpaired_seeds():
    with pytest.raises(ValueError, match="seeds"):
        compare_paired({0: 1.0, 1: 2.0}, {0: 1.0, 2: 2.0})
    with pytest.raises(ValueError, match="repeated seeds"):
        compare_rows([{"seed": 0, "test_acc": 0.5}] * 2, [{"seed": 0, "test_acc": 0.5}])


def test_collapsed_runs_get_counts_not_intervals():
    assert collapsed(0.24) and not collapsed(0.26)
    assert collapsed({"test_acc": 0.9, "diverged": True})
    assert collapsed(float("nan"))
    rows = [{"lr": 1.0, "seed": s, "test_acc": acc, "diverged": False}
            for s, acc in enumerate([0.1, 0.1, 0.1, 0.6, 0.03])]
    (s,) = summarize(rows, "lr", ("test_acc",))
    assert s["n_collapsed"] == 4 and s["test_acc"] == pytest.approx(0.186)
    assert math.isnan(s["test_acc_low"]) and math.isnan(s["test_acc_high"])
    assert ci_text(s) == "18.6% (4 of 5 runs collapsed)"
    other = [{**r, "lr": 0.1, "test_acc": 0.8} for r in rows]
    c = compare_rows(other, rows)
    assert c.collapsed_b == 4 and c.decision is None and math.isnan(c.low)
    assert c.word().startswith("not tested: 4 of 10 runs collapsed")
    assert "no interval" in c.text()


def test_ci_text_never_prints_an_accuracy_outside_0_to_100():
    assert ci_text(_row(0.99, 0.97, 1.02)) == "99.0% (97.0\u2013100.0%)"
    gap = {"gap": -0.02, "gap_low": -0.05, "gap_high": 0.01}
    assert ci_text(gap, "gap") == "-2.0% (-5.0\u20131.0%)"  # a gap may be negative


def test_holm_against_a_hand_checked_example():
    # m = 4; sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06), 0.5 (x1 = 0.5)
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    # step-down monotonicity: 0.04 x 2 = 0.08 would be below 0.09 = 0.03 x 3, so it is raised
    assert holm([0.03, 0.04, 0.9]) == pytest.approx([0.09, 0.09, 0.9])
    q = holm([0.01, float("nan"), 0.04])  # no test made: NaN, and not counted in m
    assert q[0] == pytest.approx(0.02) and math.isnan(q[1]) and q[2] == pytest.approx(0.04)


def test_adjust_makes_the_family_decision():
    def comp(p: float, diff: float = 0.1) -> Comparison:
        return Comparison(diff=diff, low=0.01, high=0.2, p=p, n=5, n_agree=5)
    out = adjust({"a": comp(0.01), "b": comp(0.02), "c": comp(0.04, -0.1)})
    assert [out[k].p_adjusted for k in "abc"] == pytest.approx([0.03, 0.04, 0.04])
    assert [out[k].decision for k in "abc"] == [1, 1, -1]
    out = adjust({"a": comp(0.01), "b": comp(0.03), "c": comp(0.04), "d": comp(0.5)})
    # unadjusted, b and c would be verdicts; Holm keeps only a (0.04) and drops b (0.09)
    assert [out[k].decision for k in "abcd"] == [1, 0, 0, 0]
    assert out["b"].family == 4 and "unadjusted 95% CI" in out["b"].text()


def test_best_on_validation_ignores_the_test_set():
    summary = [{"p": 0.0, "val_acc": 0.80, "test_acc": 0.90},
               {"p": 0.5, "val_acc": 0.85, "test_acc": 0.70},
               {"p": 0.9, "val_acc": 0.85, "test_acc": 0.95}]
    assert best_on_validation(summary, "p") == 0.5  # highest validation; first of a tie
    with pytest.raises(ValueError, match="val_loss"):
        best_on_validation(summary, "p", "val_loss")


def test_ratio_interval_and_timing_verdict():
    a, b = [1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9, 2.0]
    ratio, low, high = ratio_interval(a, b)
    logs = [math.log(x / y) for x, y in zip(a, b)]
    lo, hi = stats.t.interval(0.95, 3, loc=sum(logs) / 4, scale=stats.sem(logs))
    assert ratio == pytest.approx(math.exp(sum(logs) / 4))
    assert (low, high) == pytest.approx((math.exp(lo), math.exp(hi)))
    assert timing_verdict(low, high) == "faster"
    assert timing_verdict(1 / high, 1 / low) == "slower"
    assert timing_verdict(0.9, 1.2) == "no measurable difference on this machine"
    with pytest.raises(ValueError, match="same"):
        ratio_interval([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        ratio_interval([0.0], [1.0])


def test_one_seed_claims_no_interval():
    (s,) = summarize([{"lr": 0.1, "seed": 0, "test_acc": 0.8}], "lr", ("test_acc",))
    assert s["n"] == 1 and math.isnan(s["test_acc_low"]) and math.isnan(s["test_acc_high"])
    assert ci_text(s) == "80.0% (1 seed: no interval)"
    assert ci_text({"t": 1.0, "t_low": math.nan, "t_high": math.nan, "n": 3}, "t",
                   percent=False) == "1.0 (no interval)"


def test_goal_status_is_met_only_when_the_whole_interval_meets_the_goal():
    from cnnlab.stats import goal_status
    assert goal_status(0.930, 0.932, ">=", 0.93) == "met"  # the low end on the threshold
    assert goal_status(0.925, 0.935, ">=", 0.93) == "undecided"
    assert goal_status(0.920, 0.929, ">=", 0.93) == "missed"
    assert goal_status(2.4, 2.4, "<=", 3.0) == "met"  # a figure without an interval
    assert goal_status(2.9, 3.1, "<", 3.0) == "undecided"
    with pytest.raises(ValueError, match="Invalid comparison: '=>'"):
        goal_status(1, 2, "=>", 1.5)
