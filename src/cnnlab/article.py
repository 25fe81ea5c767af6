"""The source article's code (section 4), made just runnable enough to show what it does.

Everything here is *wrong on purpose*: it is the article's code with the smallest changes that let
it run, each marked ``# was: <the original line>``. Chapters use it to show, next to the correct
technique from :mod:`cnnlab.techniques`, what goes wrong:

* :class:`ArticleWeightClip` (4.1) never takes a gradient step, and clamps the weights only when the
  *gradient* norm exceeds ``max_norm``: with small gradients, weights stay unclipped.
* :class:`ArticleL2Regularization` (4.2) shrinks the weights by ``wd * ||w|| / ||grad|| * w``,
  which is not the L2 gradient ``2 * lam * w``; a zero gradient turns the weights into NaN.
* :class:`ArticleDropoutOptimizer` (4.4) overwrites the *weights* with ``F.dropout(weights)`` at
  every step: each step zeroes half of the remaining weights for good and doubles the others.
* :class:`CNN` is the article's network with the imports fixed and the flatten size computed.

:data:`LISTINGS` holds the five listings verbatim and :func:`run_listing` executes one and returns
the exception it raises, so a chapter can show the printed code failing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
import torch.nn as nn  # noqa: PLR0402 -- the article's imports, as printed
import torch.nn.functional as F  # was: (missing) -- every listing uses F without importing it
import torch.optim as optim  # noqa: PLR0402

__all__ = [
    "CNN",
    "LISTINGS",
    "LISTING_BUGS",
    "ArticleDropoutOptimizer",
    "ArticleL2Regularization",
    "ArticleWeightClip",
    "ListingBug",
    "build_article_cnn",
    "listing_failures",
    "run_listing",
    "split_listing",
]


# 定义一个简单的卷积神经网络 (listings 4.1, 4.2, 4.4, 4.5)
class CNN(nn.Module):
    """The article's network: conv3x3(32) -> ReLU -> pool -> conv3x3(64) -> ReLU -> pool -> FC(128)
    -> ReLU -> FC.

    The article hard-codes 3 input channels, 10 classes and a flatten size of ``64 * 16 * 16``.
    Two 2x2 max-pools shrink a 32x32 image to 8x8, so the right size is ``64 * 8 * 8``; here it is
    ``64 * (H // 4) * (W // 4)``, so the network runs on 8x8 digits (``in_channels=1,
    input_size=8``), 28x28 Fashion-MNIST and 32x32 CIFAR-10 alike. (As printed,
    ``x.view(-1, 64 * 16 * 16)`` raises for most batch sizes, and for a batch of ``4k`` 32x32 images
    it silently packs four images into each row and returns ``k`` predictions.) Nothing else is
    changed (no batch norm, no dropout); for a configurable, corrected version use
    :class:`cnnlab.models.SmallCNN`.

    Args:
        in_channels: input channels (article: 3).
        num_classes: outputs (article: 10).
        input_size: ``H`` of square inputs or ``(H, W)`` (article: 32, implicitly).
    """

    # was: def __init__(self):
    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, input_size: int | tuple[int, int] = 32
    ) -> None:
        super(CNN, self).__init__()  # noqa: UP008 -- as printed
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        if h < 4 or w < 4:
            raise ValueError(f"Invalid input_size: {input_size!r} (two 2x2 pools need >= 4x4)")
        self.flat_features = 64 * (h // 4) * (w // 4)  # 32x32 -> 16x16 -> 8x8: 64 * 8 * 8
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)  # was: nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(self.flat_features, 128)  # was: nn.Linear(64 * 16 * 16, 128)
        self.fc2 = nn.Linear(128, num_classes)  # was: nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))  # (B, 32, H, W)
        x = F.max_pool2d(x, 2, 2)  # (B, 32, H/2, W/2)
        x = F.relu(self.conv2(x))  # (B, 64, H/2, W/2)
        x = F.max_pool2d(x, 2, 2)  # (B, 64, H/4, W/4)
        # was: x = x.view(-1, 64 * 16 * 16) -- the wrong size, and .view fails on channels_last
        x = torch.flatten(x, 1)  # (B, 64 * H/4 * W/4)
        x = F.relu(self.fc1(x))  # (B, 128)
        x = self.fc2(x)  # (B, num_classes)
        return x


def build_article_cnn(
    input_shape: tuple[int, int, int], num_classes: int, *, seed: int = 0
) -> CNN:
    """The article's :class:`CNN` for images of ``input_shape = (C, H, W)``, with seeded weights.

    The seed is applied inside ``torch.random.fork_rng``, so the caller's global RNG is untouched.
    """
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CNN(c, num_classes, (h, w))


# 定义一个权重裁剪优化器 (listing 4.1)
class ArticleWeightClip(optim.Optimizer):
    """The article's ``WeightClip`` "optimizer", runnable. Do not use it: it is the bug on show.

    ``step()`` clamps a parameter to ``[-max_norm, max_norm]`` only when the norm of its
    *gradient* exceeds ``max_norm``, and never applies the gradient itself, so the model does not
    learn. With a closure, it adds ``sum(grad * w)`` to the returned loss (the article's
    ``torch.dot``, which fails on matrices).
    """

    def __init__(self, params: Iterable[Any], max_norm: float = 1.0) -> None:
        # was: super(WeightClip, self).__init__(params)
        super().__init__(params, {"max_norm": max_norm})
        self.max_norm = max_norm

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            loss = closure()

        for param_group in self.param_groups:
            for p in param_group['params']:
                norm = torch.norm(p.grad)
                if norm > param_group['max_norm']:
                    p.data.clamp_(-param_group['max_norm'], param_group['max_norm'])
                if loss is not None:
                    # was: loss += torch.dot(p.grad, p.data)
                    loss += (p.grad * p.data).sum()
        return loss


# 定义一个L2正则化优化器 (listing 4.2)
class ArticleL2Regularization(optim.Optimizer):
    """The article's ``L2Regularization`` "optimizer", runnable. Do not use it.

    ``step()`` computes ``w <- w - lr * g - wd * (||w|| / ||g||) * w`` per parameter tensor. The
    decay term is scaled by ``||w|| / ||g||``: it is not the gradient of ``lam * ||w||^2``
    (``2 * lam * w``), it grows without bound as the gradient shrinks, and a zero gradient makes
    it ``0 / 0`` or ``x / 0`` (NaN or infinite weights).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.001, weight_decay: float = 0.001
                 ) -> None:
        # was: super(L2Regularization, self).__init__(params)
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self.lr = lr
        self.weight_decay = weight_decay

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            loss = closure()

        for param_group in self.param_groups:
            for p in param_group['params']:
                if param_group['weight_decay'] > 0:
                    # 添加L2正则项
                    grad_norm = torch.norm(p.grad)
                    param_norm = torch.norm(p.data)
                    p.data -= param_group['lr'] * p.grad + param_group['weight_decay'] * param_norm * p.data / grad_norm
                else:
                    # 普通梯度下降
                    p.data -= param_group['lr'] * p.grad

                if loss is not None:
                    # was: loss += torch.dot(p.grad, p.data)
                    loss += (p.grad * p.data).sum()
        return loss


# 定义一个Dropout优化器 (listing 4.4)
class ArticleDropoutOptimizer(optim.Optimizer):
    """The article's ``Dropout`` "optimizer", runnable. Do not use it.

    ``step()`` replaces every parameter by ``F.dropout(p, p=self.p)``: each step zeroes a fraction
    ``p`` of the weights *for good* and multiplies the survivors by ``1 / (1 - p)``; it never
    applies a gradient. After ``k`` steps a fraction ``1 - (1 - p)^k`` of the weights is zero.
    With ``train=False`` it raises ``UnboundLocalError`` (``loss`` is only assigned under
    ``if self.train``), as printed.
    """

    def __init__(self, params: Iterable[Any], p: float = 0.5, train: bool = True) -> None:
        # was: super(Dropout, self).__init__(params)
        super().__init__(params, {"p": p})
        self.p = p
        self.train = train

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        if self.train:
            loss = None
            if closure is not None:
                loss = closure()

            for param_group in self.param_groups:
                for p in param_group['params']:
                    if self.p > 0:
                        # 随机丢弃一定比例的神经元
                        p.data = F.dropout(p.data, p=self.p, training=self.train)
                    if loss is not None:
                        # was: loss += torch.dot(p.grad, p.data)
                        loss += (p.grad * p.data).sum()
        return loss  # unbound when train=False, as printed


# ----------------------------------------------------------------------------- the listings

_DRIVER_MARK = "# 创建一个"  # each listing's driver ("create an optimizer, train") starts here


def split_listing(name: str) -> tuple[str, str]:
    """Split a listing into its definitions (imports, classes) and its driver code.

    Args:
        name: a key of :data:`LISTINGS` (``"4.1"`` ... ``"4.5"``).
    Returns:
        ``(definitions, driver)``: the text before and from the line starting ``# 创建一个``
        ("create a ... optimizer"); concatenated they are the listing.
    """
    text = _listing(name)
    cut = text.index(_DRIVER_MARK)
    return text[:cut], text[cut:]


def _listing(name: str) -> str:
    if name not in LISTINGS:
        raise ValueError(f"Unknown listing: {name!r} (choose one of {', '.join(LISTINGS)})")
    return LISTINGS[name]


def run_listing(name: str, driver: str | None = None, **names: Any) -> BaseException | None:
    """Execute an article listing in a fresh namespace and return the exception it raises.

    The namespace holds ``torch`` and ``names`` (e.g. ``model=..., inputs=..., labels=...`` or
    ``F=torch.nn.functional`` to get past the first error). Output the listing prints is not
    captured.

    Args:
        name: a key of :data:`LISTINGS`.
        driver: code to run after the listing's definitions *instead of* its own driver (the
            lines that create the optimizer and train), e.g. ``"CNN()(torch.randn(2, 3, 32, 32))"``.
            ``None`` runs the listing exactly as printed.
        **names: extra globals for the namespace.
    Returns:
        The exception raised (with its traceback pointing into ``<article listing NAME>``), or
        ``None`` when the code runs through.

    Examples:
        As printed, every listing stops at ``NameError: name 'model' is not defined``;
        ``run_listing("4.3", "CNN()(torch.randn(2, 3, 32, 32))", F=torch.nn.functional)``
        returns ``AttributeError: module 'torch.nn.functional' has no attribute 'batch_norm2d'``.
    """
    definitions, own_driver = split_listing(name)
    code = definitions + (own_driver if driver is None else driver)
    namespace: dict[str, Any] = {"__name__": f"article_listing_{name.replace('.', '_')}",
                                 "torch": torch, **names}
    try:
        exec(compile(code, f"<article listing {name}>", "exec"), namespace)  # noqa: S102
    except Exception as exc:  # noqa: BLE001 - returning the exception is the point
        return exc
    return None


@dataclass(frozen=True)
class ListingBug:
    """One bug of the article's listings and a way to trigger it with :func:`run_listing`."""

    listing: str  # key of LISTINGS
    what: str  # the bug, in words
    driver: str | None  # code run after the listing's definitions (None: the listing as printed)
    with_F: bool  # supply torch.nn.functional as F (to get past the missing import)
    raises: str  # name of the exception the code raises

    def run(self) -> BaseException | None:
        """Run the listing as described and return the exception it raises."""
        names = {"F": F} if self.with_F else {}
        return run_listing(self.listing, self.driver, **names)


_FORWARD_32 = "CNN()(torch.randn(2, 3, 32, 32))\n"

# The article's torch.dot line, reached by giving WeightClip the `defaults` it lacks.
_DOT_DRIVER = """\
class WeightClipWithDefaults(WeightClip):
    def __init__(self, params, max_norm=1.0):
        optim.Optimizer.__init__(self, params, {"max_norm": max_norm})

net = nn.Linear(3, 2)
def closure():
    loss = net(torch.ones(1, 3)).sum()
    loss.backward()
    return loss
WeightClipWithDefaults(net.parameters(), max_norm=0.01).step(closure)
"""

# Every bug of the listings, in the order a reader fixing them one by one meets them.
LISTING_BUGS: tuple[ListingBug, ...] = (
    ListingBug("4.1", "`model`, `inputs` and `labels` are never defined", None, False,
               "NameError"),
    ListingBug("4.1", "`F` (torch.nn.functional) is never imported", _FORWARD_32, False,
               "NameError"),
    ListingBug("4.1", "`64 * 16 * 16` does not match 32x32 inputs after two 2x2 pools "
               "(64 * 8 * 8)", _FORWARD_32, True, "RuntimeError"),
    ListingBug("4.1", "`Optimizer.__init__` is called without its `defaults` argument",
               "WeightClip(nn.Linear(3, 2).parameters(), max_norm=0.01)\n", False, "TypeError"),
    ListingBug("4.1", "`torch.dot` only takes 1-D tensors, but conv and linear weights are not",
               _DOT_DRIVER, False, "RuntimeError"),
    ListingBug("4.2", "`Optimizer.__init__` is called without its `defaults` argument",
               "L2Regularization(nn.Linear(3, 2).parameters())\n", False, "TypeError"),
    ListingBug("4.3", "`F.batch_norm2d` does not exist", _FORWARD_32, True, "AttributeError"),
    ListingBug("4.4", "`super().__init()` is a typo for `super().__init__()`", "CNN()\n", False,
               "AttributeError"),
    ListingBug("4.4", "`Optimizer.__init__` is called without its `defaults` argument",
               "Dropout(nn.Linear(3, 2).parameters())\n", False, "TypeError"),
    ListingBug("4.5", "`super().__init()` is a typo for `super().__init__()`", "CNN()\n", False,
               "AttributeError"),
)


def listing_failures(name: str) -> list[tuple[str, BaseException | None]]:
    """What listing ``name`` raises as printed, then each of its bugs in :data:`LISTING_BUGS`:
    ``[("as printed", exc), (bug.what, exc), ...]``, in the order fixing them uncovers them."""
    failures = [("as printed", run_listing(name))]
    return failures + [(bug.what, bug.run()) for bug in LISTING_BUGS if bug.listing == name]


# The five listings of the article's section 4, verbatim (keys: "4.1" ... "4.5"): data, kept in
# article_listings.md beside this module (each "## 4.x" heading, then the listing in a fence).
_LISTING = re.compile(r"^## (4\.\d)\n\n````python\n(.*?)\n````$", re.S | re.M)
LISTINGS: dict[str, str] = {
    m.group(1): m.group(2) + "\n" for m in _LISTING.finditer(
        (resources.files("cnnlab") / "article_listings.md").read_text(encoding="utf8"))
}
