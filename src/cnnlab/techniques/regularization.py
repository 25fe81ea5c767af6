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
* L1's subgradient does not make weights exactly zero; its proximal step (soft thresholding,
  :func:`soft_threshold`, the :class:`ProximalL1` hook) does. How many weights a penalty makes
  small is measured relative to each layer's initial scale (:func:`init_std`,
  :func:`weight_stats`), because a fixed threshold cannot tell zeros from strong shrinkage.
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
    "ProximalL1",
    "decay_param_groups",
    "init_std",
    "l1_penalty",
    "l2_penalty",
    "penalized_parameters",
    "soft_threshold",
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


def soft_threshold(w: Tensor, amount: float) -> Tensor:
    """The proximal operator of ``amount * |w|``: every entry moves ``amount`` towards zero and
    stops there.

    .. math:: \\operatorname{prox}_{a|\\cdot|}(w) = \\operatorname{sign}(w)\\,\\max(|w| - a, 0)

    Entries with ``|w| <= amount`` become exactly zero, the others shrink by ``amount``.

    Args:
        w: any tensor.
        amount: the threshold ``a``, ``>= 0``.
    Returns:
        A new tensor of ``w``'s shape.
    """
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) \
            or not math.isfinite(amount) or amount < 0:
        raise ValueError(f"Invalid amount: {amount!r} (must be >= 0)")
    return torch.sign(w) * torch.clamp(w.abs() - amount, min=0)


class ProximalL1(Hook):
    """A :func:`~cnnlab.train.fit` hook: the proximal step of an L1 penalty ``lam * ||w||_1``.

    After every optimizer step each penalized weight is soft-thresholded by ``lr * lam``
    (:func:`soft_threshold`): the proximal gradient method for the L1 penalty (ISTA). Unlike
    :class:`L1`, whose subgradient ``lam * sign(w)`` overshoots zero and leaves the weight
    oscillating around it, the proximal step sets weights exactly to zero.

    With momentum ``mu`` the optimizer applies a constant gradient about ``1 / (1 - mu)`` times
    over, so the subgradient of :class:`L1` pulls about ``lr * lam / (1 - mu)`` per step; the
    proximal step acts outside the momentum. Pass ``lr / (1 - mu)`` as ``lr`` to match the pull
    of :class:`L1` at the same ``lam``.

    Args:
        lam: the regularization strength, ``>= 0``.
        lr: the step size the threshold is scaled by, ``> 0``.
        include_bias: also threshold biases and normalization parameters.
    """

    def __init__(self, lam: float, lr: float, *, include_bias: bool = False) -> None:
        _check_lambda(lam)
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 \
                or not math.isfinite(lr):
            raise ValueError(f"Invalid lr: {lr!r} (must be > 0)")
        self.lam, self.lr = float(lam), float(lr)
        self.include_bias = include_bias

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        amount = self.lr * self.lam
        for p in penalized_parameters(model, include_bias=self.include_bias):
            p.copy_(soft_threshold(p, amount))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lam={self.lam}, lr={self.lr}, "
                f"include_bias={self.include_bias})")


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


def init_std(weight: Tensor) -> float:
    """The standard deviation PyTorch's default initialization gives a weight tensor.

    ``nn.Linear`` and ``nn.Conv*d`` draw their weights from ``U(-b, b)`` with
    ``b = 1 / sqrt(fan_in)`` (``kaiming_uniform_`` with ``a = sqrt(5)``), so the std is
    ``b / sqrt(3) = 1 / sqrt(3 * fan_in)``, with ``fan_in = weight[0].numel()`` (inputs times
    kernel size).

    Args:
        weight: a weight tensor with ``ndim >= 2`` (output units first).
    Returns:
        ``1 / sqrt(3 * fan_in)``.
    """
    if weight.ndim < 2:
        raise ValueError(f"Invalid weight: shape {tuple(weight.shape)} (need ndim >= 2)")
    return 1.0 / math.sqrt(3 * weight[0].numel())


@torch.no_grad()
def weight_stats(
    module: nn.Module, *, include_bias: bool = False, threshold: float = 1e-3,
    relative_threshold: float = 0.01,
) -> dict[str, float | int]:
    """Summary statistics of the weights the penalties act on, as JSON-ready floats.

    A fixed threshold (``frac_near_zero``) cannot tell sparsity from shrinkage: with enough
    decay every weight the data does not use falls below it. ``frac_below_init`` measures
    against each layer's own initial scale instead, and ``frac_zero`` counts exact zeros (which
    only a proximal step or pruning produces).

    Args:
        module: the model.
        include_bias: include biases and normalization parameters (as the penalties would).
        threshold: a weight with ``|w| < threshold`` counts as near zero.
        relative_threshold: a weight with ``|w| < relative_threshold * init_std(its tensor)``
            counts as below its initial scale (:func:`init_std`; tensors with ``ndim < 2``,
            which have no fan-in, are measured against ``threshold`` instead).
    Returns:
        A dict: ``l1`` (the sum of ``|w|``), ``l2`` (the sum of ``w^2``, the L2 penalty),
        ``l2_norm`` (its square root), ``abs_max`` (the largest ``|w|``), ``frac_near_zero``
        (the share of ``|w| < threshold``), ``frac_below_init`` (the share below
        ``relative_threshold`` of the layer's initial std), ``frac_zero`` (the share exactly 0)
        and ``count`` (the number of weights, an int); all zeros when there are no weights.
    """
    if not threshold > 0:
        raise ValueError(f"Invalid threshold: {threshold!r} (must be > 0)")
    if not relative_threshold > 0:
        raise ValueError(f"Invalid relative_threshold: {relative_threshold!r} (must be > 0)")
    params = penalized_parameters(module, include_bias=include_bias)
    if not params:
        zero = ("l1", "l2", "l2_norm", "abs_max", "frac_near_zero", "frac_below_init",
                "frac_zero")
        return {**dict.fromkeys(zero, 0.0), "count": 0}
    flat = torch.cat([p.detach().flatten().double() for p in params])  # (count,)
    absw = flat.abs()
    below = sum(int((p.detach().abs() < (relative_threshold * init_std(p) if p.ndim >= 2
                                         else threshold)).sum()) for p in params)
    l2 = float(flat.pow(2).sum())
    return {
        "l1": float(absw.sum()),
        "l2": l2,
        "l2_norm": math.sqrt(l2),
        "abs_max": float(absw.max()),
        "frac_near_zero": float((absw < threshold).double().mean()),
        "frac_below_init": below / flat.numel(),
        "frac_zero": float((flat == 0).double().mean()),
        "count": int(flat.numel()),
    }
