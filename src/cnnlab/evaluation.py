"""Evaluating a model honestly (article section 6.3): predictions, a confusion matrix, per-class
recall, k-fold cross-validation, and comparisons of named configurations over seeds.

The article's answer to "how do I evaluate a model" is a list: accuracy and recall on a
validation or test set, cross-validation, model size and training time. This module computes
each of them; what they mean (and why one run misleads) is the chapter's job.

* :func:`confusion_matrix`, :func:`per_class_recall`, :func:`per_class_precision` and
  :func:`accuracy` work on label tensors and are checked against scikit-learn.
* :func:`stratified_k_fold` and :func:`cross_validate` split a training set into ``k`` folds
  that keep the class shares and train one model per fold with :func:`~cnnlab.train.fit`.
* :func:`compare_configs` runs named :class:`~cnnlab.config.RunConfig` s (an ablation) over
  seeds through the on-disk run cache and summarizes them as mean and 95% CI.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from cnnlab.config import Row, RunConfig
from cnnlab.data import Dataset
from cnnlab.experiments import run_jobs, seeds_of
from cnnlab.stats import confidence_interval, summarize
from cnnlab.train import History, fit

__all__ = [
    "CrossValidation",
    "ablation_configs",
    "accuracy",
    "compare_configs",
    "confusion_matrix",
    "cross_validate",
    "per_class_precision",
    "per_class_recall",
    "predict",
    "stratified_k_fold",
]


# ----------------------------------------------------------------------------- metrics


@torch.inference_mode()
def predict(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> Tensor:
    """Predicted labels (``argmax`` of the outputs) of ``model`` in eval mode, on the CPU.

    Args:
        model: a classifier; it runs on the device its parameters are on. Its train/eval mode is
            restored afterwards.
        x: ``(N, C, H, W)`` inputs.
        batch_size: images per forward pass.
    Returns:
        int64 ``[N]``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [model(x[i : i + batch_size].to(device)).argmax(1).cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _check_labels(y: Tensor, name: str, num_classes: int) -> Tensor:
    y = torch.as_tensor(y).flatten().long()
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"Invalid {name}: labels must be in [0, {num_classes}), got "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """Counts of (true class, predicted class) pairs.

    .. math:: C_{ij} = \\#\\{n : y_n = i,\\ \\hat y_n = j\\}

    Row ``i`` sums to the number of examples of class ``i``; the diagonal holds the hits
    (scikit-learn's ``confusion_matrix`` layout).

    Args:
        y_true: int labels ``[N]``.
        y_pred: int labels ``[N]``.
        num_classes: ``K``; labels must lie in ``[0, K)``.
    Returns:
        int64 ``[K, K]``.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"Invalid num_classes value: {num_classes!r} (must be a positive int)")
    t = _check_labels(y_true, "y_true", num_classes)
    p = _check_labels(y_pred, "y_pred", num_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(t)} vs {len(p)}")
    flat = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)  # (K*K,)
    return flat.reshape(num_classes, num_classes)  # (K true, K predicted)


def accuracy(cm: Tensor) -> float:
    """Share of correct predictions: ``trace(C) / sum(C)`` (NaN for an empty matrix)."""
    total = int(cm.sum())
    return float(cm.diagonal().sum()) / total if total else math.nan


def per_class_recall(cm: Tensor) -> Tensor:
    """Recall of each class, ``C_ii / sum_j C_ij``: the share of class ``i`` found (NaN for a
    class with no examples). For one class this is the accuracy on that class's images."""
    cm = cm.double()
    return cm.diagonal() / cm.sum(dim=1)


def per_class_precision(cm: Tensor) -> Tensor:
    """Precision of each class, ``C_ii / sum_j C_ji``: the share of predictions of ``i`` that are
    right (NaN for a class never predicted)."""
    cm = cm.double()
    return cm.diagonal() / cm.sum(dim=0)


# ----------------------------------------------------------------------------- cross-validation


def stratified_k_fold(
    labels: Tensor, k: int, generator: torch.Generator
) -> list[tuple[Tensor, Tensor]]:
    """Split ``range(N)`` into ``k`` disjoint folds that keep each class's share.

    Each class's indices are shuffled with ``generator`` and dealt round-robin to the folds, so
    fold sizes differ by at most one per class.

    Args:
        labels: int64 ``[N]``.
        k: number of folds, ``2 <= k <= N``.
        generator: the source of randomness.
    Returns:
        ``k`` pairs ``(train_idx, val_idx)``: ``val_idx`` is fold ``i``, ``train_idx`` the rest;
        the ``val_idx`` of all folds partition ``range(N)``.
    """
    n = len(labels)
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= n:
        raise ValueError(f"Invalid k value: {k!r} (must be an int in [2, {n}])")
    fold_of = torch.empty(n, dtype=torch.long)
    start = 0  # continue the round-robin across classes so small classes do not pile up in fold 0
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        fold_of[idx] = (torch.arange(len(idx)) + start) % k
        start = (start + len(idx)) % k
    out = []
    for i in range(k):
        val = torch.nonzero(fold_of == i).flatten()
        train = torch.nonzero(fold_of != i).flatten()
        out.append((train[torch.randperm(len(train), generator=generator)], val))
    return out


@dataclass
class CrossValidation:
    """What :func:`cross_validate` measured."""

    fold_acc: list[float]  # accuracy on each held-out fold
    histories: list[History]  # each fold's training history
    mean: float  # mean fold accuracy
    low: float  # 95% CI of the mean (Student t over the folds)
    high: float

    @property
    def k(self) -> int:
        return len(self.fold_acc)


def _standardize(train_x: Tensor, *others: Tensor) -> list[Tensor]:
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)  # (1, C, 1, 1)
    return [((t - mean) / std).contiguous() for t in (train_x, *others)]


def cross_validate(
    data: Dataset,
    make_model: Callable[[int], nn.Module],
    *,
    k: int = 5,
    seed: int = 0,
    **fit_kwargs: Any,
) -> CrossValidation:
    """k-fold cross-validation on ``data.train`` (``data.val`` and ``data.test`` are not used).

    For fold ``i``: train a fresh ``make_model(i)`` on the other ``k - 1`` folds with
    :func:`~cnnlab.train.fit` and measure its accuracy on fold ``i``. The images are
    standardized again with the training folds' own mean and standard deviation, so nothing
    about the held-out fold leaks into training. The held-out fold also serves as ``fit``'s
    validation split, so do not pass a hook that selects on validation (early stopping) unless
    that is what you want to measure.

    Args:
        data: a :class:`~cnnlab.data.Dataset`; its training split is the pool.
        make_model: ``fold -> model`` (e.g. ``lambda i: build_model(shape, 10, seed=i)``).
        k: number of folds.
        seed: seeds the fold split and each fold's ``fit`` (``seed + i``).
        **fit_kwargs: passed to :func:`~cnnlab.train.fit` (``epochs`` and ``lr`` are required).
    Returns:
        A :class:`CrossValidation` with the k fold accuracies and their mean and 95% CI.
    """
    x, y = data.train
    folds = stratified_k_fold(y, k, torch.Generator().manual_seed(seed))
    accs, histories = [], []
    for i, (train_idx, val_idx) in enumerate(folds):
        x_tr, x_va = _standardize(x[train_idx], x[val_idx])
        fold = replace(data, train=(x_tr, y[train_idx]), val=(x_va, y[val_idx]),
                       test=(x_va, y[val_idx]))
        hist = fit(make_model(i), fold, seed=seed + i, **fit_kwargs)
        accs.append(hist.test_acc)  # the held-out fold, evaluated after training
        histories.append(hist)
    mean, low, high = confidence_interval(accs)
    return CrossValidation(fold_acc=accs, histories=histories, mean=mean, low=low, high=high)


# ----------------------------------------------------------------------------- named configurations


def ablation_configs(
    base: RunConfig, techniques: Mapping[str, Mapping[str, Any]]
) -> dict[str, RunConfig]:
    """An ablation: ``base`` alone, with each technique added on its own, and with all of them.

    Args:
        base: a :class:`~cnnlab.config.RunConfig` with every technique off.
        techniques: ``name -> {field: value}``, the :class:`~cnnlab.config.RunConfig` fields
            that switch each technique on, e.g. ``{"+BN": {"batch_norm": True},
            "+dropout": {"dropout": 0.5}}``. No two may set the same field.
    Returns:
        ``name -> RunConfig``, each validated, in this order. ``"baseline"`` is ``base``, each
        technique's name maps to ``base`` with that change, and ``"all together"`` to ``base``
        with every change.
    """
    if not techniques:
        raise ValueError("Invalid techniques: need at least one")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    owner: dict[str, str] = {}
    for name, change in techniques.items():
        if name in ("baseline", "all together"):
            raise ValueError(f"Invalid technique name: {name!r} (the ablation's own rows are "
                             "'baseline' and 'all together')")
        for key in change:
            if key not in fields:
                raise ValueError(f"Invalid field of technique {name!r}: {key!r} (not a "
                                 "RunConfig field)")
            if key in owner:
                raise ValueError(f"Invalid techniques: {owner[key]!r} and {name!r} both set "
                                 f"{key!r}, so 'all together' is not defined")
            owner[key] = name
    configs = {"baseline": base}
    for name, change in techniques.items():
        configs[name] = replace(base, **change)
    configs["all together"] = replace(base, **{k: v for c in techniques.values()
                                               for k, v in c.items()})
    for config in configs.values():
        config.validate()
    return configs


def compare_configs(
    configs: Mapping[str, RunConfig],
    seeds: int | Sequence[int] = 5,
    *,
    metrics: Sequence[str] = ("test_acc", "val_acc", "train_acc", "train_eval_acc", "gap",
                              "train_time"),
    **sweep_kwargs: Any,
) -> tuple[list[Row], list[Row]]:
    """Run named :class:`~cnnlab.config.RunConfig` s (e.g. an ablation) over seeds.

    All (configuration, seed) runs go through :func:`cnnlab.experiments.run_jobs` together: they
    are cached on disk under the same keys as ``run_cached(config, seed)`` and share the worker
    processes.

    Args:
        configs: ``name -> RunConfig``, in the order the table should show them.
        seeds: a count (``0..n-1``) or an explicit list.
        metrics: row fields to summarize as mean and 95% CI (``train_time`` included).
        **sweep_kwargs: passed to ``run_jobs`` (``cache``, ``use_cache``, ``workers``, ...).
    Returns:
        ``(rows, summary)``: every run's row with a ``"name"`` field added, and per name (in the
        order of ``configs``) ``n``, ``n_diverged`` and each metric's mean, ``_low`` and
        ``_high``.
    """
    if not configs:
        raise ValueError("Invalid configs: need at least one named configuration")
    seed_list = seeds_of(seeds)
    names = [name for name in configs for _ in seed_list]  # one per job, in job order
    jobs = [(configs[name], seed) for name in configs for seed in seed_list]
    done = run_jobs(jobs, desc="configurations", **sweep_kwargs)  # validates every config first
    rows = [{**row, "name": name} for row, name in zip(done, names)]
    summary = summarize(rows, "name", tuple(metrics))
    return rows, summary
