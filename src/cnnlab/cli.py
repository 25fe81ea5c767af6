"""Command line: the book's sweeps from a terminal, with progress bars, writing CSV and PNG.

Examples::

    python -m cnnlab sweep --dataset digits --param dropout --values 0 0.25 0.5 --seeds 3
    python -m cnnlab sweep --dataset fashion_mnist --train-size 2000 --param l2 \\
        --values 0 1e-4 1e-3 1e-2 --seeds 5 --epochs 8 --out results/l2
    python -m cnnlab bench                       # the convolution chapter's measurements
    python -m cnnlab bench --device cuda --json bench_cuda.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import sys
from dataclasses import fields, replace
from pathlib import Path

import matplotlib

from cnnlab.bench import PARTS, BenchConfig, format_table, run_bench, save_results, tf32
from cnnlab.cache import cache_dir
from cnnlab.config import Row, RunConfig
from cnnlab.data import DATASETS
from cnnlab.experiments import cached_runs, sweep, sweep_jobs
from cnnlab.plots import figure_to_png, plot_sweep
from cnnlab.pool import WorkerPool
from cnnlab.widgets import describe

__all__ = ["build_parser", "main", "parse_value"]

SUMMARY_METRICS = ("test_acc", "val_acc", "train_acc", "train_eval_acc", "gap")


def parse_value(text: str) -> bool | int | float | str | None:
    """``"none"``/``"off"`` -> None, ``"true"``/``"false"`` -> bool, else int, float or str."""
    low = text.strip().lower()
    if low in ("none", "off"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cnnlab",
        description="CNN Lab from a terminal: train a small CNN over several values of one "
        "setting and several seeds; report mean test accuracy with a 95% confidence interval.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sw = sub.add_parser(
        "sweep", help="sweep one setting over values x seeds; write a CSV and a PNG plot",
        description="Runs are cached (CNNLAB_CACHE), so an interrupted sweep resumes.",
        epilog="example:\n  python -m cnnlab sweep --dataset digits --param dropout "
               "--values 0 0.25 0.5 --seeds 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    defaults = RunConfig()
    sw.add_argument("--dataset", default=defaults.dataset, choices=DATASETS)
    sw.add_argument("--train-size", type=int, default=None,
                    help="stratified training subset (default: the whole training split)")
    names = [f.name for f in fields(RunConfig) if f.name not in ("dataset", "train_size")]
    sw.add_argument("--param", required=True, choices=names + ["train_size"],
                    help="the setting to vary")
    sw.add_argument("--values", required=True, nargs="+", type=parse_value,
                    help="its values (numbers, true/false, or none for off)")
    sw.add_argument("--seeds", type=int, default=5, help="seeds per value (default 5)")
    for f in fields(RunConfig):
        if f.name in ("dataset", "train_size"):
            continue
        sw.add_argument(f"--{f.name.replace('_', '-')}", type=parse_value, default=f.default,
                        help=f"(default {f.default})")
    sw.add_argument("--out", type=Path, default=Path("results"),
                    help="folder for sweep.csv, summary.csv and sweep.png (default ./results)")
    sw.add_argument("--no-cache", action="store_true", help="always train, cache nothing")
    sw.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes to train in (default: one per core, at most 2)")
    sw.add_argument("--logx", action="store_true", help="logarithmic x axis in the plot")
    _add_bench_parser(sub)
    return parser


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    d = BenchConfig()
    b = sub.add_parser(
        "bench", help="measure convolutions against the hardware's peak, training steps and "
        "data-parallel scaling",
        description="Times every variant of a table in one run, interleaved, and reports "
        "medians: absolute figures (ms, GFLOP/s), shares of the hardware's theoretical peak "
        "and of a measured matrix product, and ratios with their 95% intervals, with the CPU "
        "model and thread count. See cnnlab.bench and cnnlab.hardware.",
        epilog="example:\n  python -m cnnlab bench --parts conv peak --threads 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where to measure (cuda synchronizes around every timing)")
    b.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS, metavar="PART",
                   help=f"what to measure (default: all of {' '.join(PARTS)})")
    b.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: PyTorch's, one per core)")
    b.add_argument("--repeats", type=int, default=d.repeats, help="interleaved repeats")
    b.add_argument("--batch", type=int, default=d.batch, help="images in the timed convolution")
    b.add_argument("--in-channels", type=int, default=d.in_channels)
    b.add_argument("--out-channels", type=int, default=d.out_channels)
    b.add_argument("--size", type=int, default=d.size, help="H = W of the convolution input")
    b.add_argument("--matmul-size", type=int, default=d.matmul_size,
                   help="side of the square fp32 matrices of the matrix-product yardstick")
    b.add_argument("--step-batch", type=int, default=d.step_batch)
    b.add_argument("--step-width", type=int, default=d.step_width)
    b.add_argument("--step-threads", type=int, default=d.step_threads,
                   help="threads of the training-step part (default 1, as the sweeps train)")
    b.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave torch.compile out (it costs its compile time)")
    b.add_argument("--ddp-procs", type=int, default=d.ddp_procs)
    b.add_argument("--ddp-train-size", type=int, default=d.ddp_train_size)
    b.add_argument("--ddp-rounds", type=int, default=d.ddp_rounds)
    b.add_argument("--tf32", action="store_true",
                   help="on CUDA, let matmuls and cuDNN use TF32 (default: true fp32 everywhere)")
    b.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    b.add_argument("--json", type=Path, default=None, help="also save the figures here")


def _csv_value(value: object) -> object:
    """What a CSV cell holds: nothing for a missing number (e.g. no interval from one seed)."""
    return "" if isinstance(value, float) and math.isnan(value) else value


def _write_csv(path: Path, rows: list[Row]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys and not isinstance(r[k], dict)]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)


class _Stopped(BaseException):  # like KeyboardInterrupt: no `except Exception` may swallow it
    """A SIGTERM, raised in the main thread like the KeyboardInterrupt of a SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _cmd_sweep(args: argparse.Namespace) -> int:
    matplotlib.use("Agg")  # files only, no window
    overrides = {f.name: getattr(args, f.name) for f in fields(RunConfig)}
    base = RunConfig(**overrides)
    use_cache = not args.no_cache
    try:
        jobs = sweep_jobs(base, args.param, args.values, args.seeds)
        for config, _ in jobs:
            config.validate()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pool = WorkerPool(args.workers) if args.workers > 1 else None
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        result = sweep(base, args.param, args.values, args.seeds, progress=True,
                       use_cache=use_cache, metrics=SUMMARY_METRICS, workers=args.workers,
                       pool=pool)
    except (KeyboardInterrupt, _Stopped) as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        if pool is not None:
            pool.terminate()
        print(file=sys.stderr)
        if use_cache:
            done = cached_runs(jobs, cache=None)
            print(f"interrupted: {done} of {len(jobs)} runs are finished and saved in "
                  f"{cache_dir()}; run the same command again to resume from them.",
                  file=sys.stderr)
        else:
            print("interrupted (--no-cache: nothing was saved).", file=sys.stderr)
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if pool is not None:
            pool.shutdown()
    args.out.mkdir(parents=True, exist_ok=True)
    _write_csv(args.out / "sweep.csv", result.rows)
    _write_csv(args.out / "summary.csv", result.summary)
    (args.out / "config.json").write_text(json.dumps(
        {"base": base.to_dict(), "param": args.param, "values": args.values,
         "seeds": args.seeds}, indent=2))
    fig = plot_sweep(result, "test_acc", logx=args.logx)
    (args.out / "sweep.png").write_bytes(figure_to_png(fig, dpi=110))
    for s in result.summary:
        print(describe(s, args.param))
    print(f"wrote {args.out / 'sweep.csv'}, {args.out / 'summary.csv'}, {args.out / 'sweep.png'}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    names = ("device", "threads", "repeats", "batch", "in_channels", "out_channels", "size",
             "matmul_size", "step_batch", "step_width", "step_threads", "compile", "ddp_procs",
             "ddp_train_size", "ddp_rounds")
    chosen = {n: getattr(args, n) for n in names}
    if args.quick:
        defaults = BenchConfig()
        given = {n: v for n, v in chosen.items() if v != getattr(defaults, n)}
        cfg = replace(BenchConfig.tiny(), **given)
    else:
        cfg = BenchConfig(**chosen)
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with tf32(args.tf32):
            res = run_bench(cfg, args.parts,
                            progress=lambda p: print(f"measuring {p} ...", file=sys.stderr,
                                                     flush=True))
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Stopped) as exc:
        signum = exc.signum if isinstance(exc, _Stopped) else signal.SIGINT
        print("\ninterrupted: the benchmark was stopped (its processes too); nothing was "
              "written.", file=sys.stderr)
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(format_table(res))
    if args.quick:
        print("(--quick: tiny sizes that only check that everything runs; the figures above "
              "mean nothing)")
    if args.json:
        save_results(res, args.json)
        print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sweep":
        return _cmd_sweep(args)
    if args.command == "bench":
        return _cmd_bench(args)
    raise AssertionError(args.command)  # argparse rejects unknown commands
