"""Batch normalization from scratch (article sections 2.3 / 3.3 / 4.3).

The article calls ``F.batch_norm2d``, which does not exist, and claims BN "reduces the inner-loop
computation". It does neither: BN adds work per layer. What it does is normalize each channel with
the statistics of the current mini-batch during training, then scale and shift with learnable
parameters; at evaluation time it uses running averages of those statistics. That keeps activations
well scaled, which allows higher learning rates.

For an input ``x`` of shape ``(N, C, H, W)`` and each channel ``c`` (statistics over ``N, H, W``):

.. math::

    \\mu_c = \\frac{1}{m}\\sum x, \\quad \\sigma_c^2 = \\frac{1}{m}\\sum (x - \\mu_c)^2, \\quad
    y = \\gamma_c \\frac{x - \\mu_c}{\\sqrt{\\sigma_c^2 + \\epsilon}} + \\beta_c

with ``m = N * H * W``. The running estimates follow PyTorch exactly: the *biased* variance
normalizes, the *unbiased* one (``m / (m - 1)`` times larger) is averaged::

    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * sigma2 * m / (m - 1)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BatchNorm2d", "activation_stats", "batch_norm"]


def _check_eps_momentum(eps: float, momentum: float) -> None:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"Invalid eps: {eps!r} (must be > 0)")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"Invalid momentum: {momentum!r} (must be in [0, 1])")


def batch_norm(
    x: Tensor,
    gamma: Tensor | None,
    beta: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    *,
    training: bool,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch-normalize ``x`` per channel (dimension 1); see the module docstring for the formulas.

    In training mode the batch statistics are used and ``running_mean`` / ``running_var`` (when
    given) are updated in place, as ``torch.nn.functional.batch_norm`` does. In eval mode the
    running statistics are used and nothing is updated.

    Args:
        x: ``(N, C)`` or ``(N, C, *)``, e.g. ``(N, C, H, W)``.
        gamma: the learnable scale, shape ``(C,)``, or ``None`` for 1.
        beta: the learnable shift, shape ``(C,)``, or ``None`` for 0.
        running_mean: ``(C,)`` running mean (updated in training mode) or ``None``.
        running_var: ``(C,)`` running unbiased variance (updated in training mode) or ``None``.
        training: normalize with batch statistics (True) or with the running ones (False).
        momentum: weight of the new batch in the running averages, in ``[0, 1]``.
        eps: added to the variance for numerical stability, ``> 0``.
    Returns:
        A tensor shaped like ``x``.
    """
    _check_eps_momentum(eps, momentum)
    if x.ndim < 2:
        raise ValueError(f"Invalid input shape: {tuple(x.shape)} (need (N, C) or (N, C, *))")
    c = x.shape[1]
    for name, t in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise ValueError(f"Invalid {name} shape: {tuple(t.shape)} (expected ({c},))")
    shape = (1, c) + (1,) * (x.ndim - 2)  # broadcast per channel: (1, C, 1, 1) for 4-D input
    if training:
        dims = [0] + list(range(2, x.ndim))  # every dimension but the channel one
        m = x.numel() // c  # values per channel: N * H * W
        if m < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input of shape "
                f"{tuple(x.shape)}"
            )
        mean = x.mean(dim=dims)  # (C,)
        var = x.var(dim=dims, unbiased=False)  # (C,) biased: what the batch is normalized with
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                running_var.mul_(1 - momentum).add_(momentum * var.detach() * m / (m - 1))
        elif running_mean is not None or running_var is not None:
            raise ValueError("Pass both running_mean and running_var, or neither")
    else:
        if running_mean is None or running_var is None:
            raise ValueError("Eval mode needs running_mean and running_var (got None)")
        mean, var = running_mean, running_var
    x_hat = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps)
    if gamma is not None:
        x_hat = x_hat * gamma.reshape(shape)
    if beta is not None:
        x_hat = x_hat + beta.reshape(shape)
    return x_hat


class BatchNorm2d(nn.Module):
    """Batch normalization over ``(N, C, H, W)`` inputs, a drop-in for ``nn.BatchNorm2d``.

    Holds the learnable ``weight`` (gamma, init 1) and ``bias`` (beta, init 0) and the buffers
    ``running_mean`` (init 0), ``running_var`` (init 1) and ``num_batches_tracked``, under the same
    names as ``nn.BatchNorm2d``, so state dicts load either way.

    Args:
        num_features: channels ``C``.
        eps: added to the variance, ``> 0``.
        momentum: weight of each new batch in the running statistics, in ``[0, 1]``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"Invalid num_features: {num_features!r} (must be a positive int)")
        _check_eps_momentum(eps, momentum)
        super().__init__()
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"Expected 4-D input (N, C, H, W), got shape {tuple(x.shape)}")
        if self.training:
            self.num_batches_tracked.add_(1)
        return batch_norm(
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            training=self.training,
            momentum=self.momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


_STAT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.modules.batchnorm._BatchNorm,
    BatchNorm2d,
    nn.ReLU,
)


@torch.no_grad()
def activation_stats(
    model: nn.Module, x: Tensor, *, types: tuple[type[nn.Module], ...] = _STAT_TYPES
) -> list[dict[str, Any]]:
    """Mean and standard deviation of the output of every conv / BN / ReLU layer, in call order.

    Runs one forward pass in the model's current mode, without gradients, through forward hooks.
    The model is left exactly as it was: BN running statistics that a training-mode pass would
    update are restored afterwards. Only *modules* are seen: a ReLU applied as a function
    (``torch.relu(...)``) does not appear; :class:`~cnnlab.models.SmallCNN`'s ReLUs are modules
    (applied after each pooling, so they report pooled maps).

    Args:
        model: the network.
        x: one input batch.
        types: the module classes to report (default: ``nn.Conv2d``, batch norms, ``nn.ReLU``).
    Returns:
        One JSON-ready dict per call of a matching module: ``{"name": qualified name, "type": class
        name, "shape": output shape as a list, "mean": float, "std": float}``.
    """
    records: list[dict[str, Any]] = []
    handles = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            out = output.detach().float()
            records.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "shape": list(out.shape),
                    "mean": float(out.mean()),
                    "std": float(out.std()) if out.numel() > 1 else 0.0,
                }
            )

        return hook

    saved = {k: b.clone() for k, b in model.named_buffers()}
    try:
        for name, module in model.named_modules():
            if isinstance(module, types):
                hook = make_hook(name or type(module).__name__)
                handles.append(module.register_forward_hook(hook))
        model(x)
    finally:
        for h in handles:
            h.remove()
        for k, b in model.named_buffers():
            b.copy_(saved[k])
    return records
