"""L1 / L2 regularization and weight decay (article sections 2.2 / 3.2 / 4.2).

The article's formulas are right (section 3.2):

.. math::

    L_{L1} = L + \\lambda \\|w\\|_1, \\qquad L_{L2} = L + \\lambda \\|w\\|_2^2

Its "L2 optimizer" (section 4.2) is not L2 (see :mod:`cnnlab.article`). Facts this module makes
testable:

* The gradient of ``lam * ||w||^2`` is ``2 * lam * w``, so plain SGD with :class:`L2` ``(lam)``
  takes exactly the steps of ``torch.optim.SGD(weight_decay=2 * lam)`` (with or without momentum).
* Adam with an L2 penalty is *not* AdamW: Adam divides the penalty's gradient by the running
  gradient scale, AdamW shrinks the weights directly ("decoupled weight decay").
* By convention only weights are penalized: biases and normalization parameters are left alone
  (:func:`penalized_parameters`, :func:`decay_param_groups`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from cnnlab.train import Hook

__all__ = [
    "L1",
    "L2",
    "decay_param_groups",
    "l1_penalty",
    "l2_penalty",
    "penalized_parameters",
    "weight_stats",
]

# Modules whose parameters are a scale and a shift, never penalized by default.
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _check_lambda(lam: float) -> None:
    if (
        isinstance(lam, bool)
        or not isinstance(lam, (int, float))
        or not math.isfinite(lam)
        or lam < 0
    ):
        raise ValueError(f"Invalid lambda: {lam!r} (must be >= 0)")


def _is_norm_module(module: nn.Module) -> bool:
    # our from-scratch BatchNorm2d is not an nn.BatchNorm subclass; recognize it by its buffers
    return isinstance(module, _NORM_TYPES) or (
        hasattr(module, "running_mean") and hasattr(module, "running_var")
    )


def _split_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights, others): weights are parameters with >= 2 dims outside normalization layers."""
    weights: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    seen: set[int] = set()
    for sub in module.modules():
        norm = _is_norm_module(sub)
        for p in sub.parameters(recurse=False):
            if id(p) in seen:  # a shared parameter counts once
                continue
            seen.add(id(p))
            (others if norm or p.ndim < 2 else weights).append(p)
    return weights, others


def penalized_parameters(module: nn.Module, *, include_bias: bool = False) -> list[nn.Parameter]:
    """The parameters the penalties act on.

    Args:
        module: any model.
        include_bias: also return biases and normalization scales/shifts (all parameters).
    Returns:
        Weight tensors (``ndim >= 2``: convolution kernels, linear matrices) outside normalization
        layers, each once; with ``include_bias=True``, every parameter once.
    """
    weights, others = _split_parameters(module)
    return weights + others if include_bias else weights


def l1_penalty(module: nn.Module, *, include_bias: bool = False) -> Tensor:
    """The L1 norm of the weights, differentiable.

    .. math:: \\Omega_1(w) = \\|w\\|_1 = \\sum_i |w_i|, \\qquad
              \\partial \\Omega_1 / \\partial w_i = \\operatorname{sign}(w_i)

    Args:
        module: the model.
        include_bias: also penalize biases and normalization parameters.
    Returns:
        A 0-dim tensor (zero when there is nothing to penalize).
    """
    params = penalized_parameters(module, include_bias=include_bias)
    if not params:
        return torch.zeros(())
    return torch.stack([p.abs().sum() for p in params]).sum()


def l2_penalty(module: nn.Module, *, include_bias: bool = False) -> Tensor:
    """The *squared* L2 norm of the weights, differentiable.

    .. math:: \\Omega_2(w) = \\|w\\|_2^2 = \\sum_i w_i^2, \\qquad
              \\partial \\Omega_2 / \\partial w_i = 2 w_i

    Args:
        module: the model.
        include_bias: also penalize biases and normalization parameters.
    Returns:
        A 0-dim tensor (zero when there is nothing to penalize).
    """
    params = penalized_parameters(module, include_bias=include_bias)
    if not params:
        return torch.zeros(())
    return torch.stack([p.pow(2).sum() for p in params]).sum()


class _Penalty(Hook):
    """A :func:`~cnnlab.train.fit` hook adding ``lam * penalty(model)`` to the training loss.

    Args:
        lam: the regularization strength, ``>= 0``.
        include_bias: also penalize biases and normalization parameters.
    """

    penalty = staticmethod(l2_penalty)  # set by each subclass

    def __init__(self, lam: float, *, include_bias: bool = False) -> None:
        _check_lambda(lam)
        self.lam = float(lam)
        self.include_bias = include_bias

    def extra_loss(self, model: nn.Module) -> Tensor | None:
        if self.lam == 0:
            return None
        return self.lam * self.penalty(model, include_bias=self.include_bias)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lam={self.lam}, include_bias={self.include_bias})"


class L1(_Penalty):
    """A :func:`~cnnlab.train.fit` hook adding ``lam * ||w||_1`` to the training loss.

    Args:
        lam: the regularization strength, ``>= 0``.
        include_bias: also penalize biases and normalization parameters.
    """

    penalty = staticmethod(l1_penalty)


class L2(_Penalty):
    """A :func:`~cnnlab.train.fit` hook adding ``lam * ||w||_2^2`` to the training loss.

    Its gradient is ``2 * lam * w``: with plain SGD it equals ``weight_decay = 2 * lam``.

    Args:
        lam: the regularization strength, ``>= 0``.
        include_bias: also penalize biases and normalization parameters.
    """

    penalty = staticmethod(l2_penalty)


def decay_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups that decay the weights only (not biases or norm parameters).

    Use as ``torch.optim.SGD(decay_param_groups(model, 5e-4), lr=0.1)``. SGD's ``weight_decay``
    adds ``weight_decay * w`` to the gradient, i.e. it is an L2 penalty with
    ``lam = weight_decay / 2``; AdamW's is decoupled.

    Args:
        model: the model.
        weight_decay: decay coefficient for the weights, ``>= 0``.
    Returns:
        Two groups, ``{"params": weights, "weight_decay": weight_decay}`` and
        ``{"params": others, "weight_decay": 0.0}``, empty groups left out.
    """
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, (int, float))
        or not math.isfinite(weight_decay)
        or weight_decay < 0
    ):
        raise ValueError(f"Invalid weight_decay value: {weight_decay!r} (must be >= 0)")
    weights, others = _split_parameters(model)
    groups = [
        {"params": weights, "weight_decay": float(weight_decay)},
        {"params": others, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def weight_stats(
    module: nn.Module, *, include_bias: bool = False, threshold: float = 1e-3
) -> dict[str, float | int]:
    """Summary statistics of the weights the penalties act on, as JSON-ready floats.

    Args:
        module: the model.
        include_bias: include biases and normalization parameters (as the penalties would).
        threshold: a weight with ``|w| < threshold`` counts as near zero.
    Returns:
        A dict: ``l1`` (the sum of ``|w|``), ``l2`` (the sum of ``w^2``, the L2 penalty),
        ``l2_norm`` (its square root), ``abs_max`` (the largest ``|w|``), ``frac_near_zero``
        (the share of ``|w| < threshold``) and ``count`` (the number of weights, an int); all
        zeros when there are no weights.
    """
    if not threshold > 0:
        raise ValueError(f"Invalid threshold: {threshold!r} (must be > 0)")
    params = penalized_parameters(module, include_bias=include_bias)
    if not params:
        zero = ("l1", "l2", "l2_norm", "abs_max", "frac_near_zero")
        return {**dict.fromkeys(zero, 0.0), "count": 0}
    flat = torch.cat([p.detach().flatten().double() for p in params])  # (count,)
    absw = flat.abs()
    l2 = float(flat.pow(2).sum())
    return {
        "l1": float(absw.sum()),
        "l2": l2,
        "l2_norm": math.sqrt(l2),
        "abs_max": float(absw.max()),
        "frac_near_zero": float((absw < threshold).double().mean()),
        "count": int(flat.numel()),
    }
