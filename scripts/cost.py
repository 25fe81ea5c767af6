#!/usr/bin/env python3
"""Print what a make target cost, in seconds and in probe runs (cnnlab.runtimes.probe_run).

    python scripts/cost.py start book    # times a probe run, then starts the clock
    python scripts/cost.py stop book     # prints "make book: ... = N probe runs (...)"

The Makefile wraps `make book` and `make test` in these two calls (the environment's set-up is
not counted: it happens before `start`). The probe is timed once, at the start, on the same
machine in the same hour, so the figure in probe runs does not depend on how fast the machine was.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cnnlab.runtimes import cost_text, probe_run

STATE = Path(__file__).resolve().parent.parent / ".cache" / "cost"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("name", help="the make target, e.g. book")
    args = parser.parse_args()
    path = STATE / f"{args.name}.json"
    if args.action == "start":
        probe = probe_run()
        STATE.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"start": time.time(), "probe_seconds": probe}))
        print(f"probe run: {probe:.2f} s (the unit of `make {args.name}`'s cost)")
        return
    state = json.loads(path.read_text())
    print(cost_text(f"make {args.name}", time.time() - state["start"], state["probe_seconds"]))


if __name__ == "__main__":
    main()
