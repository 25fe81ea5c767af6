import pytest
import torch
from torch import nn

from cnnlab.models import SmallCNN, build_model


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 3), ((28, 20), 1)])
def test_forward_shapes(size, channels):
    model = SmallCNN(channels, 10, input_size=size, width=8)
    h, w = (size, size) if isinstance(size, int) else size
    out = model(torch.randn(4, channels, h, w))
    assert out.shape == (4, 10)
    assert model.flat_features == 16 * (h // 4) * (w // 4)


def test_article_flatten_size_is_8x8_for_32x32_inputs():
    model = SmallCNN(3, 10, input_size=32, width=32)
    assert model.flat_features == 64 * 8 * 8 != 64 * 16 * 16


def test_options_build_the_layers():
    plain = SmallCNN(1, 10, input_size=8)
    bn = SmallCNN(1, 10, input_size=8, batch_norm=True, dropout=0.5)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in plain.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in bn.modules()) == 2
    sep = SmallCNN(1, 10, input_size=8, separable=True)
    assert sep.conv2[0].groups == 8 * 4
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(sep) < n(plain)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(dropout=1.5), "Invalid dropout value: 1.5"),
        (dict(width=0), "Invalid width value: 0"),
        (dict(input_size=2), r"Invalid input_size: \(2, 2\)"),
        (dict(input_size="big"), "Invalid input_size: 'big'"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = dict(input_size=8) | kwargs
    with pytest.raises(ValueError, match=match):
        SmallCNN(1, 10, **args)


def test_build_model_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = build_model((1, 8, 8), 10, seed=5)
    b = build_model((1, 8, 8), 10, seed=5)
    c = build_model((1, 8, 8), 10, seed=6)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.testing.assert_close(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_activations_are_modules_so_forward_hooks_see_them():
    model = SmallCNN(1, 10, input_size=8, batch_norm=True)
    seen = []
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    model(torch.randn(2, 1, 8, 8))
    assert len(seen) == 3


def _relu_then_pool(model, x):
    """The textbook order (ReLU, then pool) that SmallCNN.features reorders."""
    x = model.pool(model.act1(model.bn1(model.conv1(x))))
    x = model.pool(model.act2(model.bn2(model.conv2(x))))
    return model.fc2(model.drop2(model.act3(model.fc1(model.drop1(torch.flatten(x, 1))))))


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pool_before_relu_is_the_same_function_and_gradient_bit_for_bit(batch_norm, channels_last):
    model = build_model((1, 12, 12), 10, seed=3, width=4, hidden=16, batch_norm=batch_norm)
    x = torch.randn(16, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    x[:4] = -x[:4].abs()  # inputs whose pre-activations are mostly negative: ReLU zeros, ties
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for forward in (model, lambda inp: _relu_then_pool(model, inp)):
        model.zero_grad()
        out = forward(x)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    assert torch.equal(outs[0], outs[1])
    for g0, g1 in zip(*grads, strict=True):
        assert torch.equal(g0, g1)
