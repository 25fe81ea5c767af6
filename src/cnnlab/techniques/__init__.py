"""The article's techniques, correct and tested against PyTorch: one module per article section.

* :mod:`~cnnlab.techniques.clipping`: weight clipping and gradient clipping (section 4.1).
* :mod:`~cnnlab.techniques.regularization`: L1 / L2 penalties and weight decay (section 4.2).
* :mod:`~cnnlab.techniques.normalization`: batch normalization (section 4.3).
* :mod:`~cnnlab.techniques.dropout`: inverted dropout (section 4.4).
* :mod:`~cnnlab.techniques.conv`: convolution as im2col + matmul, separable convolution,
  parameter and FLOP counts, translation equivariance (section 4.5).
* :mod:`~cnnlab.techniques.overfitting`: early stopping and data augmentation (FAQ 6.4),
  a bound on memorized noisy labels, and the label-noise regime where a network memorizes.

Each is a functional core plus a thin ``nn.Module``, or a :class:`~cnnlab.train.Hook` for
:func:`~cnnlab.train.fit`. The article's own (broken) code lives in :mod:`cnnlab.article`.
"""

from cnnlab.techniques.clipping import GradientClipping, WeightClipping, clip_weights_, grad_norm
from cnnlab.techniques.conv import (
    DepthwiseSeparableConv2d,
    conv2d,
    conv2d_flops,
    conv2d_naive,
    conv_output_size,
    count_params,
    im2col_bytes,
    layer_costs,
    shift_image,
    translation_error,
)
from cnnlab.techniques.dropout import Dropout, Dropout2d, dropout, dropout2d
from cnnlab.techniques.normalization import BatchNorm2d, activation_stats, batch_norm
from cnnlab.techniques.overfitting import (
    Augmentation,
    EarlyStopping,
    memorized_at_least,
    noisy_regime,
    random_affine,
)
from cnnlab.techniques.regularization import (
    L1,
    L2,
    decay_param_groups,
    l1_penalty,
    l2_penalty,
    penalized_parameters,
    weight_stats,
)

__all__ = [
    "L1",
    "L2",
    "Augmentation",
    "BatchNorm2d",
    "DepthwiseSeparableConv2d",
    "Dropout",
    "Dropout2d",
    "EarlyStopping",
    "GradientClipping",
    "WeightClipping",
    "activation_stats",
    "batch_norm",
    "clip_weights_",
    "conv2d",
    "conv2d_flops",
    "conv2d_naive",
    "conv_output_size",
    "count_params",
    "decay_param_groups",
    "dropout",
    "dropout2d",
    "grad_norm",
    "im2col_bytes",
    "l1_penalty",
    "l2_penalty",
    "layer_costs",
    "memorized_at_least",
    "noisy_regime",
    "penalized_parameters",
    "random_affine",
    "shift_image",
    "translation_error",
    "weight_stats",
]
