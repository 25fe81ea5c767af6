"""Weight clipping and gradient clipping (article sections 2.1 / 3.1 / 4.1).

The article mixes two different techniques. Its ``WeightClip`` clamps the weights only when the
*gradient* norm is large (see :mod:`cnnlab.article`). The two correct techniques are:

* **Weight clipping** (as in WGAN, ``r = 0.01``): after every optimizer step, clamp every weight to
  ``[-r, r]``. It constrains the *model*, not the optimization.
* **Gradient clipping**: after ``backward()`` and before the step, rescale the gradients so that
  their total norm is at most ``max_norm`` (or clamp each component to
  ``[-max_value, max_value]``). This is what tames exploding gradients.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from cnnlab.train import Hook

__all__ = ["GradientClipping", "WeightClipping", "clip_weights_", "grad_norm"]

Params = nn.Module | Tensor | Iterable[Tensor]


def _tensors(params: Params) -> list[Tensor]:
    """The tensors of a module (its parameters), of one tensor, or of an iterable of tensors."""
    if isinstance(params, nn.Module):
        return list(params.parameters())
    if isinstance(params, Tensor):
        return [params]
    return list(params)


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"Invalid {name}: {value!r} (must be > 0)")


def clip_weights_(params: Params, r: float) -> None:
    """Clamp every weight to ``[-r, r]`` in place (weight clipping, as in WGAN with ``r = 0.01``).

    .. math:: w \\leftarrow \\min(\\max(w, -r), r)

    Args:
        params: a module (all its parameters), a tensor, or an iterable of tensors.
        r: the clip range, ``r > 0``.
    Returns:
        None; the tensors are modified in place (outside autograd).
    """
    _check_positive("clip range r", r)
    with torch.no_grad():
        for p in _tensors(params):
            p.clamp_(-r, r)


def grad_norm(model: Params, norm_type: float = 2.0) -> float:
    """The total norm of all gradients, as if they were concatenated into one vector.

    .. math:: \\|g\\|_p = \\Big(\\sum_i \\|g_i\\|_p^p\\Big)^{1/p}

    This is the value ``torch.nn.utils.clip_grad_norm_`` returns (and compares with ``max_norm``).

    Args:
        model: a module, a tensor, or an iterable of tensors; tensors without ``.grad`` are skipped.
        norm_type: the ``p`` of the norm (``float("inf")`` for the largest absolute component).
    Returns:
        The norm as a Python float (``0.0`` when no tensor has a gradient).
    """
    if not (norm_type > 0):
        raise ValueError(f"Invalid norm_type: {norm_type!r} (must be > 0)")
    grads = [p.grad.detach() for p in _tensors(model) if p.grad is not None]
    if not grads:
        return 0.0
    per_tensor = torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads])  # (T,)
    return float(torch.linalg.vector_norm(per_tensor, norm_type))


class WeightClipping(Hook):
    """A :func:`~cnnlab.train.fit` hook that clamps all parameters to ``[-r, r]`` after each step.

    Args:
        r: the clip range, ``r > 0`` (WGAN uses 0.01).
    """

    def __init__(self, r: float) -> None:
        _check_positive("clip range r", r)
        self.r = float(r)

    def after_step(self, model: nn.Module) -> None:
        clip_weights_(model, self.r)

    def __repr__(self) -> str:
        return f"WeightClipping(r={self.r})"


class GradientClipping(Hook):
    """A :func:`~cnnlab.train.fit` hook that clips gradients after ``backward()``.

    With ``max_norm`` the gradients are rescaled by ``min(1, max_norm / ||g||)``
    (``torch.nn.utils.clip_grad_norm_``); with ``max_value`` each component is clamped to
    ``[-max_value, max_value]`` (``torch.nn.utils.clip_grad_value_``). With both, values are
    clamped first, then the norm is limited.

    The total gradient norm *before* clipping is appended to :attr:`norms` at every step (the list
    is emptied when a new ``fit`` starts), so a chapter can plot how large the gradients were.

    Args:
        max_norm: largest allowed total L2 norm of the gradients, ``> 0``, or ``None``;
            ``math.inf`` clips nothing and only records the norms.
        max_value: largest allowed absolute gradient component, ``> 0``, or ``None``.
    """

    def __init__(self, max_norm: float | None = None, max_value: float | None = None) -> None:
        if max_norm is None and max_value is None:
            raise ValueError("GradientClipping needs max_norm or max_value (both are None)")
        if max_norm is not None and max_norm != math.inf:
            _check_positive("max_norm", max_norm)
        if max_value is not None:
            _check_positive("max_value", max_value)
        self.max_norm = None if max_norm is None else float(max_norm)
        self.max_value = None if max_value is None else float(max_value)
        self.norms: list[float] = []  # total gradient norm before clipping, one per step

    def on_fit_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.norms = []

    def after_backward(self, model: nn.Module) -> None:
        params = [p for p in model.parameters() if p.grad is not None]
        self.norms.append(grad_norm(params))
        if self.max_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.max_value)
        if self.max_norm is not None and self.max_norm != math.inf:
            torch.nn.utils.clip_grad_norm_(params, self.max_norm)

    def __repr__(self) -> str:
        return f"GradientClipping(max_norm={self.max_norm}, max_value={self.max_value})"
