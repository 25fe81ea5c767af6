"""``fit()``: the one training loop of the book. Techniques plug in through hooks.

A hook is any object with some of the methods of :class:`Hook` (subclassing it is convenient but
not required). In one step ``fit`` calls, in order::

    x, y = hook.transform_batch(x, y, generator)   # e.g. data augmentation (training only)
    loss = cross_entropy(model(x), y)
    loss = loss + hook.extra_loss(model)            # e.g. an L1/L2 penalty
    loss.backward()
    hook.after_backward(model)                      # e.g. gradient clipping
    optimizer.step()
    hook.after_step(model)                          # e.g. weight clipping
    ...
    stop = hook.on_epoch_end(model, history)        # e.g. early stopping (True stops training)
    hook.on_fit_end(model, history)                 # e.g. restore the best weights
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from cnnlab.data import Dataset

__all__ = [
    "STAGES",
    "CosineLR",
    "History",
    "Hook",
    "evaluate",
    "fit",
    "hook_stages",
    "make_optimizer",
    "progress_enabled",
    "train_epoch",
]

OPTIMIZERS = ("sgd", "adam", "adamw")


class Hook:
    """Base class of training hooks; every method is a no-op by default."""

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first step."""

    def transform_batch(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """Transform a training batch before the forward pass (never applied to evaluation)."""
        return x, y

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        """A term added to the training loss (``None`` adds nothing)."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()``, before the optimizer step."""

    def after_step(self, model: nn.Module) -> None:
        """Called after ``optimizer.step()``."""

    def on_epoch_end(self, model: nn.Module, history: History) -> bool:
        """Called after each epoch's evaluation; return True to stop training."""
        return False

    def on_fit_end(self, model: nn.Module, history: History) -> None:
        """Called once when training ends (also after divergence or an early stop)."""


class CosineLR(Hook):
    """The learning rate along half a cosine over ``epochs`` epochs: epoch ``e`` (from 0) trains
    at ``lr * (1 + cos(pi * e / epochs)) / 2`` of each parameter group's starting rate, so the
    first epoch at the full rate and the last at a small fraction of it (``RunConfig``'s
    ``lr_schedule="cosine"``). The rate changes between epochs, not within one."""

    def __init__(self, epochs: int) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"Invalid epochs value: {epochs!r} (must be an int >= 1)")
        self.epochs = epochs
        self.optimizer: torch.optim.Optimizer | None = None
        self.base: list[float] = []

    def factor(self, epoch: int) -> float:
        """The share of the starting rate that epoch ``epoch`` (from 0) trains at."""
        return (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs)) / 2

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.base = [group["lr"] for group in optimizer.param_groups]

    def on_epoch_end(self, model: nn.Module, history: History) -> bool:
        if self.optimizer is not None:
            share = self.factor(len(history.train_loss))  # the epochs done = the next's index
            for group, base in zip(self.optimizer.param_groups, self.base):
                group["lr"] = base * share
        return False


@dataclass
class History:
    """What one training run produced. Per-epoch lists have one entry per finished epoch."""

    train_loss: list[float] = field(default_factory=list)  # mean training loss (incl. penalties)
    # accuracy on the batches as trained (train mode: dropout, augmentation and batch statistics
    # on, weights changing during the epoch); not a measure of overfitting, see train_eval_acc
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)  # seconds of training per epoch
    test_acc: float = float("nan")  # accuracy on the test split at the end
    test_loss: float = float("nan")
    # accuracy on the whole training split in eval mode with the final weights: the overfitting
    # gap is train_eval_acc - test_acc (both measured the same way)
    train_eval_acc: float = float("nan")
    # validation accuracy of the final weights (after a hook such as early stopping restored the
    # best ones: then it differs from val_acc[-1], the last epoch's); NaN for a diverged run
    final_val_acc: float = float("nan")
    diverged: bool = False  # the loss became NaN/inf and training stopped
    stopped_early: bool = False  # a hook asked to stop before `epochs`
    steps: int = 0  # optimizer steps taken

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    @property
    def train_time(self) -> float:
        return float(sum(self.epoch_time))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN stays NaN; json writes it as NaN)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def progress_enabled(progress: bool | None) -> bool:
    """``progress`` if given, else on unless the environment variable CNNLAB_PROGRESS is 0."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("CNNLAB_PROGRESS", "1") not in ("0", "false", "False", "")


def make_optimizer(
    params: Iterable[Any],
    name: str,
    *,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """``"sgd"`` (with momentum), ``"adam"`` (L2-style coupled decay) or ``"adamw"`` (decoupled)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"Unknown optimizer: {name!r} (choose one of {', '.join(OPTIMIZERS)})")


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256, keep_mode: bool = False
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode (restores the previous mode).

    ``keep_mode=True`` evaluates in whatever mode the model is in instead: in train mode that
    shows what forgetting ``model.eval()`` does (dropout stays on, batch norm uses each batch's
    statistics and updates its running ones)."""
    was_training = model.training
    if not keep_mode:
        model.eval()
    device = next(model.parameters()).device
    total_loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        out = model(xb)
        total_loss += float(F.cross_entropy(out, yb, reduction="sum"))
        correct += int((out.argmax(1) == yb).sum())
    model.train(was_training)
    n = max(len(y), 1)
    return total_loss / n, correct / n


def _check_args(epochs: int, lr: float, batch_size: int, momentum: float, wd: float) -> None:
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Invalid epochs value: {epochs!r} (must be a positive int)")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"Invalid learning rate: {lr!r} (must be a positive number)")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size value: {batch_size!r} (must be a positive int)")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum value: {momentum} (must be in [0, 1))")
    if wd < 0:
        raise ValueError(f"Invalid weight_decay value: {wd} (must be >= 0)")


STAGES = ("on_fit_start", "transform_batch", "extra_loss", "after_backward", "after_step",
          "on_epoch_end", "on_fit_end")  # the points of the loop where a Hook can act


def hook_stages(hooks: Sequence[Hook]) -> dict[str, list[Callable[..., Any]]]:
    """For each stage of :data:`STAGES`, the bound methods of the hooks that implement it, in
    hook order (hooks may be duck-typed: any object with some of :class:`Hook`'s methods)."""
    return {name: [getattr(h, name) for h in hooks if hasattr(h, name)] for name in STAGES}


def train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    gen: torch.Generator,
    stages: dict[str, list[Callable[..., Any]]],
    history: History,
    check_every: int = 1,
) -> tuple[float, float]:
    """One pass over ``(x, y)`` in the order of a permutation drawn from ``gen``: per batch,
    forward, cross-entropy (plus the hooks' extra losses), backward, step, with the hooks'
    ``transform_batch``/``extra_loss``/``after_backward``/``after_step`` in between.

    Counts the steps in ``history.steps`` and sets ``history.diverged`` (and stops) when the
    summed loss is no longer finite (checked every ``check_every`` steps).

    Returns:
        ``(mean training loss, training accuracy)`` over the epoch, as trained (train mode).
    """
    model.train()
    n, device = len(y), x.device
    perm = torch.randperm(n, generator=gen).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for step, i in enumerate(range(0, n, batch_size)):
        idx = perm[i : i + batch_size]
        xb, yb = x[idx], y[idx]
        for call in stages["transform_batch"]:
            xb, yb = call(xb, yb, gen)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        for call in stages["extra_loss"]:
            extra = call(model)
            if extra is not None:
                loss = loss + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for call in stages["after_backward"]:
            call(model)
        opt.step()
        for call in stages["after_step"]:
            call(model)
        history.steps += 1
        loss_sum += loss.detach() * len(yb)
        correct += (out.detach().argmax(1) == yb).sum()
        if step % check_every == 0 and not bool(torch.isfinite(loss_sum)):
            history.diverged = True
            break
    return float(loss_sum) / n, int(correct) / n  # one sync per epoch, not per step


def fit(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    optimizer: str | torch.optim.Optimizer = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    hooks: Sequence[Hook] = (),
    progress: bool | None = None,
    channels_last: bool = True,
) -> History:
    """Train ``model`` on ``data.train``, evaluating on ``data.val`` each epoch and on ``data.test``
    and (in eval mode) ``data.train`` at the end. Mini-batches are drawn by a seeded permutation of
    preloaded tensors (no DataLoader).

    Args:
        model: any classifier; it trains on the device its parameters are on (CPU or CUDA).
        data: a :class:`~cnnlab.data.Dataset`.
        epochs: passes over the training split.
        lr: learning rate.
        batch_size: mini-batch size (the last, smaller batch of an epoch is kept).
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"``, or a ready optimizer over ``model``'s
            parameters (then ``lr``/``momentum``/``weight_decay`` are only validated).
        momentum: SGD momentum.
        weight_decay: the optimizer's weight decay (coupled for SGD/Adam, decoupled for AdamW).
        seed: seeds batch order and every random op inside the loop (dropout, augmentation);
            the caller's global RNG state is restored afterwards.
        hooks: objects implementing parts of :class:`Hook`.
        progress: show a ``tqdm`` bar over epochs; ``None`` follows CNNLAB_PROGRESS.
        channels_last: store the model and the images in the NHWC memory format (same math;
            on CPUs, PyTorch's convolutions are 1.1-3x faster in it, see the performance
            chapter). ``False`` leaves both as they are.
    Returns:
        A :class:`History`. A run whose loss becomes NaN or infinite stops at once and is
        returned with ``diverged=True``; it does not raise.
    """
    _check_args(epochs, lr, batch_size, momentum, weight_decay)
    device = next(model.parameters()).device
    fmt = torch.channels_last if channels_last else torch.preserve_format

    def prepare(split: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = split
        if channels_last and x.dim() == 4:
            x = x.to(device, memory_format=fmt)  # (N, C, H, W) shape, NHWC strides
        return x.to(device), y.to(device)

    if channels_last:
        model.to(memory_format=fmt)
    x_train, y_train = prepare(data.train)
    x_val, y_val = prepare(data.val)
    if isinstance(optimizer, str):
        opt = make_optimizer(
            model.parameters(), optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    else:
        opt = optimizer
    history = History()
    gen = torch.Generator().manual_seed(seed)  # batch order and hook randomness, on the CPU
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    stage = hook_stages(hooks)
    check_every = 1 if device.type == "cpu" else 25  # a NaN check syncs a GPU: do it less often
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # dropout masks etc., inside the forked (restored) RNG
        for call in stage["on_fit_start"]:
            call(model, opt)
        bar = tqdm(range(epochs), desc="epochs", leave=False,
                   disable=not progress_enabled(progress))
        for _ in bar:
            start = time.perf_counter()
            train_loss, train_acc = train_epoch(
                model, opt, x_train, y_train, batch_size=batch_size, gen=gen, stages=stage,
                history=history, check_every=check_every)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            history.epoch_time.append(time.perf_counter() - start)
            history.train_loss.append(train_loss)
            history.train_acc.append(train_acc)
            if history.diverged or not math.isfinite(train_loss):
                history.diverged = True
                history.val_loss.append(float("nan"))
                history.val_acc.append(float("nan"))
                break
            val_loss, val_acc = evaluate(model, x_val, y_val)
            history.val_loss.append(val_loss)
            history.val_acc.append(val_acc)
            bar.set_postfix(loss=f"{train_loss:.3f}", val_acc=f"{val_acc:.3f}")
            # every hook sees the epoch end, even once one of them has asked to stop
            stop = [call(model, history) for call in stage["on_epoch_end"]]
            if any(stop):
                history.stopped_early = len(history.train_loss) < epochs
                break
        bar.close()
        for call in stage["on_fit_end"]:
            call(model, history)
    history.test_loss, history.test_acc = evaluate(model, *prepare(data.test))
    _, history.train_eval_acc = evaluate(model, x_train, y_train)
    if not history.diverged:
        _, history.final_val_acc = evaluate(model, x_val, y_val)
    return history
