"""The book's statistics: intervals, summaries over seeds, paired differences and verdicts.

Every number the book reports over several seeds goes through here, so that every chapter uses
the same rules:

* :func:`confidence_interval`: mean and Student-t 95% interval of the mean.
* :func:`summarize`: rows of runs grouped by a parameter, mean and interval per metric.
* :func:`paired_difference`: the difference between two settings *within* each seed (the seed
  draws the subset, the initial weights and the batch order, so pairing removes most of the
  seed-to-seed noise), with its interval.
* :func:`verdict`, :func:`ci_compare`: a word or a sign for an interval.
* :func:`ci_text`: an interval as text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from scipy import stats as _scipy_stats

__all__ = [
    "Sweep",
    "ci_compare",
    "ci_text",
    "confidence_interval",
    "hashable",
    "paired_difference",
    "summarize",
    "verdict",
]

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
    Non-finite values are dropped; with a single value the interval is ``(mean, mean)``.

    Returns:
        ``(mean, low, high)``; all NaN when no finite value is left.
    """
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return (math.nan, math.nan, math.nan)
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return (mean, mean, mean)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def summarize(
    rows: Iterable[Row], param: str, metrics: Sequence[str] = ("test_acc", "train_acc", "gap")
) -> list[Row]:
    """Group ``rows`` by ``param`` (in first-seen order) into mean / 95% CI per metric.

    Each summary row has ``param``'s value, ``n`` runs, ``n_diverged``, and for every metric
    ``m``: ``m`` (the mean), ``m_low`` and ``m_high`` (the CI). Diverged runs count in ``n`` and
    are averaged in with their (chance-level) accuracy, so divergence lowers the mean visibly.
    """
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        groups.setdefault(hashable(row[param]), []).append(row)
    out = []
    for group in groups.values():
        summary: Row = {param: group[0][param], "n": len(group),
                        "n_diverged": sum(bool(r.get("diverged")) for r in group)}
        for m in metrics:
            mean, low, high = confidence_interval([r[m] for r in group if m in r])
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
    """
    scale, unit = (100, "%") if percent else (1, "")
    mean, low, high = (scale * row[k] for k in (metric, f"{metric}_low", f"{metric}_high"))
    first = unit if unit_each else ""
    return (f"{mean:.{digits}f}{unit} ({label}{low:.{digits}f}{first}{sep}"
            f"{high:.{digits}f}{unit})")
