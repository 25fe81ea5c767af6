#!/usr/bin/env python3
"""Measure each chapter's run time cold, and store it with the book (book/data/runtimes.json).

Cold means as a reader first runs it: a fresh kernel, an empty run cache (every training run is
trained, none is read back). Each chapter is executed alone, in ``book/`` like the build does, and
a probe run (:func:`cnnlab.runtimes.probe_run`) is timed just before and just after it: the
chapter's time divided by the probe's is its cost in probe runs, which does not depend on how fast
the machine is that hour. The chapters glue these figures into their opening box and the landing
page's table of chapters. Run on an otherwise idle machine::

    .venv/bin/python scripts/measure_runtimes.py              # every chapter (~8-15 min here)
    .venv/bin/python scripts/measure_runtimes.py dropout      # one; the others are kept
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from cnnlab.perf import hardware_summary
from cnnlab.runtimes import format_duration, probe_run, probe_unit

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
OUT = BOOK / "data" / "runtimes.json"


def chapters() -> list[str]:
    return sorted(p.stem for p in BOOK.glob("*.ipynb"))


def run_cold(name: str, timeout: int = 900) -> float:
    """Seconds to execute ``book/<name>.ipynb`` top to bottom with an empty run cache."""
    nb = nbformat.read(BOOK / f"{name}.ipynb", as_version=4)
    with tempfile.TemporaryDirectory(prefix="cnnlab-cold-") as cache:
        # Offline: a chapter reads what it needs from the checkout (nothing is downloaded while
        # it is timed).
        env = {**os.environ, "CNNLAB_CACHE": cache, "CNNLAB_PROGRESS": "0", "CNNLAB_OFFLINE": "1"}
        env.pop("MPLBACKEND", None)
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(BOOK)}})
        start = time.perf_counter()
        client.execute(env=env)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapters", nargs="*", help="chapter names (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    names = args.chapters or chapters()
    unknown = sorted(set(names) - set(chapters()))
    if unknown:
        parser.error(f"unknown chapter(s): {unknown}; chapters: {chapters()}")
    stored = json.loads(args.out.read_text()) if args.out.exists() else {"notebooks": {}}
    stored["meta"] = {
        "hardware": hardware_summary(), "cores": os.cpu_count(),
        "command": "python scripts/measure_runtimes.py" + "".join(f" {n}" for n in args.chapters),
        "date": datetime.date.today().isoformat(),
        "what": "seconds to execute the chapter's notebook top to bottom in a fresh kernel with "
                "an empty run cache; probe_seconds: the probe run (cnnlab.runtimes.probe_run), "
                "the mean of the probes just before and just after (each the fastest of 5)",
    }
    for name in names:
        before = probe_run()
        seconds = run_cold(name)
        probe = probe_unit(before, probe_run())
        stored["notebooks"][name] = {"seconds": round(seconds, 1),
                                     "probe_seconds": round(probe, 3)}
        print(f"{name}: {format_duration(seconds)} ({seconds / probe:.0f} probe runs of "
              f"{probe:.2f} s)", flush=True)
        args.out.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
