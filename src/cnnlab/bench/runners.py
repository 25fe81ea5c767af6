"""Runners of the convolution chapter's multi-seed comparisons (one-layer convolution against a
dense layer, the depthwise-separable SmallCNN, NCHW and bf16 training), usable as ``runner=`` of
:func:`cnnlab.experiments.sweep`.

Each is a thin call of :func:`cnnlab.experiments.run` (the one row format of every training run)
with another model, other ``fit`` options, and two more fields: ``params`` and ``shift_acc``
(:func:`shift_fields`). They stay module-level functions with these names: a runner's qualified
name is part of the run cache's key.
"""


from __future__ import annotations

from typing import Any

from torch import nn

from cnnlab.bench.step import Autocast
from cnnlab.config import Row, RunConfig
from cnnlab.data import Dataset
from cnnlab.experiments import default_model, run
from cnnlab.models import build_model, conv_layer_model, dense_layer_model
from cnnlab.techniques.conv import count_params, shift_image
from cnnlab.train import evaluate

__all__ = ["run_bf16", "run_conv_layer", "run_dense_layer", "run_nchw", "run_separable",
           "shift_fields"]


def shift_fields(model: nn.Module, data: Dataset) -> dict[str, Any]:
    """The fields these runners add to a row: ``params`` (:func:`count_params`) and
    ``shift_acc``, the test accuracy on the test images shifted one pixel to the right (filled
    with the background value), which asks how much the model relies on where a pattern is."""
    x_test, y_test = data.test
    shifted = shift_image(x_test, 0, 1, fill=float(x_test.amin()))
    _, shift_acc = evaluate(model, shifted, y_test)
    return {"params": count_params(model), "shift_acc": shift_acc}


def _conv_layer(config: RunConfig, data: Dataset, seed: int) -> nn.Module:
    return conv_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)


def _dense_layer(config: RunConfig, data: Dataset, seed: int) -> nn.Module:
    return dense_layer_model(data.input_shape, data.num_classes, config.width, seed=seed)


def _separable(config: RunConfig, data: Dataset, seed: int) -> nn.Module:
    return build_model(data.input_shape, data.num_classes, seed=seed, width=config.width,
                       batch_norm=config.batch_norm, dropout=config.dropout, separable=True)


def _bf16(config: RunConfig, data: Dataset, seed: int) -> nn.Module:
    return Autocast(default_model(config, data, seed))


def run_conv_layer(config: RunConfig, seed: int) -> Row:
    """Sweep runner: :func:`~cnnlab.models.conv_layer_model` with ``config.width`` channels."""
    return run(config, seed, make_model=_conv_layer, extra=shift_fields)


def run_dense_layer(config: RunConfig, seed: int) -> Row:
    """Sweep runner: :func:`~cnnlab.models.dense_layer_model` with ``config.width`` output
    maps."""
    return run(config, seed, make_model=_dense_layer, extra=shift_fields)


def run_separable(config: RunConfig, seed: int) -> Row:
    """Sweep runner: ``SmallCNN(separable=True)`` (depthwise-separable second convolution)."""
    return run(config, seed, make_model=_separable, extra=shift_fields)


def run_nchw(config: RunConfig, seed: int) -> Row:
    """Sweep runner: SmallCNN trained in the default NCHW layout (``fit(channels_last=False)``)."""
    return run(config, seed, fit_options={"channels_last": False}, extra=shift_fields)


def run_bf16(config: RunConfig, seed: int) -> Row:
    """Sweep runner: SmallCNN trained under bf16 autocast (:class:`Autocast`), channels_last."""
    return run(config, seed, make_model=_bf16, extra=shift_fields)
