"""Runners of the convolution chapter's multi-seed comparisons (one-layer convolution against a
dense layer, the depthwise-separable SmallCNN, NCHW and bf16 training), usable as ``runner=`` of
:func:`cnnlab.experiments.sweep`, and the models and translation helpers they use."""


from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cnnlab.bench.core import Result
from cnnlab.bench.step import Autocast
from cnnlab.experiments import load_for
from cnnlab.models import build_model
from cnnlab.techniques.conv import (
    conv2d_flops,
    count_params,
)
from cnnlab.train import evaluate, fit

# ----------------------------------------------------------------------------- chapter runners


def layer_costs(input_shape: tuple[int, int, int], channels: int, *,
                kernel_size: int = 3) -> Result:
    """Parameters and FLOPs (per image) of a ``k x k`` convolution with ``channels`` outputs and
    same padding, and of the fully connected layer with the same input and output sizes."""
    c, h, w = input_shape
    conv_params = channels * c * kernel_size ** 2 + channels
    n_in, n_out = c * h * w, channels * h * w
    return {"conv_params": conv_params,
            "dense_params": n_in * n_out + n_out,
            "conv_flops": conv2d_flops(c, channels, kernel_size, h, w),
            "dense_flops": 2 * n_in * n_out,
            "in_features": n_in, "out_features": n_out}


def conv_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                     kernel_size: int = 3, seed: int = 0) -> nn.Module:
    """One convolution (same padding) -> ReLU -> flatten -> linear classifier."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(c, channels, kernel_size, padding=kernel_size // 2),  # (B, ch, H, W)
            nn.ReLU(), nn.Flatten(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))


def dense_layer_model(input_shape: tuple[int, int, int], num_classes: int, channels: int, *,
                      seed: int = 0) -> nn.Module:
    """The same as :func:`conv_layer_model` with the convolution replaced by a fully connected
    layer of the same input and output sizes (``C*H*W -> channels*H*W``): no sharing."""
    c, h, w = input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Flatten(),  # (B, C*H*W)
            nn.Linear(c * h * w, channels * h * w), nn.ReLU(),  # (B, ch*H*W)
            nn.Linear(channels * h * w, num_classes))


def shift_image(x: Tensor, dy: int, dx: int, *, fill: float = 0.0) -> Tensor:
    """Shift images ``(..., H, W)`` by ``(dy, dx)`` pixels (down, right), filling the uncovered
    pixels with ``fill`` (no wrap-around)."""
    out = torch.full_like(x, fill)
    h, w = x.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def translation_error(layer: Callable[[Tensor], Tensor], x: Tensor, *, shift: int = 1,
                      out_shape: tuple[int, int, int] | None = None, border: int = 2) -> float:
    """How far ``layer`` is from translation equivariance: ``max |layer(shift(x)) -
    shift(layer(x))|`` over the interior (``border`` pixels from the edges are ignored, where
    shifted-in zeros and padding differ anyway), relative to ``max |layer(x)|``.

    A convolution gives ~0 (shift the input, the feature map shifts); a fully connected layer
    does not. ``out_shape`` ``(C, H, W)`` reshapes a flat output into a map.
    """
    with torch.no_grad():
        a = layer(shift_image(x, shift, shift))
        b = layer(x)
        if out_shape is not None:
            a, b = a.reshape(-1, *out_shape), b.reshape(-1, *out_shape)
        b = shift_image(b, shift, shift)
        m = border + shift
        err = (a - b)[..., m:-m, m:-m].abs().max()
        return float(err / b.abs().max().clamp_min(1e-12))


def _train_row(config: Any, seed: int, model: nn.Module, data: Any, **fit_kwargs: Any) -> Result:
    """Train with :func:`cnnlab.train.fit`; the row of :func:`cnnlab.experiments.run` plus
    ``params`` and ``shift_acc``: test accuracy on the test images shifted one pixel to the right
    (filled with the background value), which asks how much the model relies on where a pattern
    is."""
    hist = fit(model, data, epochs=config.epochs, lr=config.lr, batch_size=config.batch_size,
               optimizer=config.optimizer, momentum=config.momentum,
               weight_decay=config.weight_decay, seed=seed, progress=False, **fit_kwargs)
    x_test, y_test = data.test
    shifted = shift_image(x_test, 0, 1, fill=float(x_test.amin()))
    _, shift_acc = evaluate(model, shifted, y_test)
    return {**config.to_dict(), "seed": seed, "test_acc": hist.test_acc,
            "val_acc": hist.val_acc[-1], "train_acc": hist.train_acc[-1],
            "train_loss": hist.train_loss[-1], "gap": hist.train_acc[-1] - hist.test_acc,
            "diverged": hist.diverged, "train_time": hist.train_time,
            "history": hist.to_dict(), "params": count_params(model), "shift_acc": shift_acc}


def _data(config: Any, seed: int) -> Any:
    return load_for(config, seed)


def run_conv_layer(config: Any, seed: int) -> Result:
    """Sweep runner: :func:`conv_layer_model` with ``config.width`` channels."""
    data = _data(config, seed)
    model = conv_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)
    return _train_row(config, seed, model, data)


def run_dense_layer(config: Any, seed: int) -> Result:
    """Sweep runner: :func:`dense_layer_model` with ``config.width`` output maps."""
    data = _data(config, seed)
    model = dense_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)
    return _train_row(config, seed, model, data)


def _small(config: Any, seed: int, data: Any, **kw: Any) -> nn.Module:
    return build_model(data.input_shape, data.num_classes, seed=seed, width=config.width,
                       batch_norm=config.batch_norm, dropout=config.dropout, **kw)


def run_separable(config: Any, seed: int) -> Result:
    """Sweep runner: ``SmallCNN(separable=True)`` (depthwise-separable second convolution)."""
    data = _data(config, seed)
    return _train_row(config, seed, _small(config, seed, data, separable=True), data)


def run_nchw(config: Any, seed: int) -> Result:
    """Sweep runner: SmallCNN trained in the default NCHW layout (``fit(channels_last=False)``)."""
    data = _data(config, seed)
    return _train_row(config, seed, _small(config, seed, data), data, channels_last=False)


def run_bf16(config: Any, seed: int) -> Result:
    """Sweep runner: SmallCNN trained under bf16 autocast (:class:`Autocast`), channels_last."""
    data = _data(config, seed)
    model = Autocast(_small(config, seed, data))
    return _train_row(config, seed, model, data)
