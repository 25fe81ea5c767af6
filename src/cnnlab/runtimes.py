"""How long a notebook takes to run, in seconds and in probe runs (a machine-independent unit).

A machine's speed varies from hour to hour (on the book's 2-core machine, by up to 2x), so a time
in seconds says little on its own. Each measurement is therefore stored with the time of a *probe
run* taken beside it: one fixed small training run (:func:`probe_run`). A notebook that took 120 s
while the probe took 1.2 s costs 100 probe runs, on any machine, in any hour; a reader multiplies
by the probe's time on their own machine.

The stored form (a JSON file written by a measuring script) is::

    {"meta": {"hardware": "...", "command": "...", "date": "..."},
     "notebooks": {"dropout": {"seconds": 131.2, "probe_seconds": 1.31}, ...}}
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cnnlab.data import load_dataset
from cnnlab.models import build_model
from cnnlab.tables import and_list
from cnnlab.train import fit

__all__ = ["DRIFT_LIMIT", "ProbeMark", "Stretch", "chapter_costs", "cost_text", "format_duration",
           "probe_run", "probe_unit", "runtime_text", "stretch_costs", "stretches"]

# Probes at the two ends of a stretch of work that differ by more than this: the machine's speed
# changed during it, and its figure is uncertain by about as much.
DRIFT_LIMIT = 0.10


def probe_run(repeats: int = 5, *, warmup: bool = True) -> float:
    """Seconds of the probe run (the fastest of ``repeats``): a width-16 :class:`SmallCNN`
    trained for 6 epochs on scikit-learn's digits (always available offline), batch 32, one
    thread.

    The fastest, not the median: another process can only slow a repeat down, so the minimum is
    the machine's own speed, and it varies much less. Measured here in one idle minute, five
    groups of three consecutive probe runs gave medians from 0.57 to 0.72 s (25% apart) and
    minima from 0.55 to 0.59 s (8%). That steadies the probe, not the machine: its speed also
    changes over minutes (the fastest of five probe runs was 0.88 s before one book build and
    0.55 s after it), and that, a probe at the start and the end cannot remove: long work takes
    a probe between its parts, each part measured against its own (:func:`stretches`).

    ``warmup`` first trains one untimed epoch: the first training in a process
    pays a one-time start-up (about 2 s here, three times a whole probe run) that is not the
    machine's speed."""
    if repeats < 1:
        raise ValueError(f"Invalid repeats value: {repeats} (must be >= 1)")
    data = load_dataset("digits", seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if warmup:
            model = build_model(data.input_shape, data.num_classes, seed=0, width=16)
            fit(model, data, epochs=1, lr=0.05, batch_size=32, seed=0, progress=False)
        times = []
        for _ in range(repeats):
            model = build_model(data.input_shape, data.num_classes, seed=0, width=16)
            start = time.perf_counter()
            fit(model, data, epochs=6, lr=0.05, batch_size=32, seed=0, progress=False)
            times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return min(times)


def format_duration(seconds: float) -> str:
    """``75.4`` -> ``"1 min 15 s"``; under a minute, whole seconds (``"42 s"``)."""
    if not seconds >= 0:  # also rejects NaN
        raise ValueError(f"Invalid duration: {seconds!r} (must be a number >= 0)")
    s = round(seconds)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


def runtime_text(runtimes: Mapping[str, Any] | None, name: str) -> str:
    """The stored run time of notebook ``name`` as a phrase for the prose, e.g.
    ``"2 min 05 s (96 probe runs) on a 2-core CPU with an empty run cache"``; says so when
    nothing was measured (``runtimes`` is ``None``, or has no entry for ``name``)."""
    entry = ((runtimes or {}).get("notebooks") or {}).get(name)
    if not entry:
        return "(not measured yet: run scripts/measure_runtimes.py)"
    seconds, probe = float(entry["seconds"]), float(entry["probe_seconds"])
    cores = (runtimes.get("meta") or {}).get("cores")
    where = f"on a {cores}-core CPU" if cores else "on a CPU"
    return (f"{format_duration(seconds)} ({seconds / probe:.0f} probe runs) {where} "
            "with an empty run cache")


def probe_unit(probe_seconds: float, probe_end: float | None = None) -> float:
    """The seconds one probe run stands for: the probe timed at the start, or the mean of it and
    ``probe_end`` (the probe timed again at the end). Raises ``ValueError`` for a time that is
    not a positive number."""
    probes = [probe_seconds] + ([] if probe_end is None else [probe_end])
    for probe in probes:
        if not (isinstance(probe, (int, float)) and probe > 0 and math.isfinite(probe)):
            raise ValueError(f"Invalid probe time: {probe!r} (must be > 0 seconds)")
    return statistics.fmean(probes)


@dataclass(frozen=True)
class ProbeMark:
    """A probe run taken during timed work: when it started and ended (seconds since the epoch),
    the probe's time (:func:`probe_run`), and what the work after it is called (e.g. a chapter)."""

    start: float
    end: float
    probe: float
    label: str = ""


@dataclass(frozen=True)
class Stretch:
    """The work between two probe marks, in seconds and in probe runs."""

    label: str  # the label of the mark it starts at
    seconds: float
    runs: float  # seconds / the mean of the probes at its two ends
    low: float  # seconds / the slower of the two probes: had the speed changed at once
    high: float  # seconds / the faster of the two


def stretches(marks: Sequence[ProbeMark]) -> list[Stretch]:
    """The work between each pair of consecutive ``marks`` (in time order, at least two), each in
    probe runs of its own: its seconds divided by the mean of the probes at its two ends. A long
    job with a probe between its parts follows the machine's speed as it changes (on the book's
    machine it changes over minutes); the time the probes themselves take is not work. Raises
    ``ValueError`` for fewer than two marks, marks out of order or a bad probe time."""
    if len(marks) < 2:
        raise ValueError(f"Invalid marks: {len(marks)} (need a probe at the start and the end)")
    out = []
    for a, b in zip(marks, marks[1:]):
        unit = probe_unit(a.probe, b.probe)
        seconds = b.start - a.end
        if seconds < 0:
            raise ValueError(f"Invalid marks: {b.label or 'a mark'!r} starts before the one "
                             f"before it ends ({b.start} < {a.end})")
        out.append(Stretch(a.label, seconds, seconds / unit, seconds / max(a.probe, b.probe),
                           seconds / min(a.probe, b.probe)))
    return out


def cost_text(what: str, marks: Sequence[ProbeMark]) -> str:
    """A build's or test run's wall time in seconds and in probe runs, from the probe ``marks``
    taken at its start, between its parts and at its end (:func:`stretches`), e.g. ``"make book:
    8 min 12 s = 930 probe runs (4 stretches, each divided by the mean of the probes at its ends;
    the probe took 0.50-0.55 s; 900-960 had the speed changed at once within a stretch) + 6 s in
    3 probes between"``. Where the probes at the two ends of a stretch differ by more than
    :data:`DRIFT_LIMIT`, it says that the machine's speed changed during that stretch."""
    parts = stretches(marks)
    seconds = sum(s.seconds for s in parts)
    runs, low, high = (sum(getattr(s, k) for s in parts) for k in ("runs", "low", "high"))
    probes = [m.probe for m in marks]
    between = sum(m.end - m.start for m in marks[1:-1])
    text = (f"{what}: {format_duration(seconds)} = {runs:,.0f} probe runs ("
            + (f"{len(parts)} stretches, each divided by the mean of the probes at its ends"
               if len(parts) > 1 else "divided by the mean of the probes at its start and end")
            + f"; the probe took {min(probes):.2f}-{max(probes):.2f} s")
    drifting = [s.label or str(i + 1) for i, (s, a, b) in enumerate(zip(parts, marks, marks[1:]))
                if abs(b.probe / a.probe - 1) > DRIFT_LIMIT]
    if drifting:
        text += (f"; the machine's speed changed by more than {DRIFT_LIMIT:.0%} during "
                 f"{and_list(drifting)}: {low:,.0f}-{high:,.0f} had it changed at once")
    text += ")"
    if len(marks) > 2:
        n = len(marks) - 2
        text += f" + {format_duration(between)} in the {n} probe{'s' * (n > 1)} between"
    return text


def _cost_line(name: str, seconds: float, runs: float, width: int) -> str:
    return f"  {name:<{width}}  {format_duration(seconds):>10} = {runs:6,.0f} probe runs"


def chapter_costs(seconds: Mapping[str, float], probe_seconds: float) -> list[str]:
    """One line a notebook, e.g. ``"  choosing: 2 min 09 s = 258 probe runs"``, from each
    notebook's execution time (``seconds``: name -> seconds, e.g. jupyter-cache's records of a
    book build), longest first; ``probe_seconds`` is the unit (:func:`probe_unit`)."""
    probe_unit(probe_seconds)  # validates it
    width = max((len(name) for name in seconds), default=0)
    return [_cost_line(name, t, t / probe_seconds, width)
            for name, t in sorted(seconds.items(), key=lambda item: -item[1])]


def stretch_costs(parts: Sequence[Stretch]) -> list[str]:
    """One line a stretch of work (:func:`stretches`), in time order, each in its own probe runs;
    stretches with the same label (e.g. a chapter run twice) are added up, in the order of their
    first one."""
    totals: dict[str, list[float]] = {}
    for part in parts:
        total = totals.setdefault(part.label or "(unlabelled)", [0.0, 0.0])
        total[0] += part.seconds
        total[1] += part.runs
    width = max((len(name) for name in totals), default=0)
    return [_cost_line(name, t, runs, width) for name, (t, runs) in totals.items()]
