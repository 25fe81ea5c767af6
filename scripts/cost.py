#!/usr/bin/env python3
"""Print what a make target cost, in seconds and in probe runs (cnnlab.runtimes.probe_run).

    python scripts/cost.py start book    # times a probe run, then starts the clock
    python scripts/cost.py stop book     # times the probe again; prints "make book: ... = N probe
                                         # runs (...)" and each chapter executed meanwhile

The Makefile wraps `make book` and `make test` in these two calls (the environment's set-up is
not counted: it happens before `start`). The probe is timed at the start and again at the end, on
the same machine in the same hour, and the unit is their mean: the figure in probe runs does not
depend on how fast the machine was, and where the machine's speed changed during the work (the
two probes differ by more than 10%), the line says so. Then each chapter executed meanwhile is
listed with its execution time from jupyter-cache's records: by the book build, or by nbmake in
`make notebooks` (scripts/notebooks.py stores nbmake's time with each executed chapter).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

from cnnlab.runtimes import chapter_costs, cost_text, probe_run, probe_unit

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "cost"
JUPYTER_CACHE = ROOT / "_build" / ".jupyter_cache"


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("name", help="the make target, e.g. book")
    args = parser.parse_args(argv)
    path = STATE / f"{args.name}.json"
    if args.action == "start":
        probe = probe_run()
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"start": time.time(), "probe_seconds": probe}))
        print(f"probe run: {probe:.2f} s (the unit of `make {args.name}`'s cost)")
        return
    state = json.loads(path.read_text())
    seconds = time.time() - state["start"]
    probe_end = probe_run()
    print(cost_text(f"make {args.name}", seconds, state["probe_seconds"], probe_end))
    chapters = executed_since(JUPYTER_CACHE, state["start"])
    unit = probe_unit(state["probe_seconds"], probe_end)
    print(f"chapters executed by `make {args.name}` ({len(chapters)}, by nbmake or the book "
          "build):" if chapters else f"`make {args.name}` executed no chapter (all came from "
          "jupyter-cache)")
    print("\n".join(chapter_costs(chapters, unit)))


if __name__ == "__main__":
    main()
