"""Datasets as preloaded tensors with deterministic, seeded splits.

Every loader returns a :class:`Dataset` whose ``train``, ``val`` and ``test`` are pairs ``(x, y)``:
``x`` is float32 ``[N, C, H, W]`` normalized with the *training* split's per-channel mean and
standard deviation, ``y`` is int64 ``[N]``. Training straight from tensors (no DataLoader) is about
ten times cheaper per epoch on a small CPU than a DataLoader, and it keeps runs reproducible.

Names:

* ``"digits"``: scikit-learn's bundled 1,797 real 8x8 handwritten digits. Ships inside
  scikit-learn, so it always works offline: the embedded default.
* ``"fashion_mnist"``: the book's main dataset (70,000 real 28x28 clothing images).
* ``"mnist"`` and ``"cifar10"``.

The last three are read from a local copy of the original files when one exists (Debian's package
``dataset-fashion-mnist`` installs Fashion-MNIST under ``/usr/share/datasets/fashion-mnist/``;
``CNNLAB_FASHION_MNIST_DIR`` / ``CNNLAB_MNIST_DIR`` name another folder), otherwise torchvision
downloads them into ``CNNLAB_DATA_HOME`` (default ``~/.cache/cnnlab/data``). Offline and without a
local copy, :class:`DatasetUnavailableError` says how to get the data.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BENCHMARK_README",
    "DATASETS",
    "Dataset",
    "DatasetUnavailableError",
    "available",
    "choose_dataset",
    "load_dataset",
    "noisy_labels",
    "published_benchmarks",
    "read_idx",
    "stratified_indices",
]

DATASETS: tuple[str, ...] = ("digits", "fashion_mnist", "mnist", "cifar10")

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
DIGIT_CLASSES = tuple(str(i) for i in range(10))

# Where Debian's dataset packages put the original idx files.
_SYSTEM_DIRS = {
    "fashion_mnist": Path("/usr/share/datasets/fashion-mnist"),
    "mnist": Path("/usr/share/datasets/mnist"),
}
_DIR_ENV = {"fashion_mnist": "CNNLAB_FASHION_MNIST_DIR", "mnist": "CNNLAB_MNIST_DIR"}
_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetUnavailableError(RuntimeError):
    """A dataset has no local copy and cannot be downloaded (offline)."""


Split = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Dataset:
    """Preloaded, normalized splits of one dataset."""

    name: str  # registry name, e.g. "fashion_mnist"
    train: Split  # (x [N, C, H, W] float32, y [N] int64), the (possibly subsampled) training set
    val: Split  # held out from the training files, for model selection / early stopping
    test: Split  # the dataset's official test set (digits: a seeded stratified hold-out)
    num_classes: int  # number of labels
    classes: tuple[str, ...] = field(default=())  # human-readable label names
    mean: tuple[float, ...] = field(default=())  # per-channel training mean used to normalize
    std: tuple[float, ...] = field(default=())  # per-channel training std used to normalize

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train[0].shape[1:]
        return (int(c), int(h), int(w))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(getattr(self, k)[1])}" for k in ("train", "val", "test"))
        return f"Dataset(name={self.name!r}, {sizes}, input_shape={self.input_shape})"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one file in the idx format of (Fashion-)MNIST, gzipped or not.

    Args:
        path: the file; a ``.gz`` suffix is decompressed transparently.
    Returns:
        A uint8 array shaped as the header says (``[N]`` labels or ``[N, H, W]`` images).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (bad magic {raw[:4]!r})")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes (truncated?)")
    return data.reshape(dims).copy()  # writable, detached from the file buffer


def stratified_indices(labels: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Draw ``size`` indices so that every class keeps its share of ``labels``.

    Args:
        labels: int64 ``[N]``.
        size: how many indices to return, ``1 <= size <= N``.
        generator: the source of randomness (explicit, so the draw is reproducible).
    Returns:
        int64 ``[size]`` indices in random order.
    """
    n = len(labels)
    if not 1 <= size <= n:
        raise ValueError(f"Invalid subset size: {size} (must be between 1 and {n})")
    classes = torch.unique(labels)
    counts = torch.stack([(labels == c).sum() for c in classes])
    # Largest-remainder allocation so the per-class quotas sum to exactly `size`.
    exact = counts.double() * size / n
    quota = exact.floor().long()
    rest = size - int(quota.sum())
    if rest:
        order = torch.argsort(exact - quota, descending=True, stable=True)
        quota[order[:rest]] += 1
    picked = []
    for c, q in zip(classes, quota):
        idx = torch.nonzero(labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=generator)[: int(q)]])
    out = torch.cat(picked)
    return out[torch.randperm(len(out), generator=generator)]


def noisy_labels(labels: Tensor, rate: float, num_classes: int,
                 generator: torch.Generator) -> Tensor:
    """A copy of ``labels`` with ``round(rate * N)`` of them, chosen at random, replaced by a class
    drawn uniformly from all ``num_classes`` (so about ``rate / num_classes`` of the chosen keep
    their label by chance): label noise, for a training set a network can only memorize.

    Args:
        labels: int64 ``[N]``.
        rate: the share of labels to replace, ``0 <= rate <= 1``.
        num_classes: the classes to draw from.
        generator: the source of randomness.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Invalid label noise rate: {rate} (must be in [0, 1])")
    out = labels.clone()
    k = round(rate * len(labels))
    idx = torch.randperm(len(labels), generator=generator)[:k]
    out[idx] = torch.randint(num_classes, (k,), generator=generator, dtype=labels.dtype)
    return out


# ----------------------------------------------------------------------------- raw sources
# Each returns uint8/float arrays: (train_x [N, H, W] or [N, H, W, C], train_y, test_x, test_y).


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    # Imported here, not at the top: scikit-learn takes ~1 s to import.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)  # (1797, 8, 8), 0..16


def _data_home() -> Path:
    return Path(os.environ.get("CNNLAB_DATA_HOME", Path.home() / ".cache" / "cnnlab" / "data"))


def _find_idx_dir(name: str) -> Path | None:
    """The first folder holding all four idx files of ``name`` (plain or ``.gz``)."""
    candidates = []
    if os.environ.get(_DIR_ENV[name]):
        candidates.append(Path(os.environ[_DIR_ENV[name]]))
    candidates.append(_SYSTEM_DIRS[name])
    tv_folder = "FashionMNIST" if name == "fashion_mnist" else "MNIST"
    candidates.append(_data_home() / tv_folder / "raw")  # where torchvision downloads to
    for d in candidates:
        if all(_idx_path(d, f) is not None for f in _IDX_FILES.values()):
            return d
    return None


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _offline_error(name: str, reason: object) -> DatasetUnavailableError:
    hint = {
        "fashion_mnist": "install Debian's package `dataset-fashion-mnist` (apt-get install -y "
        "dataset-fashion-mnist), set CNNLAB_FASHION_MNIST_DIR to a folder with the original "
        "idx files, or",
        "mnist": "set CNNLAB_MNIST_DIR to a folder with the original idx files, or",
        "cifar10": "",
    }[name]
    return DatasetUnavailableError(
        f"Dataset {name!r} is not available: no local copy was found and it could not be "
        f"downloaded ({reason}). To get it, {hint} go online once so torchvision can download it "
        f"into {_data_home()} (CNNLAB_DATA_HOME moves that folder). The dataset 'digits' ships "
        "with scikit-learn and works offline."
    )


def _download_allowed() -> bool:
    return os.environ.get("CNNLAB_OFFLINE", "0") in ("", "0", "false", "False")


def _torchvision_download(name: str) -> None:
    """Let torchvision fetch ``name`` into the data home (only called when no local copy exists)."""
    from torchvision import datasets  # only on this rare path (a download): importing it is slow

    cls = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST,
           "cifar10": datasets.CIFAR10}[name]
    root = _data_home()
    for train in (True, False):
        cls(root=str(root), train=train, download=True)


def _download_or_explain(name: str) -> None:
    if not _download_allowed():
        raise _offline_error(name, "CNNLAB_OFFLINE is set")
    try:
        _torchvision_download(name)
    except Exception as exc:  # noqa: BLE001 - any network failure means "not available"
        raise _offline_error(name, f"{type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=4)
def _raw_idx(name: str, folder_key: str) -> tuple[np.ndarray, ...]:
    folder = Path(folder_key)
    arrays = [read_idx(_idx_path(folder, stem)) for stem in _IDX_FILES.values()]
    return tuple(arrays)


def _raw_mnist_like(name: str) -> tuple[np.ndarray, ...]:
    folder = _find_idx_dir(name)
    if folder is None:
        _download_or_explain(name)
        folder = _find_idx_dir(name)
        if folder is None:
            raise _offline_error(name, "the download left no idx files")
    return _raw_idx(name, str(folder))


def _raw_cifar10() -> tuple[np.ndarray, ...]:
    from torchvision import datasets  # only for CIFAR-10 (its pickled batches): slow to import

    root = _data_home()
    try:
        train = datasets.CIFAR10(root=str(root), train=True, download=False)
        test = datasets.CIFAR10(root=str(root), train=False, download=False)
    except RuntimeError:
        _download_or_explain("cifar10")
        train = datasets.CIFAR10(root=str(root), train=True, download=False)
        test = datasets.CIFAR10(root=str(root), train=False, download=False)
    return (train.data, np.asarray(train.targets), test.data, np.asarray(test.targets))


def available(name: str) -> bool:
    """Whether ``name`` can be loaded without downloading anything."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset name: {name!r} (choose one of {', '.join(DATASETS)})")
    if name == "digits":
        return True
    if name == "cifar10":
        return (_data_home() / "cifar-10-batches-py").is_dir()
    return _find_idx_dir(name) is not None


def choose_dataset(preferred: str = "fashion_mnist", fallback: str = "digits") -> tuple[str, str]:
    """Pick the dataset to run on: ``preferred`` where it can be had, else ``fallback``.

    Returns ``(preferred, "")`` when it is on disk, or when it can be downloaded now (online, e.g.
    in Colab, and ``CNNLAB_OFFLINE`` is not set). Otherwise ``(fallback, why)``: ``why`` says
    why ``preferred`` could not be had and how to get it (the text of the
    :class:`DatasetUnavailableError` that loading it would raise).
    """
    if available(preferred):
        return preferred, ""
    reason: object = "CNNLAB_OFFLINE is set"
    if _download_allowed():
        try:
            _download_or_explain(preferred)
        except DatasetUnavailableError as exc:
            reason = exc.__cause__ or exc
        if available(preferred):
            return preferred, ""
    return fallback, str(_offline_error(preferred, reason))


# ----------------------------------------------------------------------------- assembly


def _to_nchw(x: np.ndarray) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)).float()
    if t.ndim == 3:  # (N, H, W) -> (N, 1, H, W)
        t = t.unsqueeze(1)
    elif t.ndim == 4 and t.shape[-1] in (1, 3):  # (N, H, W, C) -> (N, C, H, W)
        t = t.permute(0, 3, 1, 2).contiguous()
    return t


def load_dataset(
    name: str = "digits",
    *,
    train_size: int | None = None,
    seed: int = 0,
    val_size: int | None = None,
) -> Dataset:
    """Load a dataset as normalized tensors with deterministic splits.

    Args:
        name: one of :data:`DATASETS`.
        train_size: if given, a stratified random subset of this many training images (the
            small-data regime in which regularization shows); ``None`` keeps all of them.
        seed: seeds the validation hold-out and the subset draw (same seed, same splits).
        val_size: images held out of the training files for validation (default: 10% of them,
            at most 2,000).
    Returns:
        A :class:`Dataset`. Pixel values are standardized per channel with the mean and
        standard deviation of the returned training split: ``x' = (x - mean) / std``.
    Raises:
        ValueError: unknown ``name`` or a size that does not fit.
        DatasetUnavailableError: the data is neither on disk nor downloadable.
    """
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset name: {name!r} (choose one of {', '.join(DATASETS)})")
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"Invalid train_size: {train_size!r} (must be a positive int or None)")
    if val_size is not None and (not isinstance(val_size, int) or val_size < 1):
        raise ValueError(f"Invalid val_size: {val_size!r} (must be a positive int or None)")

    gen = torch.Generator().manual_seed(seed)
    # Images stay raw numpy arrays until the splits are drawn: only the selected ones become
    # float tensors (a 1,000-image subset does not convert all 60,000 training images).
    if name == "digits":
        images, labels = _raw_digits()
        y_all = torch.from_numpy(labels)
        # No official test split: hold out a seeded, stratified 20% as the test set.
        test_idx = stratified_indices(y_all, len(y_all) // 5, gen)
        mask = torch.ones(len(y_all), dtype=torch.bool)
        mask[test_idx] = False
        raw_test, y_test = images[test_idx.numpy()], y_all[test_idx]
        raw_pool, y_pool = images[mask.numpy()], y_all[mask]
        classes = DIGIT_CLASSES
    else:
        if name == "cifar10":
            raw_pool, ty, raw_test, vy = _raw_cifar10()
            classes = CIFAR10_CLASSES
        else:
            raw_pool, ty, raw_test, vy = _raw_mnist_like(name)
            classes = FASHION_MNIST_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
        y_pool = torch.from_numpy(np.asarray(ty, dtype=np.int64))
        y_test = torch.from_numpy(np.asarray(vy, dtype=np.int64))

    n_val = val_size if val_size is not None else min(len(y_pool) // 10, 2000)
    if n_val >= len(y_pool):
        raise ValueError(f"Invalid val_size: {n_val} (only {len(y_pool)} training images)")
    val_idx = stratified_indices(y_pool, n_val, gen)
    keep = torch.ones(len(y_pool), dtype=torch.bool)
    keep[val_idx] = False
    train_pool = torch.nonzero(keep).flatten()
    if train_size is not None:
        if train_size > len(train_pool):
            raise ValueError(
                f"Invalid train_size: {train_size} ({name!r} has {len(train_pool)} training "
                f"images after holding out {n_val} for validation)"
            )
        train_idx = train_pool[stratified_indices(y_pool[train_pool], train_size, gen)]
    else:
        train_idx = train_pool[torch.randperm(len(train_pool), generator=gen)]

    x_train, y_train = _to_nchw(raw_pool[train_idx.numpy()]), y_pool[train_idx]
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)  # (1, C, 1, 1)

    def norm(x: Tensor) -> Tensor:
        return ((x - mean) / std).contiguous()

    return Dataset(
        name=name,
        train=(norm(x_train), y_train),
        val=(norm(_to_nchw(raw_pool[val_idx.numpy()])), y_pool[val_idx]),
        test=(norm(_to_nchw(raw_test)), y_test),
        num_classes=len(classes),
        classes=classes,
        mean=tuple(mean.flatten().tolist()),
        std=tuple(std.flatten().tolist()),
    )


# Where Debian's package dataset-fashion-mnist puts the dataset authors' README (with the table).
BENCHMARK_README = Path("/usr/share/doc/dataset-fashion-mnist/README.md.gz")

# ----------------------------------------------------------------------------- published results

_TABLE_HEADER = re.compile(r"^\|\s*Classifier\s*\|", re.IGNORECASE)


def _parse_accuracy(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return math.nan


def published_benchmarks(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The benchmark table of Fashion-MNIST's README: results that readers submitted.

    The dataset authors' README (shipped gzipped by Debian's ``dataset-fashion-mnist`` as
    ``/usr/share/doc/dataset-fashion-mnist/README.md.gz``) has a markdown table "Classifier |
    Preprocessing | Fashion test accuracy | MNIST test accuracy | Submitter | Code"; the authors
    note that they have not verified these numbers. (The package's ``benchmark/baselines.json``
    is only the hyper-parameter grid of their scikit-learn benchmark, not results.)

    Args:
        path: the README (``.md`` or ``.md.gz``); default :data:`BENCHMARK_README`.
    Returns:
        One dict per table row: ``classifier``, ``preprocessing`` (strings),
        ``fashion_acc``, ``mnist_acc`` (floats, NaN where the table has "-"), ``submitter``
        (the link text). An empty list when the file has no such table.
    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = Path(path) if path is not None else BENCHMARK_README
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf8")
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)), None)
    if start is None:
        return []
    rows = []
    for line in lines[start + 2 :]:  # skip the header and the |---| line
        if not line.strip().startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5:
            continue
        submitter = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cells[4])  # [name](url) -> name
        rows.append({
            "classifier": cells[0], "preprocessing": cells[1],
            "fashion_acc": _parse_accuracy(cells[2]), "mnist_acc": _parse_accuracy(cells[3]),
            "submitter": submitter,
        })
    return rows
