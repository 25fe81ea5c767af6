"""Regenerate book/data/ablation_full.json: the ablation of book/choosing.ipynb trained on the
whole Fashion-MNIST training split (everything but the chapter's validation hold-out).

It is too slow for the page's time limit on a 2-core CPU, so the page reads the stored result.
From the repository root (any machine; runs on a GPU when PyTorch sees one)::

    python scripts/choosing_full_ablation.py --workers 12 --seeds 5 \\
        --out book/data/ablation_full.json

The techniques and the validation hold-out are the chapter's own: its ``TECHNIQUES = {...}`` and
``VAL_SIZE`` are read from book/choosing.md, so the two never differ. Every (configuration, seed)
is trained by ``cnnlab.experiments.run_cached`` (cached under CNNLAB_CACHE, so an interrupted run
resumes) in a ``cnnlab.pool.WorkerPool`` of ``--workers`` processes (one torch thread each); the
output file is rewritten after each finished run, so a run stopped early leaves the finished rows
behind.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import shlex
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig
from cnnlab.evaluation import ablation_configs
from cnnlab.experiments import load_for, run_cached
from cnnlab.perf import hardware_summary
from cnnlab.pool import WorkerPool

# The same recipe as the page's small-data ablation, on all training images.
BASE = RunConfig("fashion_mnist", train_size=None, width=8, epochs=12, lr=0.05, batch_size=64)
CHAPTER = Path(__file__).resolve().parent.parent / "book" / "choosing.md"
# The chapter's validation hold-out on Fashion-MNIST, read from its line
# ``VAL_SIZE = None if DATASET == "digits" else 500``.
VAL_SIZE_LINE = re.compile(r'^VAL_SIZE = None if DATASET == "digits" else (\d+)\b', re.M)


def chapter_val_size(path: Path) -> int:
    """The validation images the chapter's runs hold out on Fashion-MNIST (its ``VAL_SIZE``)."""
    found = VAL_SIZE_LINE.findall(path.read_text(encoding="utf8"))
    if len(found) != 1:
        raise ValueError(f"{path} has {len(found)} lines like '{VAL_SIZE_LINE.pattern}' (need one)")
    return int(found[0])


def chapter_literal(path: Path, name: str) -> Any:
    """The value of the one statement ``NAME = <literal>`` at the start of a line of a chapter's
    source (a MyST notebook), parsed with ``ast`` and evaluated with ``ast.literal_eval``."""
    lines = path.read_text(encoding="utf8").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"{name} = ")]
    if len(starts) != 1:
        raise ValueError(f"{path} has {len(starts)} lines that start with '{name} = ' (need one)")
    start = starts[0]
    for end in range(start + 1, len(lines) + 1):  # the shortest run of lines that parses
        try:
            statement = ast.parse("\n".join(lines[start:end])).body[0]
        except SyntaxError:
            continue
        if not isinstance(statement, ast.Assign):
            raise ValueError(f"{path}: '{name} = ...' is not an assignment")
        return ast.literal_eval(statement.value)  # ValueError if it is not a literal
    raise ValueError(f"{path}: the statement '{name} = ...' does not parse")


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, path)


def run_meta(script: str, argv: list[str] | None, workers: int, seeds: int,
             configs: dict[str, RunConfig]) -> dict:
    """The stored file's ``meta``: the command (``scripts/<script>`` with ``argv``, else this
    process's arguments), the hardware, Python, workers, seeds, each configuration, and the size
    of the training split the runs train on (of the first configuration)."""
    first = next(iter(configs.values()))
    return {
        "command": f"python scripts/{script} " + shlex.join(sys.argv[1:] if argv is None
                                                            else argv),
        "hardware": hardware_summary(),
        "python": platform.python_version(),
        "workers": workers,
        "seeds": seeds,
        "configs": {name: c.to_dict() for name, c in configs.items()},
        "train_images": len(load_for(first, 0).train[1]),  # the split the runs train on
    }


def train_and_store(jobs: list[tuple[str, RunConfig, int]], workers: int, out: Path,
                    meta: dict) -> list[dict]:
    """Train every ``(name, config, seed)`` of ``jobs`` with ``run_cached`` in a pool of
    ``workers`` processes (each warmed with the jobs' datasets), rewriting ``out``
    (``{"meta": meta, "rows": [...]}``) after each finished run, so that a run stopped early
    leaves its finished rows behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    start = time.perf_counter()
    datasets = tuple(dict.fromkeys(config.dataset for _, config, _ in jobs))
    with WorkerPool(workers, datasets) as pool:  # shut down on exit, even Ctrl-C
        futures = {pool.submit(run_cached, config, seed): (name, seed)
                   for name, config, seed in jobs}
        for fut in as_completed(futures):
            name, seed = futures[fut]
            row = {**fut.result(), "name": name}
            row.pop("weights", None)  # weight statistics are not used by the page
            rows.append(row)
            meta["wall_seconds"] = round(time.perf_counter() - start, 1)
            _write(out, {"meta": meta, "rows": rows})
            print(f"[{meta['wall_seconds']:7.1f}s] {len(rows)}/{len(jobs)} {name} seed {seed}: "
                  f"test {row['test_acc']:.4f}, {row['train_time']:.1f}s, "
                  f"{len(row['history']['val_loss'])} epochs", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=None, help="default: all")
    parser.add_argument("--epochs", type=int, default=BASE.epochs)
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="train only these configurations (names as in the table)")
    parser.add_argument("--out", type=Path, default=Path("book/data/ablation_full.json"))
    args = parser.parse_args(argv)

    base = RunConfig(**{**BASE.to_dict(), "train_size": args.train_size, "epochs": args.epochs,
                        "val_size": chapter_val_size(CHAPTER)})
    configs = ablation_configs(base, chapter_literal(CHAPTER, "TECHNIQUES"))
    if args.only:
        unknown = set(args.only) - set(configs)
        if unknown:
            parser.error(f"unknown configuration(s) {sorted(unknown)}; choose from {list(configs)}")
        configs = {name: c for name, c in configs.items() if name in args.only}
    jobs = [(name, config, seed) for seed in range(args.seeds)  # seed-major: a run stopped
            for name, config in configs.items()]               # early keeps every config even
    meta = run_meta(Path(__file__).name, argv, args.workers, args.seeds, configs)
    train_and_store(jobs, args.workers, args.out, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
