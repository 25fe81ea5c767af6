"""Convolution from scratch, separable convolution and counts, checked against PyTorch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.models import SmallCNN
from cnnlab.techniques import (
    DepthwiseSeparableConv2d,
    conv2d,
    conv2d_flops,
    conv2d_naive,
    conv_output_size,
    count_params,
    im2col_bytes,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


CASES = [
    # (N, C, H, W), (O, kh, kw), stride, padding, groups
    ((2, 3, 8, 8), (4, 3, 3), 1, 0, 1),
    ((2, 3, 8, 8), (4, 3, 3), 1, 1, 1),
    ((1, 2, 9, 7), (5, 3, 3), 2, 1, 1),
    ((3, 1, 6, 6), (2, 1, 1), 1, 0, 1),
    ((2, 4, 10, 9), (6, 5, 3), (2, 3), (2, 1), 1),
    ((2, 4, 7, 7), (6, 3, 3), 1, 1, 2),
    ((2, 4, 7, 7), (4, 3, 3), 2, 1, 4),  # depthwise
]


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding", "groups"), CASES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv2d_matches_torch_forward_and_backward(
    x_shape, w_shape, stride, padding, groups, with_bias: bool
) -> None:
    g = _gen(0)
    o, kh, kw = w_shape
    x = torch.randn(x_shape, generator=g, requires_grad=True)
    w = torch.randn(o, x_shape[1] // groups, kh, kw, generator=g, requires_grad=True)
    b = torch.randn(o, generator=g, requires_grad=True) if with_bias else None
    kwargs = {"stride": stride, "padding": padding, "groups": groups}
    out = conv2d(x, w, b, **kwargs)
    ref = F.conv2d(x, w, b, **kwargs)
    assert_close(out, ref)
    upstream = torch.randn(ref.shape, generator=g)
    grads = torch.autograd.grad((out * upstream).sum(), [x, w] + ([b] if with_bias else []))
    grads_ref = torch.autograd.grad((ref * upstream).sum(), [x, w] + ([b] if with_bias else []))
    for a, r in zip(grads, grads_ref):
        assert_close(a, r)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "stride", "padding", "groups"), [c for c in CASES if c[4] == 1]
)
def test_conv2d_naive_matches_torch(x_shape, w_shape, stride, padding, groups) -> None:
    g = _gen(1)
    o, kh, kw = w_shape
    x = torch.randn(x_shape, generator=g)
    w = torch.randn(o, x_shape[1], kh, kw, generator=g)
    b = torch.randn(o, generator=g)
    assert_close(
        conv2d_naive(x, w, b, stride=stride, padding=padding),
        F.conv2d(x, w, b, stride=stride, padding=padding),
    )


def test_conv_output_size_matches_torch() -> None:
    for size, k, s, p in [(32, 3, 1, 1), (28, 5, 2, 0), (7, 7, 1, 0), (9, 3, 2, 1), (8, 2, 3, 0)]:
        out = F.conv2d(torch.zeros(1, 1, size, size), torch.zeros(1, 1, k, k), stride=s, padding=p)
        assert conv_output_size(size, k, stride=s, padding=p) == out.shape[-1]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: conv2d(torch.ones(1, 3, 5, 5), torch.ones(2, 2, 3, 3)),
         r"Invalid input channels: 3"),
        (lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(2, 2, 3, 3), stride=0),
         r"Invalid stride: 0"),
        (lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(2, 2, 3, 3), padding=-1),
         r"Invalid padding: -1"),
        (lambda: conv2d(torch.ones(1, 2, 2, 2), torch.ones(2, 2, 3, 3)), r"Invalid kernel_size: 3"),
        (lambda: conv2d(torch.ones(2, 5, 5), torch.ones(2, 2, 3, 3)), r"Invalid input shape"),
        (lambda: conv2d(torch.ones(1, 4, 5, 5), torch.ones(3, 2, 3, 3), groups=2),
         r"Invalid groups: 2"),
        (lambda: conv2d(torch.ones(1, 2, 5, 5), torch.ones(2, 2, 3, 3), torch.ones(3)),
         r"Invalid bias shape: \(3,\)"),
    ],
)
def test_conv2d_validates_arguments(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- separable


def test_depthwise_separable_equals_a_grouped_then_pointwise_convolution() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        layer = DepthwiseSeparableConv2d(4, 6, 3, stride=2, padding=1)
    x = torch.randn(2, 4, 9, 9, generator=_gen(2))
    dw, pw = layer.depthwise, layer.pointwise
    expected = F.conv2d(F.conv2d(x, dw.weight, stride=2, padding=1, groups=4), pw.weight, pw.bias)
    assert_close(layer(x), expected)
    assert layer(x).shape == (2, 6, 5, 5)
    assert dw.weight.shape == (4, 1, 3, 3) and dw.bias is None
    assert DepthwiseSeparableConv2d(4, 6, 3, bias=False).pointwise.bias is None


def test_parameter_counts_by_hand() -> None:
    # separable 32 -> 64, 3x3: depthwise 32*9, pointwise 32*64 + 64 bias
    assert count_params(DepthwiseSeparableConv2d(32, 64, 3)) == 288 + 2048 + 64 == 2400
    assert count_params(nn.Conv2d(32, 64, 3)) == 32 * 64 * 9 + 64 == 18496
    # SmallCNN on 8x8 digits, width 32: conv1 1*32*9+32, conv2 32*64*9+64,
    # fc1 (64*2*2)*128+128, fc2 128*10+10
    net = SmallCNN(1, 10, input_size=8, width=32, hidden=128)
    assert count_params(net) == 320 + 18496 + 32896 + 1290 == 53002
    net.conv1.weight.requires_grad_(False)
    assert count_params(net, trainable_only=True) == 53002 - 288
    lin = nn.Linear(3, 3)
    assert count_params(nn.Sequential(lin, lin)) == 12  # shared parameters count once


def test_conv2d_flops_by_hand_and_against_torch_flop_counter() -> None:
    # the article's first layer on a 32x32 RGB image: 2 * 32 * 32*32 * 3 * 9
    assert conv2d_flops(3, 32, 3, 32, 32) == 1_769_472
    assert conv2d_flops(3, 32, 3, 32, 32, batch=4) == 4 * 1_769_472
    assert conv2d_flops(32, 32, (3, 1), 16, 16, groups=32) == 2 * 32 * 16 * 16 * 1 * 3
    cases = [(3, 8, 3, 1, 1, 1), (6, 6, 3, 2, 1, 6), (4, 8, 5, 1, 0, 2)]
    for c_in, c_out, k, s, p, groups in cases:
        x = torch.zeros(2, c_in, 12, 12)
        w = torch.zeros(c_out, c_in // groups, k, k)
        with FlopCounterMode(display=False) as counter:
            out = F.conv2d(x, w, stride=s, padding=p, groups=groups)
        oh, ow = out.shape[-2:]
        assert conv2d_flops(c_in, c_out, k, oh, ow, groups=groups, batch=2) == (
            counter.get_total_flops()
        )
    with pytest.raises(ValueError, match="Invalid groups: 3"):
        conv2d_flops(4, 6, 3, 8, 8, groups=3)
    with pytest.raises(ValueError, match="Invalid out_h: 0"):
        conv2d_flops(4, 6, 3, 0, 8)


def test_separable_convolution_saves_flops() -> None:
    full = conv2d_flops(32, 64, 3, 16, 16)
    separable = conv2d_flops(32, 32, 3, 16, 16, groups=32) + conv2d_flops(32, 64, 1, 16, 16)
    assert separable / full == pytest.approx(1 / 64 + 1 / 9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_im2col_bytes_is_the_size_of_unfold(dtype: torch.dtype) -> None:
    x = torch.zeros(3, 5, 10, 10, dtype=dtype)
    cols = F.unfold(x, (3, 2), padding=1, stride=2)
    oh = conv_output_size(10, 3, stride=2, padding=1)
    ow = conv_output_size(10, 2, stride=2, padding=1)
    assert im2col_bytes(5, (3, 2), oh, ow, batch=3, dtype=dtype) == (
        cols.numel() * cols.element_size()
    )
    # a 3x3 stride-1 "same" convolution copies each pixel about 9 times
    assert im2col_bytes(1, 3, 32, 32) == 9 * 32 * 32 * 4
