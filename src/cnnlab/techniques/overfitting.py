"""Early stopping and data augmentation (article section 6.4, "how to avoid overfitting").

The article lists four remedies: L1/L2 penalties (:mod:`~cnnlab.techniques.regularization`),
dropout (:mod:`~cnnlab.techniques.dropout`), early stopping and data augmentation "such as random
flips and crops". The last two live here, as :class:`~cnnlab.train.Hook` s for
:func:`~cnnlab.train.fit`:

* :class:`EarlyStopping` watches the validation loss after every epoch, stops training once it
  has not improved for ``patience`` epochs, and puts back the weights of the best epoch.
* :class:`Augmentation` replaces each training batch by randomly shifted and rotated copies
  (``torchvision.transforms.v2.functional.affine`` on the batch tensors, no DataLoader). Its
  randomness comes only from the ``generator`` that ``fit`` passes in, so a seeded run is
  reproducible.

Flips are *off* by default, on purpose: an augmentation must not change what the label means.
A mirrored 2 or 5 is not a digit (and a mirrored 5 looks like a 2), a 6 turned upside down is
a 9; for Fashion-MNIST a left-right flip keeps the class (a mirrored shoe is still a shoe), an
upside-down flip does not give a picture that occurs in the data.

:func:`memorized_at_least` reads memorizing off a training accuracy: with label noise, a network
that fits more of its training labels than are right has learned wrong ones by heart.
:func:`noisy_regime` is the book's one configuration where that happens: the regime in which the
chapters measure what the remedies do against memorizing.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from cnnlab.config import RunConfig
from cnnlab.train import History, Hook

__all__ = ["Augmentation", "EarlyStopping", "memorized_at_least", "noisy_regime", "random_affine"]

_MONITORS = ("val_loss", "val_acc")


class EarlyStopping(Hook):
    """Stop when the validation metric has not improved for ``patience`` epochs; restore the best.

    After each epoch ``fit`` calls :meth:`on_epoch_end`. An epoch *improves* when its metric beats
    the best so far by more than ``min_delta`` (lower ``val_loss`` or higher ``val_acc``); a
    NaN never improves. The weights (the ``state_dict``, buffers such as batch-norm statistics
    included) of the best epoch are copied; after ``patience`` epochs in a row without an
    improvement the hook asks ``fit`` to stop, and :meth:`on_fit_end` loads the best weights back
    (also when training ran to the end, or diverged). The test accuracy ``fit`` reports is then
    the best epoch's model, chosen on the validation split only.

    Args:
        patience: epochs without improvement to tolerate (``>= 1``).
        monitor: ``"val_loss"`` (default) or ``"val_acc"``.
        min_delta: the smallest change that counts as an improvement (``>= 0``).
        restore_best: load the best epoch's weights when training ends.

    Attributes:
        best_epoch: 1-based epoch of the best value (0 before the first epoch).
        best_value: the best value seen.
        stopped_epoch: the epoch after which the hook stopped training (0 if it never did).
    """

    def __init__(
        self,
        patience: int,
        *,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        restore_best: bool = True,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"Invalid patience value: {patience!r} (must be an int >= 1)")
        if monitor not in _MONITORS:
            raise ValueError(f"Invalid monitor value: {monitor!r} (choose one of {_MONITORS})")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"Invalid min_delta value: {min_delta!r} (must be >= 0)")
        self.patience = patience
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        self.best_value = math.inf if self.monitor == "val_loss" else -math.inf
        self.best_epoch = 0
        self.stopped_epoch = 0
        self.wait = 0  # epochs since the last improvement
        self.best_state: dict[str, Tensor] | None = None

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._reset()  # one hook object can serve several fits

    def _improved(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.monitor == "val_loss":
            return value < self.best_value - self.min_delta
        return value > self.best_value + self.min_delta

    def on_epoch_end(self, model: nn.Module, history: History) -> bool:
        value = float(getattr(history, self.monitor)[-1])
        epoch = len(getattr(history, self.monitor))
        if self._improved(value):
            self.best_value, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self.best_state = copy.deepcopy(model.state_dict())  # a copy, not a view
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_fit_end(self, model: nn.Module, history: History) -> None:
        if self.restore_best and self.best_state is not None:
            model.load_state_dict(self.best_state)

    def __repr__(self) -> str:
        return (f"EarlyStopping(patience={self.patience}, monitor={self.monitor!r}, "
                f"min_delta={self.min_delta})")


def memorized_at_least(train_acc: float, right: float) -> float:
    r"""The least share of the wrong training labels that a network with ``train_acc`` has fitted.

    With label noise (:func:`cnnlab.data.noisy_labels`) a share ``right`` of the training labels
    is the true class and the rest are wrong. Training accuracy against these labels counts the
    images fitted to a right label (at most ``right``) plus those fitted to a wrong one, so at
    least ``train_acc - right`` of the images are fitted to a wrong label, which no pattern of
    the data explains:

    .. math:: \text{memorized} \ge \max(0,\ a - r) \,/\, (1 - r),
       \qquad a = \text{train\_acc},\ r = \text{right}

    The bound is reached when every right label is fitted too.

    Args:
        train_acc: accuracy on the training split against its (noisy) labels, in [0, 1]; measure
            it in eval mode (``History.train_eval_acc``).
        right: the share of those labels that are the true class, in [0, 1).
    Returns:
        The bound, in [0, 1].
    """
    if not 0.0 <= train_acc <= 1.0:
        raise ValueError(f"Invalid train_acc value: {train_acc} (must be in [0, 1])")
    if not 0.0 <= right < 1.0:
        raise ValueError(f"Invalid right value: {right} (must be in [0, 1): some labels wrong)")
    return max(0.0, train_acc - right) / (1.0 - right)


def noisy_regime(dataset: str, val_size: int | None = None) -> RunConfig:
    """The book's label-noise regime: a run in which the network memorizes wrong labels.

    40% of the labels of 500 training images are replaced by a class drawn at random (one in ten
    draws gives the right class back, so about 64% stay right; validation and test labels stay
    clean). The network (width 16: 16 and 32 channels, ~207,000 parameters on 28x28 images, far
    more than 500 images pin down) is trained for 30 epochs with SGD at the book's learning rate
    0.05 (momentum 0.9, batches of 64), long enough that without a remedy it fits nearly every
    training label, wrong ones included: its eval-mode training accuracy ends far above the share
    of right labels (see :func:`memorized_at_least`), and its validation accuracy peaks early and
    then falls. That is the regime the article's remedies against overfitting are meant for, and
    it is cheap: a few seconds a run on one CPU thread (3.6 s measured for Fashion-MNIST on the
    book's 2-core machine, whose speed varies about 2x), so a chapter can afford five seeds of
    several configurations.

    The dropout, regularization and choosing chapters all start from this configuration, so
    their runs that share a setting (the runs without any technique, above all) are the same
    runs, trained once through the run cache. Changing a value here retrains all of them and
    changes every number those chapters print.

    Args:
        dataset: a name of :data:`cnnlab.data.DATASETS` (``"fashion_mnist"`` in the book).
        val_size: validation images to hold out (the chapters hold out 500 on Fashion-MNIST);
            ``None`` keeps the dataset's default.
    Returns:
        The :class:`~cnnlab.config.RunConfig` (validated), with every technique off.
    """
    config = RunConfig(dataset, train_size=500, val_size=val_size, width=16, epochs=30,
                       lr=0.05, label_noise=0.4)
    config.validate()
    return config


def _uniform(n: int, bound: float, generator: torch.Generator) -> Tensor:
    """``n`` draws from U(-bound, bound) (float64, on the CPU: the generator's device)."""
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * bound


def _check_affine_args(translate: float, degrees: float, groups: int | None) -> None:
    if not (isinstance(translate, (int, float)) and 0 <= translate < 1):
        raise ValueError(f"Invalid translate value: {translate!r} (must be in [0, 1))")
    if not (isinstance(degrees, (int, float)) and 0 <= degrees < math.inf):
        raise ValueError(f"Invalid degrees value: {degrees!r} (must be >= 0)")
    if groups is not None and (isinstance(groups, bool) or not isinstance(groups, int)
                               or groups < 1):
        raise ValueError(f"Invalid groups value: {groups!r} (must be an int >= 1 or None)")


def random_affine(
    x: Tensor,
    generator: torch.Generator,
    *,
    translate: float = 0.1,
    degrees: float = 10.0,
    hflip: bool = False,
    groups: int | None = 8,
) -> Tensor:
    """Randomly shifted, rotated (and optionally mirrored) copies of a batch of images.

    Each image is moved by ``(dx, dy)`` with ``dx ~ U(-translate * W, translate * W)`` pixels
    (likewise ``dy`` with ``H``) and rotated by ``angle ~ U(-degrees, degrees)`` around its centre
    with ``torchvision.transforms.v2.functional.affine`` (bilinear). Pixels that come in from
    outside the image get the image's background value, its minimum (after normalization a
    black pixel is not 0). With ``hflip``, each image is mirrored left-right with probability 1/2.

    ``affine`` applies one transform per call, so the batch is cut into ``groups`` chunks and each
    chunk gets its own draw (``groups=None`` draws per image: exact, but one call per image costs
    ~0.2 ms on a CPU; 8 chunks of a 64-image batch keep the cost at ~1.5 ms per batch while an
    epoch still sees hundreds of different transforms).

    Args:
        x: ``(N, C, H, W)`` float images.
        generator: the only source of randomness (a CPU ``torch.Generator``).
        translate: largest shift as a fraction of the image side, in ``[0, 1)``.
        degrees: largest rotation in degrees (``>= 0``).
        hflip: also mirror left-right at random (wrong for digits, see the module docstring).
        groups: chunks that share one draw; ``None`` for one draw per image.
    Returns:
        A new tensor of ``x``'s shape, dtype and device.
    """
    # torchvision's transforms take ~0.5 s to import: only the runs that augment pay for them.
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    _check_affine_args(translate, degrees, groups)
    if x.dim() != 4:
        raise ValueError(f"Invalid batch shape: {tuple(x.shape)} (expected (N, C, H, W))")
    n, _, h, w = x.shape
    background = x.amin(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    chunks = (x - background).chunk(n if groups is None else min(groups, n))  # background -> 0
    k = len(chunks)
    dx, dy = _uniform(k, translate * w, generator), _uniform(k, translate * h, generator)
    angle = _uniform(k, degrees, generator)
    flip = torch.rand(k, generator=generator) < 0.5
    out = []
    for i, part in enumerate(chunks):  # part: (n_i, C, H, W), one draw each
        if hflip and bool(flip[i]):
            part = TF.horizontal_flip(part)
        out.append(TF.affine(
            part, angle=float(angle[i]), translate=[float(dx[i]), float(dy[i])], scale=1.0,
            shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=0.0,
        ))  # fill 0 = the background, shifted to 0 above
    return torch.cat(out) + background


class Augmentation(Hook):
    """Data augmentation as a :func:`~cnnlab.train.fit` hook: :func:`random_affine` on every
    training batch (evaluation batches are never transformed). Labels are kept.

    Args:
        translate: largest shift as a fraction of the image side (default 0.1: ±2.8 pixels
            on 28x28 Fashion-MNIST, ±0.8 on 8x8 digits).
        degrees: largest rotation in degrees (default 10).
        hflip: mirror left-right at random as well (off by default: wrong for digits).
        groups: chunks of a batch that share one random draw (``None``: one per image).
    """

    def __init__(
        self,
        translate: float = 0.1,
        degrees: float = 10.0,
        *,
        hflip: bool = False,
        groups: int | None = 8,
    ) -> None:
        _check_affine_args(translate, degrees, groups)  # fail now, not in the middle of fit
        self.translate = translate
        self.degrees = degrees
        self.hflip = hflip
        self.groups = groups

    def transform_batch(
        self, x: Tensor, y: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        return random_affine(x, generator, translate=self.translate, degrees=self.degrees,
                             hflip=self.hflip, groups=self.groups), y

    def __repr__(self) -> str:
        return (f"Augmentation(translate={self.translate}, degrees={self.degrees}, "
                f"hflip={self.hflip}, groups={self.groups})")
