"""Sweeps over (parameter value x seeds), cached on disk, summarized as mean and 95% CI.

A :class:`RunConfig` describes one training run completely. :func:`run` trains it for one seed and
returns a JSON-ready row. :func:`sweep` runs one configuration over several values of one of its
fields and several seeds; every finished run is written to the cache as one JSON file keyed by
the full configuration, the seed, the runner and the device, so re-running a notebook, rebuilding
the book or resuming an interrupted sweep only trains what is missing. A corrupt cache file is
recomputed, never trusted. Nothing is pickled.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cnnlab.cache import cache_dir, cache_path, device_kind, read_row, write_row
from cnnlab.config import Row, RunConfig, Runner
from cnnlab.data import Dataset, load_dataset, noisy_labels
from cnnlab.models import build_model
from cnnlab.pool import WorkerPool, WorkerState, check_pool_args, session_pool
from cnnlab.stats import summarize
from cnnlab.techniques import (
    L1,
    L2,
    GradientClipping,
    WeightClipping,
    decay_param_groups,
    weight_stats,
)
from cnnlab.techniques.overfitting import Augmentation, EarlyStopping
from cnnlab.train import CosineLR, Hook, fit, make_optimizer, progress_enabled

__all__ = [
    "ModelMaker",
    "RowExtra",
    "SweepResult",
    "cached_runs",
    "default_model",
    "default_workers",
    "hooks_for",
    "load_for",
    "right_label_share",
    "run",
    "run_cached",
    "run_jobs",
    "seeds_of",
    "start_workers",
    "sweep",
    "sweep_jobs",
]

ModelMaker = Callable[[RunConfig, Dataset, int], nn.Module]  # (config, data, seed) -> model
RowExtra = Callable[[nn.Module, Dataset], dict[str, Any]]  # (trained model, data) -> row fields


def hooks_for(config: RunConfig) -> list[Hook]:
    """The training hooks that ``config``'s technique fields switch on."""
    hooks: list[Hook] = []
    if config.l1 > 0:
        hooks.append(L1(config.l1))
    if config.l2 > 0:
        hooks.append(L2(config.l2))
    if config.clip_grad_norm is not None:
        hooks.append(GradientClipping(max_norm=config.clip_grad_norm))
    if config.clip_weights is not None:
        hooks.append(WeightClipping(config.clip_weights))
    if config.augment:
        hooks.append(Augmentation())
    if config.early_stopping is not None:
        hooks.append(EarlyStopping(config.early_stopping))
    if config.lr_schedule == "cosine":
        hooks.append(CosineLR(config.epochs))
    return hooks


def load_for(config: RunConfig, seed: int) -> Dataset:
    """The dataset splits a run of ``config`` with ``seed`` trains and is scored on; with
    ``config.label_noise``, that share of the training labels replaced at random (drawn from
    ``seed``; validation and test labels stay clean)."""
    data = load_dataset(config.dataset, train_size=config.train_size, seed=seed,
                        val_size=config.val_size)
    if config.label_noise > 0:
        x, y = data.train
        gen = torch.Generator().manual_seed(10_007 + seed)  # apart from the subset's draw
        data = replace(data, train=(x, noisy_labels(y, config.label_noise, data.num_classes,
                                                    gen)))
    return data


def right_label_share(config: RunConfig, seed: int) -> float:
    """The share of the training labels of ``config``'s run ``seed`` that are still right: with
    label noise, a replaced label gets its own class back one time in ``num_classes``, so about
    ``1 - label_noise * (1 - 1 / num_classes)`` (1.0 without label noise)."""
    noisy = load_for(config, seed).train[1]
    clean = load_for(replace(config, label_noise=0.0), seed).train[1]  # same images, true labels
    return float((noisy == clean).float().mean())


def default_model(config: RunConfig, data: Dataset, seed: int) -> nn.Module:
    """The model :func:`run` trains unless told otherwise: :func:`~cnnlab.models.build_model`
    (a :class:`~cnnlab.models.SmallCNN`) with ``config``'s width, batch norm and dropout, its
    initial weights seeded by ``seed``."""
    return build_model(data.input_shape, data.num_classes, seed=seed, width=config.width,
                       batch_norm=config.batch_norm, dropout=config.dropout)


_RUN_FIT_ARGS = ("model", "data", "epochs", "lr", "batch_size", "optimizer", "momentum",
                 "weight_decay", "seed", "hooks", "progress")  # what run passes fit itself


def run(
    config: RunConfig,
    seed: int,
    *,
    make_model: ModelMaker | None = None,
    fit_options: Mapping[str, Any] | None = None,
    extra: RowExtra | None = None,
) -> Row:
    """Train ``config`` once with ``seed`` (data split, initial weights and batch order).

    Every training run of the book makes its row here. A runner that trains another model, or
    trains differently, is a module-level function that calls ``run`` with the options below.

    ``config.weight_decay`` decays the weights only (convolution kernels and linear matrices, via
    :func:`~cnnlab.techniques.regularization.decay_param_groups`), not the biases and batch norm's
    scales and shifts, as the usual recipe asks.

    Args:
        config: the run; validated first.
        seed: seeds the data split, the initial weights and the batch order.
        make_model: ``(config, data, seed) -> model`` (default :func:`default_model`); the model
            is moved to :func:`~cnnlab.cache.device_kind`'s device.
        fit_options: more keyword arguments of :func:`~cnnlab.train.fit` (e.g.
            ``{"channels_last": False}``); not those that ``config`` sets.
        extra: ``(trained model, data) -> dict`` of fields added to the row (e.g. the accuracy
            on shifted test images).
    Returns:
        A JSON-ready row: the config fields, ``seed``, the final metrics (``test_acc``,
        ``val_acc`` (of the final weights), ``train_acc`` (running, train mode),
        ``train_eval_acc`` (the training split in eval mode), ``train_loss``, ``gap`` =
        train_eval_acc - test_acc),
        ``diverged``, ``train_time`` in seconds, per-epoch ``history``, ``weights``
        statistics of the trained model, and ``extra``'s fields.
    """
    options = dict(fit_options or {})
    clash = sorted(set(options) & set(_RUN_FIT_ARGS))
    if clash:
        raise ValueError(f"Invalid fit_options: {clash} are set by run itself (from the config "
                         "and the seed)")
    config.validate()
    data = load_for(config, seed)
    model = (make_model or default_model)(config, data, seed).to(device_kind())
    optimizer: str | torch.optim.Optimizer = config.optimizer
    if config.weight_decay:  # decay the weights, not the biases and normalization parameters
        optimizer = make_optimizer(decay_param_groups(model, config.weight_decay),
                                   config.optimizer, lr=config.lr, momentum=config.momentum)
    hist = fit(
        model, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
        optimizer=optimizer, momentum=config.momentum,
        weight_decay=config.weight_decay, seed=seed, hooks=hooks_for(config), progress=False,
        **options,
    )
    row = {
        **config.to_dict(),
        "seed": seed,
        "test_acc": hist.test_acc,
        "val_acc": hist.final_val_acc,  # the weights test_acc scores (early stopping: restored)
        "train_acc": hist.train_acc[-1],
        "train_loss": hist.train_loss[-1],
        "train_eval_acc": hist.train_eval_acc,
        "gap": hist.train_eval_acc - hist.test_acc,
        "diverged": hist.diverged,
        "train_time": hist.train_time,
        "history": hist.to_dict(),
        "weights": weight_stats(model),
    }
    if extra is not None:
        row.update(extra(model, data))
    return row


def run_cached(
    config: RunConfig,
    seed: int,
    *,
    runner: Runner = run,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Row:
    """:func:`run` (or ``runner``) through the on-disk cache."""
    path = cache_path(config, seed, runner, cache)
    if use_cache:
        row = read_row(path)
        if row is not None:
            return row
    row = runner(config, seed)
    if use_cache:
        write_row(path, row)
    return row


def seeds_of(seeds: int | Sequence[int]) -> list[int]:
    """A seed count ``n`` as ``[0, ..., n-1]``, or an explicit list of seeds; at least one."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seed_list:
        raise ValueError(f"Invalid seeds: {seeds!r} (need at least one seed)")
    return seed_list


@dataclass
class SweepResult:
    """Rows of a sweep (one per run) and their summary (one per parameter value)."""

    param: str  # the RunConfig field that was varied
    values: list[Any]  # its values, in order
    rows: list[Row]  # one per (value, seed)
    summary: list[Row]  # one per value: mean and 95% CI of each metric

    def column(self, metric: str) -> list[float]:
        """``metric``'s mean per value, in the order of ``values``."""
        return [s[metric] for s in self.summary]


def sweep(
    base: RunConfig,
    param: str,
    values: Sequence[Any],
    seeds: int | Sequence[int] = 5,
    *,
    runner: Runner = run,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
    metrics: Sequence[str] = ("test_acc", "val_acc", "train_acc", "train_eval_acc", "gap"),
    workers: int | None = None,
    pool: WorkerPool | None = None,
) -> SweepResult:
    """Run ``base`` with ``param`` set to each of ``values``, for each seed.

    Args:
        base: the configuration the sweep starts from.
        param: a :class:`RunConfig` field name.
        values: the values to try (each is validated before anything trains).
        seeds: a count (seeds ``0..n-1``) or an explicit list.
        runner: ``(config, seed) -> row``; must be a module-level function (its qualified name
            is part of the cache key).
        cache: the cache folder (default :func:`cache_dir`).
        use_cache: ``False`` always trains and writes nothing.
        progress: a ``tqdm`` bar over runs; ``None`` follows CNNLAB_PROGRESS.
        metrics: row fields to summarize.
        workers: processes to train in (default :func:`default_workers`); runs missing from
            the cache are spread over them, each finished run is cached at once.
        pool: a :class:`~cnnlab.pool.WorkerPool` to train in instead (its size wins).
    Returns:
        A :class:`SweepResult`.
    """
    jobs = sweep_jobs(base, param, values, seeds)
    done = run_jobs(jobs, runner=runner, cache=cache, use_cache=use_cache, progress=progress,
                    workers=workers, pool=pool, desc=f"sweep {param}",
                    label=lambda config: {param: getattr(config, param)})
    return SweepResult(param=param, values=list(values), rows=done,
                       summary=summarize(done, param, metrics))


def sweep_jobs(base: RunConfig, param: str, values: Sequence[Any],
               seeds: int | Sequence[int]) -> list[tuple[RunConfig, int]]:
    """The ``(config, seed)`` runs of :func:`sweep`, in its order (value by value)."""
    names = {f.name for f in fields(RunConfig)}
    if param not in names:
        raise ValueError(f"Unknown sweep parameter: {param!r} (a RunConfig field: {sorted(names)})")
    if not values:
        raise ValueError("Invalid values: the sweep needs at least one value")
    seed_list = seeds_of(seeds)
    return [(replace(base, **{param: v}), s) for v in values for s in seed_list]


def cached_runs(jobs: Sequence[tuple[RunConfig, int]], *, runner: Runner = run,
                cache: str | os.PathLike | None = None) -> int:
    """How many of ``jobs`` are finished and saved in the cache (what a rerun will not train
    again)."""
    return sum(read_row(cache_path(config, seed, runner, cache)) is not None
               for config, seed in jobs)


def run_jobs(
    jobs: Sequence[tuple[RunConfig, int]],
    *,
    runner: Runner = run,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    progress: bool | None = None,
    workers: int | None = None,
    desc: str = "runs",
    label: Callable[[RunConfig], dict[str, Any]] | None = None,
    pool: WorkerPool | None = None,
) -> list[Row]:
    """Train (or read from the cache) each ``(config, seed)`` of ``jobs``; rows in job order.

    All runs missing from the cache go to the worker processes at once, so that runs of several
    configurations share the workers (no worker idles at the end of one configuration while the
    next waits). Each finished run is cached at once: an interrupted call resumes. ``pool``: the
    worker processes to use (default: the session pool of ``workers`` processes,
    :func:`cnnlab.pool.session_pool`).
    """
    for config, _ in jobs:
        config.validate()  # fail on a bad value before hours of training, not after
    jobs = list(jobs)
    rows: list[Row | None] = [None] * len(jobs)
    todo = []
    for i, (config, seed) in enumerate(jobs):
        path = cache_path(config, seed, runner, cache)
        cached = read_row(path) if use_cache else None
        if cached is None:
            todo.append(i)
        else:
            rows[i] = cached
    n_workers = pool.workers if pool is not None else (
        default_workers() if workers is None else workers)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc,
               disable=not progress_enabled(progress))
    kwargs = {"runner": runner, "cache": cache_dir(cache), "use_cache": use_cache}
    try:
        if n_workers > 1 and len(todo) > 1:
            todo = _run_parallel(jobs, todo, rows, pool or session_pool(n_workers), kwargs,
                                 bar)
        for i in todo:  # serial path, and whatever a broken pool left over
            config, seed = jobs[i]
            bar.set_postfix({**(label(config) if label else {}), "seed": seed})
            rows[i] = run_cached(config, seed, **kwargs)
            bar.update()
    finally:
        bar.close()
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:  # cannot happen unless a runner returned None
        raise RuntimeError(f"runs {missing} produced no row")
    return rows  # type: ignore[return-value]


def default_workers() -> int:
    """Processes a sweep trains in: ``$CNNLAB_WORKERS``, else one per CPU core up to 2 (small
    networks train faster as 2 single-threaded processes than as 1 process with 2 threads).

    1 on a GPU, and 1 when called from a script (``python my_script.py``): worker processes
    are *spawned*, which re-runs a script that lacks an ``if __name__ == "__main__":`` guard.
    Notebooks and ``python -m cnnlab`` are safe and get the parallel default; a guarded script
    can pass ``workers=2``.
    """
    env = os.environ.get("CNNLAB_WORKERS")
    if env:
        return max(1, int(env))
    if torch.cuda.is_available():
        return 1
    if getattr(sys.modules.get("__main__"), "__file__", None):
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def start_workers(*datasets: str, workers: int | None = None) -> list[Future[WorkerState]]:
    """Start the session's sweep worker processes now, in the background, and return at once.

    A worker needs ~4 s before its first run (importing PyTorch, reading the dataset's files).
    Started at the top of a notebook, that happens while the first cells run on the other core,
    and the first sweep starts training at once. Each worker reads ``datasets`` (names from
    :data:`cnnlab.data.DATASETS`) while it starts; workers already running are kept as they are
    (see :func:`cnnlab.pool.session_pool`). Optional: a sweep starts the workers itself.

    Returns:
        One future per worker process, done once that worker is ready (its
        :class:`~cnnlab.pool.WorkerState`); an empty list where sweeps train in this process
        (one worker: on a GPU, or in a script).
    """
    n_workers = default_workers() if workers is None else workers
    check_pool_args(n_workers, datasets)  # also with one worker, where no pool is started
    if n_workers == 1:
        return []
    return session_pool(n_workers, tuple(datasets)).start()


def _run_parallel(
    jobs: list[tuple[RunConfig, int]], todo: list[int], rows: list[Row | None], pool: WorkerPool,
    kwargs: dict[str, Any], bar: tqdm,
) -> list[int]:
    """Run ``todo`` in ``pool``'s worker processes, filling ``rows``; returns what is left
    undone (only non-empty if the pool broke, e.g. a worker was killed)."""
    futures: dict[Future[Row], int] = {}
    try:
        for i in todo:
            futures[pool.submit(run_cached, *jobs[i], **kwargs)] = i
        for fut in as_completed(futures):
            rows[futures[fut]] = fut.result()
            bar.update()
    except BrokenProcessPool:
        pool.broken()  # start fresh processes next time; finish this sweep in-process
        return [i for i in todo if rows[i] is None]
    finally:
        for fut in futures:
            fut.cancel()  # on an interrupt, queued runs do not start
    return []
