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
from collections.abc import Mapping
from typing import Any

import torch

from cnnlab.data import load_dataset
from cnnlab.models import build_model
from cnnlab.train import fit

__all__ = ["DRIFT_LIMIT", "chapter_costs", "cost_text", "format_duration", "probe_run",
           "probe_unit", "runtime_text"]

# A probe that changed by more than this between a run's start and end: its figure is uncertain.
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
    0.55 s after it), and that, a probe at the start and the end cannot remove.

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


def cost_text(what: str, seconds: float, probe_seconds: float,
              probe_end: float | None = None) -> str:
    """A build's or test run's wall time in seconds and in probe runs, e.g. ``"make book: 8 min
    12 s = 930 probe runs (probe 0.53 s, measured at the start)"``.

    With ``probe_end``, the probe timed again when the work ended, the unit is the mean of the two
    probes (:func:`probe_unit`), and the text gives both and how much the machine's speed changed
    in between; beyond :data:`DRIFT_LIMIT` it says that the figure is uncertain by about that
    much."""
    unit = probe_unit(probe_seconds, probe_end)
    if probe_end is None:
        how = f"probe {probe_seconds:.2f} s, measured at the start"
    else:
        drift = probe_end / probe_seconds - 1
        how = (f"probe {unit:.2f} s, the mean of {probe_seconds:.2f} s at the start and "
               f"{probe_end:.2f} s at the end, {drift:+.0%}")
        if abs(drift) > DRIFT_LIMIT:
            how += (": the machine's speed changed during the run, so this figure is uncertain "
                    "by about as much")
    return f"{what}: {format_duration(seconds)} = {seconds / unit:,.0f} probe runs ({how})"


def chapter_costs(seconds: Mapping[str, float], probe_seconds: float) -> list[str]:
    """One line a notebook, e.g. ``"  choosing: 2 min 09 s = 258 probe runs"``, from each
    notebook's execution time (``seconds``: name -> seconds, e.g. jupyter-cache's records of a
    book build), longest first; ``probe_seconds`` is the unit (:func:`probe_unit`)."""
    probe_unit(probe_seconds)  # validates it
    width = max((len(name) for name in seconds), default=0)
    return [f"  {name:<{width}}  {format_duration(t):>10} = {t / probe_seconds:6,.0f} probe runs"
            for name, t in sorted(seconds.items(), key=lambda item: -item[1])]
