"""Dropout from scratch (article sections 2.4 / 3.4 / 4.4).

The article's "Dropout optimizer" overwrites the *weights* with ``F.dropout(weights)`` at every
step, which destroys the model (see :mod:`cnnlab.article`). Dropout masks *activations*, during
training only. With inverted dropout (what PyTorch does) the kept units are scaled by
``1 / (1 - p)`` so that the expected activation is unchanged and evaluation needs no rescaling:

.. math::

    y = \\frac{m \\odot x}{1 - p}, \\quad m_i \\sim \\operatorname{Bernoulli}(1 - p), \\qquad
    \\mathbb{E}[y] = x

:func:`dropout` draws one mask entry per element, :func:`dropout2d` one per (sample, channel), which
suits convolutional feature maps, whose neighbouring pixels are strongly correlated.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Dropout", "Dropout2d", "dropout", "dropout2d"]


def _check_p(p: float) -> None:
    if (
        isinstance(p, bool)
        or not isinstance(p, (int, float))
        or not math.isfinite(p)
        or not 0.0 <= p < 1.0
    ):
        raise ValueError(f"Invalid dropout probability p: {p!r} (must be in [0, 1))")


def _masked(x: Tensor, p: float, mask_shape: tuple[int, ...], generator: torch.Generator | None
            ) -> Tensor:
    """``x * m / (1 - p)`` with ``m ~ Bernoulli(1 - p)`` of ``mask_shape`` (broadcast over x)."""
    device = generator.device if generator is not None else x.device
    noise = torch.empty(mask_shape, dtype=x.dtype, device=device)
    noise.bernoulli_(1 - p, generator=generator)  # 1 = keep, with probability 1 - p
    noise.div_(1 - p)  # inverted dropout: scale the kept units now, not at evaluation
    return x * noise.to(x.device)


def dropout(
    x: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    Args:
        x: any tensor.
        p: drop probability, in ``[0, 1)``.
        training: apply dropout; when False, return ``x`` itself (identity).
        generator: source of randomness (default: the global one). With the same seed the mask
            is the same as ``torch.nn.functional.dropout`` draws after ``torch.manual_seed``.
    Returns:
        A tensor shaped like ``x``; gradients flow through the kept elements, scaled by ``1/(1-p)``.
    """
    _check_p(p)
    if not training or p == 0:
        return x
    return _masked(x, p, tuple(x.shape), generator)


def dropout2d(
    x: Tensor, p: float, *, training: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Channel dropout: zero whole feature maps with probability ``p``, scale the rest by 1/(1-p).

    Args:
        x: ``(N, C, H, W)``.
        p: drop probability per (sample, channel), in ``[0, 1)``.
        training: apply dropout; when False, return ``x`` itself (identity).
        generator: source of randomness (default: the global one).
    Returns:
        A tensor shaped like ``x`` in which each ``x[n, c]`` is either all zero or scaled.
    """
    _check_p(p)
    if x.ndim != 4:
        raise ValueError(f"Expected 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
    if not training or p == 0:
        return x
    n, c = x.shape[:2]
    return _masked(x, p, (n, c, 1, 1), generator)  # mask (N, C, 1, 1), broadcast over H, W


class Dropout(nn.Module):
    """Inverted dropout as a module; the identity in eval mode.

    Args:
        p: drop probability, in ``[0, 1)``.
        generator: optional source of randomness (default: the global RNG, which
            :func:`~cnnlab.train.fit` seeds).
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        _check_p(p)
        super().__init__()
        self.p = float(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Dropout2d(nn.Module):
    """Channel dropout for ``(N, C, H, W)`` feature maps; the identity in eval mode.

    Args:
        p: drop probability per channel, in ``[0, 1)``.
        generator: optional source of randomness (default: the global RNG).
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        _check_p(p)
        super().__init__()
        self.p = float(p)
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return dropout2d(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}"
