"""One training run, described completely: :class:`RunConfig` (a frozen dataclass).

Every run the book trains is a ``RunConfig`` and a seed; the run cache
(:mod:`cnnlab.cache`) is keyed on both, and :func:`cnnlab.experiments.run` trains them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LR_SCHEDULES", "RunConfig", "Row", "Runner"]

LR_SCHEDULES = ("constant", "cosine")  # RunConfig.lr_schedule's values (cnnlab.train.CosineLR)

Row = dict[str, Any]  # one run's results (JSON-ready)
Runner = Callable[["RunConfig", int], Row]  # trains one (config, seed)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one training run (apart from the seed)."""

    dataset: str = "digits"  # a name of cnnlab.data.DATASETS
    train_size: int | None = None  # stratified training subset; None = the whole training split
    val_size: int | None = None  # validation images held out (None: 10% of the files, <= 2,000)
    width: int = 16  # channels of the first convolution (the second has twice as many)
    batch_norm: bool = False  # BatchNorm2d after each convolution
    dropout: float = 0.0  # dropout rate before the fully connected layers
    epochs: int = 5  # passes over the training split
    lr: float = 0.05  # learning rate
    batch_size: int = 64  # mini-batch size
    optimizer: str = "sgd"  # "sgd" (momentum), "adam" or "adamw"
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 0.0  # the optimizer's weight decay, on the weights only (not biases/BN)
    l1: float = 0.0  # lambda of an L1 penalty added to the loss (0 = off)
    l2: float = 0.0  # lambda of an L2 penalty added to the loss (0 = off)
    clip_weights: float | None = None  # clamp every weight to [-r, r] after each step (None = off)
    clip_grad_norm: float | None = None  # clip the total gradient norm after backward (None = off)
    augment: bool = False  # random shifts (10% of the side) and rotations (10 degrees) per batch
    early_stopping: int | None = None  # patience in epochs; restores the best weights (None = off)
    # share of the training labels replaced by a random class (validation and test stay clean)
    label_noise: float = 0.0
    # the learning rate over the epochs: "constant", or "cosine" (from lr down along half a cosine)
    lr_schedule: str = "constant"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        for name in ("l1", "l2", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"Invalid {name} value: {getattr(self, name)} (must be >= 0)")
        for name in ("clip_weights", "clip_grad_norm"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Invalid {name} value: {value} (must be > 0, or None for off)")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"Invalid label_noise value: {self.label_noise} (must be in [0, 1))")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Invalid dropout value: {self.dropout} (must be in [0, 1))")
        if not self.lr > 0:
            raise ValueError(f"Invalid learning rate: {self.lr} (must be > 0)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"Invalid lr_schedule value: {self.lr_schedule!r} (must be one of "
                             f"{', '.join(map(repr, LR_SCHEDULES))})")
        if not isinstance(self.augment, bool):
            raise ValueError(f"Invalid augment value: {self.augment!r} (must be True or False)")
        if self.val_size is not None and (isinstance(self.val_size, bool)
                                          or not isinstance(self.val_size, int)
                                          or self.val_size < 1):
            raise ValueError(f"Invalid val_size value: {self.val_size!r} (must be a positive int, "
                             "or None for the dataset's default)")
        patience = self.early_stopping
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 1):
            raise ValueError(f"Invalid early_stopping value: {patience!r} (must be an int >= 1 "
                             "epochs of patience, or None for off)")
