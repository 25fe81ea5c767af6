"""Worker processes that train runs in parallel: a :class:`WorkerPool` its caller owns.

Small networks train faster as two single-threaded processes than as one process with two
threads, so sweeps spread their runs over worker processes. A worker is *spawned* (fork is unsafe
once PyTorch runs threads) and takes ~4 s to start (importing PyTorch, reading a dataset), so a
pool is kept and reused.

Whoever needs workers either owns a :class:`WorkerPool` (``with WorkerPool(2) as pool: ...``;
it shuts its processes down on exit), or uses the one *session pool* that notebooks share
(:func:`session_pool`): created on first use, replaced when another size is asked for, shut
down by :func:`shutdown_session_pool` or when the interpreter exits.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from cnnlab.data import DATASETS, load_dataset

__all__ = [
    "WorkerPool",
    "check_pool_args",
    "WorkerState",
    "session_pool",
    "shutdown_session_pool",
    "worker_state",
]

T = TypeVar("T")  # what a submitted function returns

# In a worker process: the datasets its initializer read (reported by worker_state).
_DATASETS_READ: list[str] = []


@dataclass(frozen=True)
class WorkerState:
    """What a started worker process has done."""

    pid: int  # the worker's process id
    threads: int  # torch threads (1: one core per process)
    dynamo_imported: bool  # torch._dynamo imported ahead of the first optimizer
    datasets_read: tuple[str, ...]  # datasets whose files it has read


def _init_worker(datasets: tuple[str, ...] = ()) -> None:
    torch.set_num_threads(1)  # one core per process; threads would fight over the same cores
    os.environ["CNNLAB_PROGRESS"] = "0"
    # Ctrl-C / a kernel interrupt is handled by the parent (it cancels the queued runs); a
    # worker finishing its current run must not print a KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What a worker's first run would otherwise pay on top of training, done before it: creating
    # an optimizer imports torch._dynamo (~1.5 s), and a dataset's files are read once per
    # process (~0.5 s for Fashion-MNIST). Started early, this overlaps with the caller's work.
    importlib.import_module("torch._dynamo")
    for name in datasets:
        try:
            load_dataset(name, train_size=100)  # reads the files; converts only 100 images
            _DATASETS_READ.append(name)
        except Exception:  # noqa: BLE001 (unavailable data: the run itself reports it)
            pass


def worker_state() -> WorkerState:
    """The calling process's :class:`WorkerState` (submit it to a pool to ask a worker)."""
    return WorkerState(pid=os.getpid(), threads=torch.get_num_threads(),
                       dynamo_imported="torch._dynamo" in sys.modules,
                       datasets_read=tuple(_DATASETS_READ))


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are started, so that they start with it ignored
    (an ignored signal stays ignored across ``exec``, and Python keeps it so). Ctrl-C in a
    terminal signals every process of the group: the parent alone must see it, and a worker
    still importing PyTorch must not print a KeyboardInterrupt traceback. Only the main thread
    can change signal handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_pool_args(workers: int, datasets: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming a bad worker count or an unknown dataset name."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"Invalid workers value: {workers!r} (must be an int >= 1)")
    for name in datasets:
        if name not in DATASETS:
            raise ValueError(f"Unknown dataset: {name!r} (choose one of {', '.join(DATASETS)})")


class WorkerPool:
    """``workers`` spawned processes, one torch thread each, that read ``datasets`` as they
    start. Processes start on :meth:`start` or the first :meth:`submit`; :meth:`shutdown` (or
    leaving a ``with`` block) stops them and cancels queued work."""

    def __init__(self, workers: int, datasets: tuple[str, ...] = ()) -> None:
        check_pool_args(workers, datasets)
        self.workers = workers
        self.datasets = tuple(datasets)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=ctx,
                                                 initializer=_init_worker,
                                                 initargs=(self.datasets,))
        return self._executor

    @property
    def running(self) -> bool:
        """Whether the processes have been started (and not shut down)."""
        return self._executor is not None

    def start(self) -> list[Future[WorkerState]]:
        """Start every worker now and return at once: one future per worker, done when it is
        ready (its :class:`WorkerState`)."""
        pool = self._pool()
        with _sigint_ignored():  # the processes start here
            return [pool.submit(worker_state) for _ in range(self.workers)]

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` in a worker (``fn`` must be importable by name)."""
        pool = self._pool()
        with _sigint_ignored():  # a submit may start processes
            return pool.submit(fn, *args, **kwargs)

    def pids(self) -> list[int]:
        """The process ids of the running workers (empty when not started)."""
        if self._executor is None:
            return []
        # ProcessPoolExecutor has no public list of its processes; _processes is pid -> Process
        return sorted(getattr(self._executor, "_processes", None) or {})

    def terminate(self) -> None:
        """Stop the workers now, in the middle of their runs (SIGTERM, then SIGKILL after 5 s),
        and cancel queued work: what an interrupted command line does. A run that was cut off
        is not cached; every finished run already is. The pool can be started again."""
        if self._executor is None:
            return
        processes = list((getattr(self._executor, "_processes", None) or {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for proc in processes:
            if proc.is_alive():
                proc.terminate()
        for proc in processes:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._executor = None

    def shutdown(self, wait: bool = True) -> None:
        """Stop the workers; queued work is cancelled. The pool can be started again."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None

    def broken(self) -> None:
        """Forget processes that died (a killed worker breaks the executor): the next
        :meth:`submit` starts fresh ones."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        state = "running" if self.running else "not started"
        return f"WorkerPool(workers={self.workers}, datasets={self.datasets}, {state})"


_SESSION: WorkerPool | None = None


def session_pool(workers: int, datasets: tuple[str, ...] = ()) -> WorkerPool:
    """The pool that a notebook's sweeps share: kept while ``workers`` stays the same (its
    processes are reused), replaced (the old one shut down) when another size is asked for."""
    global _SESSION
    if _SESSION is None or _SESSION.workers != workers:
        if _SESSION is not None:
            _SESSION.shutdown(wait=False)
        _SESSION = WorkerPool(workers, datasets)
    return _SESSION


def shutdown_session_pool() -> None:
    """Stop the session pool's processes (also done when the interpreter exits)."""
    global _SESSION
    if _SESSION is not None:
        _SESSION.shutdown()
        _SESSION = None


atexit.register(shutdown_session_pool)
