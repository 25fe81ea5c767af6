"""The book's statistics: one policy for every number reported over several seeds.

The rules (the book's methods page states them for readers):

1. **Paired seeds, paired differences.** A seed draws the data subset, the initial weights and the
   batch order, so two settings run with the same seeds are compared *within* each seed:
   :func:`compare_paired` gives the mean difference, its Student-t 95% interval, the paired
   t-test's p-value and the number of seeds whose difference has the sign of the mean. The verdict
   ("helps", "hurts", "no measurable difference") comes from that interval, never from whether
   two separate intervals overlap.
2. **Collapsed runs get counts, not intervals.** A run whose accuracy is within
   :data:`COLLAPSE_MARGIN` of chance (or that diverged) has collapsed: the outcome is two-valued
   and a t-interval of it is meaningless (it can reach below 0% or above every run).
   :func:`summarize` and :func:`compare_paired` then report counts (``n_collapsed``) and leave
   the interval NaN; plots draw the runs as dots. :func:`ci_text` never prints an accuracy
   interval outside [0%, 100%].
3. **A family of verdicts is corrected.** Several verdicts made together (an ablation table)
   are Holm-adjusted (:func:`holm`, :func:`adjust`); the adjusted decision is the verdict and
   the intervals beside it are unadjusted.
4. **Settings are chosen on validation data** (:func:`best_on_validation`); the test set is read
   once, for the chosen setting.
5. **Timings are compared as ratios** of repeated, interleaved measurements
   (:func:`ratio_interval`); an interval that contains 1 is "no measurable difference on this
   machine" (:func:`timing_verdict`).

Building blocks: :func:`confidence_interval` (mean and t-interval), :func:`summarize` (rows
grouped by a parameter), :func:`paired_difference` (a sweep's paired difference),
:func:`verdict` (a word for an interval), :func:`ci_text` (an interval as text).
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from scipy import stats as _scipy_stats

__all__ = [
    "ALPHA",
    "CHANCE",
    "COLLAPSE_MARGIN",
    "COMPARISONS",
    "Comparison",
    "Sweep",
    "adjust",
    "best_on_validation",
    "ci_compare",
    "ci_text",
    "collapsed",
    "compare_paired",
    "compare_rows",
    "goal_status",
    "confidence_interval",
    "hashable",
    "holm",
    "paired_difference",
    "paired_t_test",
    "ratio_interval",
    "summarize",
    "timing_verdict",
    "verdict",
]

ALPHA = 0.05  # the level of every test (95% intervals)
CHANCE = 0.1  # chance accuracy of the book's datasets (10 classes each)
# A run within 15 points of chance has collapsed (on 10 classes: at most 25%). A network that
# learns reaches far more; runs in between are collapses it partly recovered from (measured:
# 21.6% with a training loss at ln 10 after three epochs at 10%), not a point on a bell curve.
COLLAPSE_MARGIN = 0.15

Row = dict[str, Any]
_MISSING = object()  # "no value given", distinct from None (a legitimate parameter value)


class Sweep(Protocol):
    """What :func:`paired_difference` reads of a sweep (a
    :class:`~cnnlab.experiments.SweepResult`)."""

    param: str  # the field that was varied
    values: list[Any]  # its values, in order
    rows: list[Row]  # one per (value, seed)


def hashable(value: Any) -> Any:
    """``value`` as a dictionary key: lists and dicts as their sorted JSON text."""
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def confidence_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval of the mean.

    ``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)`` with ``s`` the sample standard deviation.
    Non-finite values are dropped. One value has no interval: ``(value, nan, nan)``.

    Returns:
        ``(mean, low, high)``; all NaN when no finite value is left.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return (math.nan, math.nan, math.nan)
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return (mean, math.nan, math.nan)  # one value: no spread, so no interval
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def collapsed(row: Row | float, chance: float = CHANCE, margin: float = COLLAPSE_MARGIN,
              metric: str = "test_acc") -> bool:
    """Whether a run collapsed: it diverged, or its accuracy (``row[metric]``, or ``row`` itself
    when given a number) is within ``margin`` of ``chance`` or not finite."""
    if isinstance(row, Mapping):
        if row.get("diverged"):
            return True
        value = row.get(metric)
        if value is None:
            return False
    else:
        value = row
    value = float(value)
    return not math.isfinite(value) or value <= chance + margin


def summarize(
    rows: Iterable[Row], param: str, metrics: Sequence[str] = ("test_acc", "train_acc", "gap"),
    *, chance: float | None = CHANCE,
) -> list[Row]:
    """Group ``rows`` by ``param`` (in first-seen order) into mean / 95% CI per metric.

    Each summary row has ``param``'s value, ``n`` runs, ``n_diverged``, ``n_collapsed`` (runs
    that diverged or whose ``test_acc`` is within :data:`COLLAPSE_MARGIN` of ``chance``; see
    :func:`collapsed`), and for every metric ``m``: ``m`` (the mean), ``m_low`` and ``m_high``
    (the 95% CI). Collapsed runs count in ``n`` and are averaged in, so collapse lowers the mean
    visibly; but where any run of a group collapsed, the outcome is two-valued and every
    interval of the group is NaN (report the count and the runs instead). ``chance=None``
    never counts a run as collapsed (for rows that are not accuracies of a classifier).
    """
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(hashable(row[param]), []).append(row)
    out = []
    for group in groups.values():
        n_collapsed = 0 if chance is None else sum(collapsed(r, chance) for r in group)
        summary: Row = {param: group[0][param], "n": len(group),
                        "n_diverged": sum(bool(r.get("diverged")) for r in group),
                        "n_collapsed": n_collapsed}
        for m in metrics:
            mean, low, high = confidence_interval([r[m] for r in group if m in r])
            if n_collapsed:
                low = high = math.nan
            summary.update({m: mean, f"{m}_low": low, f"{m}_high": high})
        summary["train_time"] = sum(r.get("train_time", 0.0) for r in group) / len(group)
        out.append(summary)
    return out


def paired_difference(
    result: Sweep, value: Any, metric: str = "test_acc", baseline: Any = _MISSING
) -> tuple[float, float, float]:
    """Mean and 95% CI of ``metric(value) - metric(baseline)``, paired by seed.

    Each seed draws the data subset, the initial weights and the batch order, so the difference
    within a seed removes most of the seed-to-seed noise that separate intervals carry.
    ``baseline`` defaults to the sweep's first value (e.g. "off").
    """
    base = result.values[0] if baseline is _MISSING else baseline
    by = {(hashable(r[result.param]), r["seed"]): r[metric] for r in result.rows}
    seeds = sorted({r["seed"] for r in result.rows})
    missing = [(v, s) for v in (value, base) for s in seeds if (hashable(v), s) not in by]
    if missing:
        raise ValueError(f"Invalid value for a paired difference: no run for (value, seed) "
                         f"{missing[0]!r} in the sweep over {result.param!r}")
    return confidence_interval([by[hashable(value), s] - by[hashable(base), s] for s in seeds])


def verdict(low: float, high: float, up: str = "raises", down: str = "lowers",
            same: str = "does not measurably change") -> str:
    """A word for a difference's 95% interval ``[low, high]``: ``up`` if it lies above 0,
    ``down`` if below, ``same`` if it contains 0."""
    return up if low > 0 else down if high < 0 else same


def ci_compare(a: Row, b: Row, metric: str = "test_acc") -> int:
    """Compare two summary rows by their 95% confidence intervals of ``metric``.

    Returns:
        ``+1`` when ``a``'s interval lies entirely above ``b``'s, ``-1`` when entirely below,
        ``0`` when they overlap (no difference is established; a conservative rule: intervals
        that overlap a little can still differ at the 5% level). NaN bounds give ``0``.
    """
    a_low, a_high = a[f"{metric}_low"], a[f"{metric}_high"]
    b_low, b_high = b[f"{metric}_low"], b[f"{metric}_high"]
    if a_low > b_high:
        return 1
    if a_high < b_low:
        return -1
    return 0


def ci_text(row: Row, metric: str = "test_acc", *, percent: bool = True, digits: int = 1,
            label: str = "", sep: str = "\u2013", unit_each: bool = False) -> str:
    """A summary row's mean of ``metric`` and its 95% CI as text.

    The default is ``"89.1% (88.8\u201389.5%)"``; ``label`` goes before the interval and ``sep``
    between its ends, and ``unit_each`` writes the unit on both ends:
    ``ci_text(row, label="95% CI ", sep=" to ", unit_each=True)`` gives
    ``"89.1% (95% CI 88.8% to 89.5%)"``. ``percent=False`` writes plain numbers.

    A row with collapsed runs (``n_collapsed`` > 0, no interval) gives the count instead:
    ``"18.6% (3 of 5 runs collapsed)"``, and one run gives ``"10.0% (1 seed: no interval)"``.
    An accuracy's interval (a metric ending in ``_acc``) is cut to [0%, 100%].
    """
    scale, unit = (100, "%") if percent else (1, "")
    mean, low, high = (row[k] for k in (metric, f"{metric}_low", f"{metric}_high"))
    if row.get("n_collapsed"):
        count = f"{row['n_collapsed']} of {row['n']} runs collapsed"
        return f"{scale * mean:.{digits}f}{unit} ({count})"
    if row.get("n") == 1 or not (math.isfinite(low) and math.isfinite(high)):
        why = "1 seed: no interval" if row.get("n") == 1 else "no interval"
        return f"{scale * mean:.{digits}f}{unit} ({why})"
    if metric.endswith("_acc"):
        low, high = max(low, 0.0), min(high, 1.0)
    mean, low, high = scale * mean, scale * low, scale * high
    first = unit if unit_each else ""
    return (f"{mean:.{digits}f}{unit} ({label}{low:.{digits}f}{first}{sep}"
            f"{high:.{digits}f}{unit})")


# ----------------------------------------------------------------------------- paired comparisons


def paired_t_test(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test of per-seed differences ``diffs`` (the same as
    ``scipy.stats.ttest_rel(a, b).pvalue`` for ``diffs = a - b``). Identical differences give
    0 (all non-zero) or 1 (all zero); fewer than two give NaN."""
    xs = [float(d) for d in diffs]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    if sd == 0 or sd <= 1e-12 * abs(mean):  # identical differences (up to rounding)
        return 0.0 if mean != 0 else 1.0
    t = mean / (sd / math.sqrt(n))
    return float(2 * _scipy_stats.t.sf(abs(t), n - 1))


@dataclass(frozen=True)
class Comparison:
    """Setting ``a`` against setting ``b``, paired by seed (see :func:`compare_paired`)."""

    diff: float  # mean over seeds of a - b
    low: float  # 95% t-interval of the mean difference (unadjusted); NaN when runs collapsed
    high: float
    p: float  # two-sided paired t-test; NaN when runs collapsed
    n: int  # seeds (pairs)
    n_agree: int  # seeds whose difference has the sign of the mean difference
    collapsed_a: int = 0  # runs of a that collapsed
    collapsed_b: int = 0  # runs of b that collapsed
    p_adjusted: float | None = None  # Holm-adjusted p-value, when made in a family
    family: int = 1  # verdicts made together (the Holm family's size)

    @property
    def collapsed(self) -> int:
        """Collapsed runs of either setting (no t-interval, no test when > 0)."""
        return self.collapsed_a + self.collapsed_b

    @property
    def decision(self) -> int | None:
        """``+1`` (a is higher), ``-1`` (lower), ``0`` (no measurable difference), from the
        Holm-adjusted p-value when there is one, else from the interval; ``None`` when runs
        collapsed (no test was made)."""
        p = self.p if self.p_adjusted is None else self.p_adjusted
        if self.collapsed or not math.isfinite(p):
            return None
        if p >= ALPHA:
            return 0
        return 1 if self.diff > 0 else -1

    def word(self, up: str = "helps", down: str = "hurts",
             same: str = "no measurable difference") -> str:
        """The verdict in words (``"not tested: k runs collapsed"`` when runs collapsed)."""
        decision = self.decision
        if decision is None:
            return (f"not tested: {self.collapsed} of {2 * self.n} runs collapsed"
                    if self.collapsed else "not tested")
        return {1: up, -1: down, 0: same}[decision]

    def text(self, *, percent: bool = True, digits: int = 1) -> str:
        """``"+11.9 points (95% CI -0.0 to +23.8; 4 of 5 seeds agree)"``, or the collapse counts.
        The interval is unadjusted (labelled so when the comparison is in a family)."""
        scale, unit = (100, " points") if percent else (1, "")
        head = f"{scale * self.diff:+.{digits}f}{unit}"
        if self.collapsed:
            return (f"{head} (collapsed runs: {self.collapsed_a} vs {self.collapsed_b} "
                    f"of {self.n}; no interval)")
        label = "unadjusted 95% CI" if self.family > 1 else "95% CI"
        return (f"{head} ({label} {scale * self.low:+.{digits}f} to "
                f"{scale * self.high:+.{digits}f}; {self.n_agree} of {self.n} seeds agree)")


def compare_paired(a: Mapping[int, float], b: Mapping[int, float], *,
                   collapsed_a: int = 0, collapsed_b: int = 0) -> Comparison:
    """Compare per-seed values ``a`` and ``b`` (``seed -> value``) within each seed.

    Both must have the same seeds. Returns the mean of ``a[s] - b[s]``, its 95% t-interval, the
    paired t-test's p-value and how many seeds agree in sign with the mean. ``collapsed_a`` /
    ``collapsed_b``: runs of each setting that collapsed; when either is non-zero no interval or
    test is made (both NaN) and the counts are reported instead.
    """
    if set(a) != set(b):
        raise ValueError(f"Invalid pairing: seeds {sorted(a)} and {sorted(b)} differ")
    if not a:
        raise ValueError("Invalid pairing: no seeds to compare")
    diffs = [float(a[s]) - float(b[s]) for s in sorted(a)]
    mean, low, high = confidence_interval(diffs)
    sign = (mean > 0) - (mean < 0)
    agree = sum(((d > 0) - (d < 0)) == sign for d in diffs)
    p = paired_t_test(diffs)
    if collapsed_a or collapsed_b:
        low = high = p = math.nan
    return Comparison(diff=mean, low=low, high=high, p=p, n=len(diffs), n_agree=agree,
                      collapsed_a=collapsed_a, collapsed_b=collapsed_b)


def compare_rows(rows_a: Iterable[Row], rows_b: Iterable[Row], metric: str = "test_acc", *,
                 chance: float | None = CHANCE) -> Comparison:
    """:func:`compare_paired` of two lists of run rows, paired by their ``seed``; runs that
    :func:`collapsed` (by ``test_acc``; ``chance=None``: never) are counted."""
    rows_a, rows_b = list(rows_a), list(rows_b)
    for rows in (rows_a, rows_b):
        seeds = [r["seed"] for r in rows]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"Invalid pairing: repeated seeds {sorted(seeds)}")

    def count(rows: list[Row]) -> int:
        return 0 if chance is None else sum(collapsed(r, chance) for r in rows)

    return compare_paired({r["seed"]: r[metric] for r in rows_a},
                          {r["seed"]: r[metric] for r in rows_b},
                          collapsed_a=count(rows_a), collapsed_b=count(rows_b))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order.

    Sort the ``m`` finite p-values ascending; the ``i``-th smallest (from 0) is adjusted to
    ``max over j <= i of min(1, (m - j) * p_(j))``. A verdict is made where the adjusted value is
    below :data:`ALPHA`; this keeps the chance of any false verdict in the family at most
    ``ALPHA``. NaN (no test made) stays NaN and does not count in ``m``.
    """
    finite = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(finite)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def adjust(comparisons: Mapping[str, Comparison]) -> dict[str, Comparison]:
    """The comparisons of one family (e.g. an ablation table), Holm-adjusted: each gets
    ``p_adjusted`` and ``family`` (the number of tests made), so its :attr:`Comparison.decision`
    is the adjusted one."""
    names = list(comparisons)
    adjusted = holm([comparisons[n].p for n in names])
    made = sum(math.isfinite(p) for p in adjusted)
    return {n: replace(comparisons[n], p_adjusted=None if not math.isfinite(q) else q,
                       family=made)
            for n, q in zip(names, adjusted)}


# ----------------------------------------------------------------------------- choice and timing


def best_on_validation(summary: Sequence[Row], param: str, metric: str = "val_acc") -> Any:
    """The value of ``param`` whose summary row has the highest mean validation ``metric`` (the
    first on ties). The test set plays no part in the choice."""
    if not summary:
        raise ValueError("Invalid summary: no rows to choose from")
    if metric not in summary[0]:
        raise ValueError(f"Invalid metric: {metric!r} is not in the summary (summarize it)")
    best = max(range(len(summary)), key=lambda i: (summary[i][metric], -i))
    return summary[best][param]


def ratio_interval(a: Sequence[float], b: Sequence[float],
                   level: float = 0.95) -> tuple[float, float, float]:
    """The ratio ``a / b`` of two timings, from repeated measurements taken in turns (``a[i]``
    and ``b[i]`` measured next to each other, so that a slow spell of the machine hits both).

    Returns the geometric mean of ``a[i] / b[i]`` and its t-interval (computed on the log
    ratios, then exponentiated)."""
    if len(a) != len(b) or not a:
        raise ValueError(f"Invalid timings: {len(a)} and {len(b)} measurements (need the same "
                         "number, at least one each)")
    if any(not (x > 0) for x in (*a, *b)):
        raise ValueError("Invalid timings: every time must be > 0 seconds")
    mean, low, high = confidence_interval([math.log(x / y) for x, y in zip(a, b)], level)
    return math.exp(mean), math.exp(low), math.exp(high)


def timing_verdict(low: float, high: float, *, faster: str = "faster",
                   slower: str = "slower") -> str:
    """A word for the interval ``[low, high]`` of a time ratio ``a / b``: ``faster`` when it lies
    below 1 (a takes less time), ``slower`` above, otherwise "no measurable difference on this
    machine"."""
    if high < 1:
        return faster
    if low > 1:
        return slower
    return "no measurable difference on this machine"


# figure <comparison> threshold: a goal's comparisons (goal_status, cnnlab.bench.report.Goal)
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def goal_status(low: float, high: float, comparison: str, threshold: float) -> str:
    """A figure's 95% interval ``[low, high]`` against a goal ``figure <comparison> threshold``:
    ``"met"`` when the whole interval meets it, ``"missed"`` when none of it does,
    ``"undecided"`` when the interval holds the threshold. A figure without an interval passes
    its value as both ends."""
    if comparison not in COMPARISONS:
        raise ValueError(f"Invalid comparison: {comparison!r} (choose from {list(COMPARISONS)})")
    met = [bool(COMPARISONS[comparison](end, threshold)) for end in (low, high)]
    return "met" if all(met) else "missed" if not any(met) else "undecided"
