"""Convolution from scratch, depthwise-separable convolution, parameter and FLOP counts
(article sections 2.5 / 3.5).

A convolution is a matrix product once the input patches are laid out as columns ("im2col", done
by ``torch.nn.functional.unfold``): every output pixel is the dot product of one patch with each
filter. The filter is shared across positions (the article's "parameter sharing"), which is why a
convolution has ``C_out * C_in * kh * kw`` weights whatever the image size.

For an ``H x W`` input, kernel ``k``, stride ``s`` and padding ``p``:

.. math::

    H_{out} = \\left\\lfloor \\frac{H + 2p - k}{s} \\right\\rfloor + 1, \\qquad
    \\text{FLOPs} = 2 \\cdot N \\cdot C_{out} \\cdot H_{out} W_{out} \\cdot
    \\frac{C_{in}}{g} k_h k_w

A depthwise-separable convolution (a per-channel ``k x k`` filter, then a ``1 x 1`` mix) replaces
``C_in C_out k^2`` weights and multiply-adds per pixel by ``C_in k^2 + C_in C_out``.

What sharing buys beyond size is translation equivariance: :func:`shift_image` moves images by
whole pixels, :func:`translation_error` measures how far a layer is from commuting with that
shift, and :func:`layer_costs` puts a convolution's parameters and FLOPs beside those of the fully
connected layer with the same input and output sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DepthwiseSeparableConv2d",
    "conv2d",
    "conv2d_flops",
    "conv2d_naive",
    "conv_output_size",
    "count_params",
    "im2col_bytes",
    "layer_costs",
    "shift_image",
    "translation_error",
]

IntPair = int | tuple[int, int]


def _pair(name: str, value: IntPair, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if (
        len(pair) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in pair)
        or any(v < minimum for v in pair)
    ):
        raise ValueError(f"Invalid {name}: {value!r} (an int >= {minimum} or a pair of them)")
    return pair  # type: ignore[return-value]


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be a positive int)")


def conv_output_size(size: int, kernel_size: int, *, stride: int = 1, padding: int = 0) -> int:
    """Output length of a convolution along one dimension: ``(size + 2p - k) // s + 1``.

    Args:
        size: input length (``H`` or ``W``).
        kernel_size: filter length ``k``.
        stride: step ``s``.
        padding: zeros added on each side ``p``.
    Returns:
        The output length (``>= 1``), or ``ValueError`` when the kernel does not fit.
    """
    _positive_int("size", size)
    _positive_int("kernel_size", kernel_size)
    _positive_int("stride", stride)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"Invalid padding: {padding!r} (must be an int >= 0)")
    if size + 2 * padding < kernel_size:
        raise ValueError(
            f"Invalid kernel_size: {kernel_size} "
            f"(larger than the padded input {size + 2 * padding})"
        )
    return (size + 2 * padding - kernel_size) // stride + 1


def _check_conv_args(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"Invalid input shape: {tuple(x.shape)} (expected (N, C, H, W))")
    if weight.ndim != 4:
        raise ValueError(f"Invalid weight shape: {tuple(weight.shape)} (expected (O, C/g, kh, kw))")
    _positive_int("groups", groups)
    c_out, c_in_g = weight.shape[:2]
    if x.shape[1] != c_in_g * groups:
        raise ValueError(
            f"Invalid input channels: {x.shape[1]} (weight {tuple(weight.shape)} with "
            f"groups={groups} expects {c_in_g * groups})"
        )
    if c_out % groups:
        raise ValueError(f"Invalid groups: {groups} (does not divide out_channels {c_out})")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"Invalid bias shape: {tuple(bias.shape)} (expected ({c_out},))")


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
    groups: int = 1,
) -> Tensor:
    """2-D convolution (cross-correlation, as in PyTorch) as im2col + one matrix product.

    .. math:: y[n, o, i, j] = b_o + \\sum_{c, u, v} w[o, c, u, v]\\,
              x_{pad}[n, c, s_h i + u, s_w j + v]

    Args:
        x: input ``(N, C, H, W)``.
        weight: filters ``(O, C / groups, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        stride: int or ``(sh, sw)``, ``>= 1``.
        padding: zeros on each side, int or ``(ph, pw)``, ``>= 0``.
        groups: split the channels into this many independent convolutions (``groups = C`` is
            a depthwise convolution).
    Returns:
        ``(N, O, H_out, W_out)``, equal to ``torch.nn.functional.conv2d`` up to rounding.
    """
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    _check_conv_args(x, weight, bias, groups)
    n, _, h, w = x.shape
    o, c_g, kh, kw = weight.shape
    oh = conv_output_size(h, kh, stride=sh, padding=ph)
    ow = conv_output_size(w, kw, stride=sw, padding=pw)
    g = groups
    cols = F.unfold(x, (kh, kw), padding=(ph, pw), stride=(sh, sw))  # (N, C*kh*kw, oh*ow)
    cols = cols.reshape(n, g, c_g * kh * kw, oh * ow)  # (N, g, C/g*kh*kw, L): channel-major
    w_mat = weight.reshape(g, o // g, c_g * kh * kw)  # (g, O/g, C/g*kh*kw): one row per filter
    out = torch.matmul(w_mat.unsqueeze(0), cols)  # (1, g, O/g, K) @ (N, g, K, L) -> (N, g, O/g, L)
    out = out.reshape(n, o, oh, ow)  # (N, O, oh, ow)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)  # (1, O, 1, 1) broadcast over N, H, W
    return out


def conv2d_naive(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    stride: IntPair = 1,
    padding: IntPair = 0,
) -> Tensor:
    """2-D convolution with explicit loops over samples, filters and output positions.

    The definition, written out for teaching; far too slow beyond tiny inputs. Same formula and
    arguments as :func:`conv2d` (without ``groups``).

    Args:
        x: ``(N, C, H, W)``.
        weight: ``(O, C, kh, kw)``.
        bias: ``(O,)`` or ``None``.
        stride: int or ``(sh, sw)``.
        padding: int or ``(ph, pw)``.
    Returns:
        ``(N, O, H_out, W_out)``.
    """
    sh, sw = _pair("stride", stride, 1)
    ph, pw = _pair("padding", padding, 0)
    _check_conv_args(x, weight, bias, 1)
    n, _, h, w = x.shape
    o, _, kh, kw = weight.shape
    oh = conv_output_size(h, kh, stride=sh, padding=ph)
    ow = conv_output_size(w, kw, stride=sw, padding=pw)
    xp = F.pad(x, (pw, pw, ph, ph))  # (N, C, H + 2ph, W + 2pw)
    out = x.new_zeros(n, o, oh, ow)
    for b in range(n):
        for f in range(o):
            for i in range(oh):
                for j in range(ow):
                    patch = xp[b, :, i * sh : i * sh + kh, j * sw : j * sw + kw]  # (C, kh, kw)
                    out[b, f, i, j] = (patch * weight[f]).sum()
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out


class DepthwiseSeparableConv2d(nn.Module):
    """A depthwise ``k x k`` convolution (one filter per input channel) then a pointwise ``1 x 1``.

    Weights: ``C_in * k_h * k_w + C_in * C_out`` (+ ``C_out`` bias) instead of
    ``C_in * C_out * k_h * k_w``. The depthwise convolution has no bias: the pointwise convolution
    is linear, so a depthwise bias would only add a constant that the pointwise bias already covers.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: int or ``(kh, kw)`` of the depthwise filters.
        stride: stride of the depthwise convolution.
        padding: padding of the depthwise convolution.
        bias: give the pointwise convolution a bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        *,
        stride: IntPair = 1,
        padding: IntPair = 0,
        bias: bool = True,
    ) -> None:
        _positive_int("in_channels", in_channels)
        _positive_int("out_channels", out_channels)
        k = _pair("kernel_size", kernel_size, 1)
        s = _pair("stride", stride, 1)
        p = _pair("padding", padding, 0)
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, k, stride=s, padding=p, groups=in_channels, bias=False
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))  # (N, C_in, H', W') -> (N, C_out, H', W')


def count_params(module: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of parameters of ``module`` (shared parameters counted once).

    Args:
        module: any model.
        trainable_only: count only parameters with ``requires_grad``.
    Returns:
        The total number of scalar parameters.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def conv2d_flops(
    in_channels: int,
    out_channels: int,
    kernel_size: IntPair,
    out_h: int,
    out_w: int,
    *,
    groups: int = 1,
    batch: int = 1,
) -> int:
    """Floating-point operations of one convolution, counting a multiply-add as 2 FLOPs.

    .. math:: \\text{FLOPs} = 2 \\cdot N \\cdot C_{out} \\cdot H_{out} \\cdot W_{out} \\cdot
              \\frac{C_{in}}{g} \\cdot k_h \\cdot k_w

    The bias additions (``N C_out H_out W_out``, negligible) are not counted. Some papers and tools
    report multiply-adds (MACs) instead: half this number.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: int or ``(kh, kw)``.
        out_h: output height.
        out_w: output width.
        groups: channel groups (``groups = C_in = C_out`` for a depthwise convolution).
        batch: batch size ``N``.
    Returns:
        The FLOP count as an int.
    """
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                        ("out_h", out_h), ("out_w", out_w), ("groups", groups), ("batch", batch)):
        _positive_int(name, value)
    kh, kw = _pair("kernel_size", kernel_size, 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(
            f"Invalid groups: {groups} (must divide in_channels {in_channels} and "
            f"out_channels {out_channels})"
        )
    return 2 * batch * out_channels * out_h * out_w * (in_channels // groups) * kh * kw


def im2col_bytes(
    in_channels: int,
    kernel_size: IntPair,
    out_h: int,
    out_w: int,
    *,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Memory of the im2col (unfolded) matrix that :func:`conv2d` builds.

    .. math:: \\text{bytes} = N \\cdot (C_{in} k_h k_w) \\cdot (H_{out} W_{out}) \\cdot
              \\text{bytes per element}

    Each input pixel is copied into up to ``k_h k_w`` patches, so for a stride-1 ``3 x 3``
    convolution the matrix is about 9 times larger than the input: the price of turning the
    convolution into one fast matrix product.

    Args:
        in_channels: ``C_in``.
        kernel_size: int or ``(kh, kw)``.
        out_h: output height.
        out_w: output width.
        batch: batch size ``N``.
        dtype: element type (4 bytes for float32).
    Returns:
        The size in bytes.
    """
    for name, value in (("in_channels", in_channels), ("out_h", out_h), ("out_w", out_w),
                        ("batch", batch)):
        _positive_int(name, value)
    kh, kw = _pair("kernel_size", kernel_size, 1)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return batch * in_channels * kh * kw * out_h * out_w * itemsize


def layer_costs(input_shape: tuple[int, int, int], channels: int, *,
                kernel_size: int = 3) -> dict[str, int]:
    """Parameters and FLOPs (per image) of a ``k x k`` convolution with ``channels`` outputs and
    same padding, and of the fully connected layer with the same input and output sizes.

    Returns:
        ``conv_params``, ``dense_params``, ``conv_flops``, ``dense_flops`` (a multiply-add
        counted as 2), ``in_features`` (``C*H*W``) and ``out_features`` (``channels*H*W``).
    """
    c, h, w = input_shape
    conv_params = channels * c * kernel_size ** 2 + channels
    n_in, n_out = c * h * w, channels * h * w
    return {"conv_params": conv_params,
            "dense_params": n_in * n_out + n_out,
            "conv_flops": conv2d_flops(c, channels, kernel_size, h, w),
            "dense_flops": 2 * n_in * n_out,
            "in_features": n_in, "out_features": n_out}


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
