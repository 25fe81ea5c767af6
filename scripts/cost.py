#!/usr/bin/env python3
"""Print what a make target cost, in seconds and in probe runs (cnnlab.runtimes.probe_run).

    python scripts/cost.py start book --watch PID   # times a probe run, starts the clock and a
                                                    # sampler that times one every 15 s
    python scripts/cost.py stop book                # prints "make book: ... = N probe runs
                                                    # (...)" and each chapter executed meanwhile

The Makefile wraps `make book` and `make test` in these two calls (the environment's set-up is
not counted: it happens before `start`). This machine's speed changes within minutes, so the
probe is timed at the start, every 15 s while the work runs (by a sampler process in the
background, which ends with the `make` whose PID it watches) and at the end, and the unit is the
median of all of them: the figure in probe runs then describes the work, not the hour. Then each
chapter executed meanwhile is listed with its execution time from jupyter-cache's records: by the
book build, or by nbmake in `make notebooks` (scripts/notebooks.py stores nbmake's time with each
executed chapter).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from cnnlab.runtimes import chapter_costs, cost_text, probe_run, sample_probes

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "cost"
JUPYTER_CACHE = ROOT / "_build" / ".jupyter_cache"
INTERVAL = 15.0  # seconds between two sampled probe runs
LIFETIME = 6 * 3600  # a sampler whose stop never came ends after this many seconds anyway


def executed_since(cache: Path, since: float) -> dict[str, float]:
    """Notebook name -> execution seconds of the jupyter-cache records at ``cache`` created at or
    after ``since`` (seconds since the epoch); empty when there is no cache."""
    if not (cache / "global.db").exists():
        return {}
    from jupyter_cache import get_cache  # installed with jupyter-book

    start = dt.datetime.fromtimestamp(since, dt.timezone.utc).replace(tzinfo=None)  # UTC, naive
    out: dict[str, float] = {}
    for record in get_cache(str(cache)).list_cache_records():
        seconds = (record.data or {}).get("execution_seconds")
        if record.created >= start and seconds is not None:
            out[Path(record.uri).stem] = float(seconds)
    return out


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not yet reaped by its
    parent, counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_samples(path: Path) -> list[float]:
    """The probe times a sampler wrote to ``path`` (none if it wrote nothing)."""
    if not path.exists():
        return []
    return [float(line) for line in path.read_text().split() if line]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop", "sample"))
    parser.add_argument("name", help="the make target, e.g. book")
    parser.add_argument("--watch", type=int, default=os.getppid(),
                        help="the PID of the make whose work is measured (default: the parent)")
    parser.add_argument("--state", type=Path, default=STATE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    path, samples = args.state / f"{args.name}.json", args.state / f"{args.name}.samples"
    if args.action == "sample":  # the background sampler: until stop, or the make is gone
        began = time.time()
        sample_probes(samples, interval=INTERVAL, keep_going=lambda: (
            path.exists() and alive(args.watch) and time.time() - began < LIFETIME))
        return
    if args.action == "start":
        probe = probe_run()
        args.state.mkdir(parents=True, exist_ok=True)
        samples.unlink(missing_ok=True)
        path.write_text("{}")  # the sampler runs while this file exists
        sampler = subprocess.Popen(
            [sys.executable, __file__, "sample", args.name, "--watch", str(args.watch),
             "--state", str(args.state)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        path.write_text(json.dumps({"start": time.time(), "probe_seconds": probe,
                                    "sampler": sampler.pid}))
        print(f"probe run: {probe:.2f} s (the unit of `make {args.name}`'s cost, timed again "
              f"every {INTERVAL:.0f} s while it runs)")
        return
    state = json.loads(path.read_text())
    seconds = time.time() - state["start"]
    path.unlink()  # the sampler stops at its next check; do not wait for it
    if alive(state["sampler"]):  # now: a probe it ran beside the last one would slow both
        os.kill(state["sampler"], signal.SIGTERM)
    probes = [state["probe_seconds"], *read_samples(samples), probe_run()]
    samples.unlink(missing_ok=True)
    print(cost_text(f"make {args.name}", seconds, probes))
    chapters = executed_since(JUPYTER_CACHE, state["start"])
    print(f"chapters executed by `make {args.name}` ({len(chapters)}, by nbmake or the book "
          "build):" if chapters else f"`make {args.name}` executed no chapter (all came from "
          "jupyter-cache)")
    print("\n".join(chapter_costs(chapters, statistics.median(probes))))


if __name__ == "__main__":
    main()
