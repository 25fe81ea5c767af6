"""The run cache: every finished training run as one JSON file, keyed by what determines it.

A run's key (:func:`cache_key`) hashes its :class:`~cnnlab.config.RunConfig` (numbers normalized,
fields at their default left out, so that adding a field with a neutral default keeps every
cached run valid), the seed, the runner, the device kind and :data:`CACHE_VERSION`. Rows are
written atomically and a corrupt file is recomputed, never trusted. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import Row, RunConfig, Runner

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_RUNNER",
    "cache_dir",
    "cache_key",
    "cache_path",
    "device_kind",
    "read_row",
    "runner_name",
    "write_row",
]

# bump when the meaning of a cached row changes (3: train_eval_acc, eval gap; 4: val_acc of
# the final weights, frac_below_init/frac_zero in weights)
CACHE_VERSION = 4
# The default runner's name in keys: cnnlab.experiments.run (it must keep that name and module, or
# every cached run would be retrained).
DEFAULT_RUNNER = "cnnlab.experiments.run"


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """``path``, else ``$CNNLAB_CACHE``, else ``~/.cache/cnnlab/runs``."""
    if path is not None:
        return Path(path)
    env = os.environ.get("CNNLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cnnlab" / "runs"


def runner_name(runner: Runner | None) -> str:
    """The name a runner is cached under: its module and qualified name (``None``: the default
    runner, :func:`cnnlab.experiments.run`)."""
    if runner is None:
        return DEFAULT_RUNNER
    return f"{runner.__module__}.{runner.__qualname__}"


def device_kind() -> str:
    """Where runs train here: ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"`` (part of the key:
    a GPU's kernels round differently)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


_INT_FIELDS = frozenset({"train_size", "val_size", "width", "epochs", "batch_size",
                         "early_stopping"})


_MISSING = object()  # "no such field" / "no value given", distinct from None


def _as_number(key: str, value: Any) -> Any:
    """``l2=0`` and ``l2=0.0`` are the same run: a non-integer field's number is a float."""
    if isinstance(value, int) and not isinstance(value, bool) and key not in _INT_FIELDS:
        return float(value)
    return value


def _normalized(config: dict[str, Any]) -> dict[str, Any]:
    """The fields that identify a run: numbers normalized, fields at their default left out (so
    adding a field whose default keeps the old behaviour leaves every cached run valid)."""
    defaults = {k: _as_number(k, v) for k, v in RunConfig().to_dict().items()}
    out = {}
    for key, value in config.items():
        value = _as_number(key, value)
        default = defaults.get(key, _MISSING)
        if value == default and type(value) is type(default):
            continue
        out[key] = value
    if out.get("weight_decay"):  # decay acts on the weights only (it acted on every parameter
        out["decay"] = "weights"  # before): the runs with decay retrain, no other run does
    return out


def cache_key(config: RunConfig, seed: int, runner: Runner | None = None) -> str:
    """A stable hash of everything that determines a row: the configuration (normalized), the
    seed, the runner's name (``None``: :func:`cnnlab.experiments.run`), the device kind and
    :data:`CACHE_VERSION`."""
    payload = {
        "config": _normalized(config.to_dict()),
        "seed": seed,
        "runner": runner_name(runner),
        "device": device_kind(),
        "version": CACHE_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def read_row(path: Path) -> Row | None:
    """The cached row at ``path``; ``None`` when it is missing or corrupt (it is then retrained)."""
    try:
        row = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or corrupt: recompute
    return row if isinstance(row, dict) and "seed" in row else None


def write_row(path: Path, row: Row) -> None:
    """Write ``row`` to ``path`` atomically (an interrupted write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(row, f)
    os.replace(tmp, path)  # atomic: an interrupted write never leaves half a file behind


def cache_path(config: RunConfig, seed: int, runner: Runner | None = None,
               cache: str | os.PathLike | None = None) -> Path:
    """Where the row of ``(config, seed, runner)`` is cached in folder ``cache``."""
    return cache_dir(cache) / f"{cache_key(config, seed, runner)}.json"
