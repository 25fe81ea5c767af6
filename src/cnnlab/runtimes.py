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
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cnnlab.data import load_dataset
from cnnlab.models import build_model
from cnnlab.train import fit

__all__ = ["chapter_costs", "cost_text", "format_duration", "probe_run", "runtime_text",
           "sample_probes"]


def probe_run(repeats: int = 3, *, warmup: bool = True) -> float:
    """Seconds of the probe run (median of ``repeats``): a width-16 :class:`SmallCNN` trained for
    6 epochs on scikit-learn's digits (always available offline), batch 32, one thread.

    ``warmup`` first trains one untimed epoch: the first training in a process pays a one-time
    start-up (about 2 s here, three times a whole probe run) that is not the machine's speed."""
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
    return statistics.median(times)


def sample_probes(path: str | os.PathLike, *, interval: float = 15.0,
                  keep_going: Callable[[], bool] = lambda: True) -> int:
    """Time one probe run every ``interval`` seconds while ``keep_going()`` is true, appending
    each time (seconds, one a line) to the file ``path``. Returns the number of samples.

    A machine's speed changes within minutes (on the book's machine, consecutive probe runs ten
    seconds apart differed by up to 1.7x), so a probe timed only at the start of a long build
    says little about the build; sampled through it, the median does (see :func:`cost_text`).
    One probe run every 15 s keeps one core busy about 4% of the time."""
    if not (isinstance(interval, (int, float)) and interval >= 0 and math.isfinite(interval)):
        raise ValueError(f"Invalid interval: {interval!r} (must be a number of seconds >= 0)")
    probe_run(repeats=1)  # the process's one-time start-up, untimed
    n = 0
    while keep_going():
        seconds = probe_run(repeats=1, warmup=False)
        with open(path, "a", encoding="utf8") as f:
            f.write(f"{seconds:.4f}\n")
        n += 1
        time.sleep(interval)
    return n


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


def cost_text(what: str, seconds: float, probes: Sequence[float]) -> str:
    """A build's or test run's wall time in seconds and in probe runs, e.g. ``"make book: 1 min
    30 s = 145 probe runs (probe 0.62 s: the median of 7 timed through the run, 0.51-0.96 s)"``.

    ``probes``: the probe's times through the work (at its start, every so often while it ran,
    at its end); the unit is their median."""
    if not probes:
        raise ValueError("Invalid probes: none (time at least one probe run)")
    for probe in probes:
        if not (isinstance(probe, (int, float)) and probe > 0 and math.isfinite(probe)):
            raise ValueError(f"Invalid probe time: {probe!r} (must be > 0 seconds)")
    unit = statistics.median(probes)
    how = (f"probe {unit:.2f} s, timed once at the start" if len(probes) == 1 else
           f"probe {unit:.2f} s: the median of {len(probes)} timed through the run, "
           f"{min(probes):.2f}-{max(probes):.2f} s")
    return f"{what}: {format_duration(seconds)} = {seconds / unit:,.0f} probe runs ({how})"


def chapter_costs(seconds: Mapping[str, float], probe_seconds: float) -> list[str]:
    """One line a notebook, e.g. ``"  choosing: 2 min 09 s = 258 probe runs"``, from each
    notebook's execution time (``seconds``: name -> seconds, e.g. jupyter-cache's records of a
    book build), longest first."""
    if not probe_seconds > 0:
        raise ValueError(f"Invalid probe time: {probe_seconds!r} (must be > 0 seconds)")
    width = max((len(name) for name in seconds), default=0)
    return [f"  {name:<{width}}  {format_duration(t):>10} = {t / probe_seconds:6,.0f} probe runs"
            for name, t in sorted(seconds.items(), key=lambda item: -item[1])]
