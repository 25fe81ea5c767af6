#!/usr/bin/env python3
"""Print what a make target cost, in seconds and in probe runs (cnnlab.runtimes.probe_run).

    python scripts/cost.py start book LABEL  # a probe run, then the clock starts on LABEL's work
    python scripts/cost.py mark LABEL        # a probe run between two parts of the work
    python scripts/cost.py stop book         # a last probe; prints "make book: ... = N probe
                                             # runs (...)" and each part's own figure
    pytest -p cost --nbmake ...              # (scripts/ on the path) a mark before each chapter

The Makefile wraps `make book` and `make test` in ``start`` and ``stop`` (the environment's set-up
is not counted: it happens before ``start``) and marks the parts between: the unit tests, each
chapter nbmake runs, the book build. The machine's speed changes over minutes (the probe went
from 0.88 s to 0.55 s during one book build), so one probe at each end cannot stand for a
half-hour's work: each stretch between two marks is divided by the mean of the probes at its own
two ends (cnnlab.runtimes.stretches), and the figure is their sum; the time the probes take is
reported beside it, not counted as work. A mark is taken only while a target is open (``start``
without ``stop``, for at most six hours), so a bare `make notebooks` takes no probe. Chapters the
book build executed itself (whose code has no run in jupyter-cache) are listed too, with their
execution time from jupyter-cache's records.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from pathlib import Path

from cnnlab.runtimes import ProbeMark, chapter_costs, cost_text, probe_run, stretch_costs, stretches

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "cost"
JUPYTER_CACHE = ROOT / "_build" / ".jupyter_cache"
OPEN_FOR = 6 * 3600  # seconds: a target started longer ago was interrupted, not still running


def open_targets(state: Path = STATE, now: float | None = None) -> list[Path]:
    """The state files of the targets started and not stopped (within :data:`OPEN_FOR`)."""
    now = time.time() if now is None else now
    out = []
    for path in sorted(state.glob("*.json")) if state.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if data.get("open") and now - data.get("started", 0) < OPEN_FOR:
            out.append(path)
    return out


def mark(label: str, state: Path = STATE, probe=probe_run) -> ProbeMark | None:
    """Time a probe run and add it, labelled with the work that follows, to every open target;
    ``None`` (and no probe) when no target is open."""
    targets = open_targets(state)
    if not targets:
        return None
    start = time.time()
    seconds = probe()
    taken = ProbeMark(start, time.time(), seconds, label)
    for path in targets:
        data = json.loads(path.read_text())
        data["marks"].append(dataclasses.asdict(taken))
        path.write_text(json.dumps(data))
    return taken


def start(name: str, label: str, state: Path = STATE, probe=probe_run) -> ProbeMark:
    """Open target ``name`` (replacing an earlier one of that name) with a first mark."""
    state.mkdir(parents=True, exist_ok=True)
    (state / f"{name}.json").write_text(json.dumps({"open": True, "started": time.time(),
                                                     "marks": []}))
    return mark(label, state, probe)


def stop(name: str, state: Path = STATE, probe=probe_run,
         cache: Path = JUPYTER_CACHE) -> list[str]:
    """Take the last mark, close target ``name`` and return its report's lines."""
    path = state / f"{name}.json"
    if path not in open_targets(state):
        raise SystemExit(f"cost.py: `make {name}` was not started (no open {path})")
    mark(f"after make {name}", state, probe)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "open": False}))
    marks = [ProbeMark(**m) for m in data["marks"]]
    parts = stretches(marks)
    lines = [cost_text(f"make {name}", marks), *stretch_costs(parts)]
    labels = {part.label for part in parts}
    by_book = {chapter: t for chapter, t in executed_since(cache, marks[0].start).items()
               if chapter not in labels}
    if by_book:
        unit = sum(p.seconds for p in parts) / sum(p.runs for p in parts)
        lines.append(f"chapters the book build executed itself ({len(by_book)}; in the lines "
                     "above too), at the whole run's mean probe:")
        lines += chapter_costs(by_book, unit)
    return lines


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
    parser.add_argument("action", choices=("start", "mark", "stop"))
    parser.add_argument("words", nargs="+", metavar="NAME/LABEL",
                        help="start: the make target and the label of its first part; mark: the "
                             "label of the part that follows; stop: the make target")
    args = parser.parse_args(argv)
    if args.action == "start":
        name, label = args.words[0], " ".join(args.words[1:]) or args.words[0]
        first = start(name, label)
        print(f"probe run: {first.probe:.2f} s (the unit of `make {name}`'s cost; "
              "probed again between its parts)")
    elif args.action == "mark":
        mark(" ".join(args.words))
    else:
        print("\n".join(stop(args.words[0])))


# As a pytest plugin (`pytest -p cost` with scripts/ on sys.path): a mark before each notebook
# nbmake runs, so that each chapter is its own stretch.
def pytest_runtest_setup(item) -> None:
    mark(Path(str(item.path)).stem, STATE, probe_run)


if __name__ == "__main__":
    main()
