"""Inverted dropout from scratch, checked against torch.nn.functional.dropout / dropout2d."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlab.techniques import Dropout, Dropout2d, dropout, dropout2d


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
@pytest.mark.parametrize("make", [
    lambda p: dropout(torch.ones(3), p, training=True),
    lambda p: dropout2d(torch.ones(1, 2, 2, 2), p, training=True),
    Dropout,
    Dropout2d,
])
def test_probability_outside_zero_one_raises(make, p: float) -> None:
    with pytest.raises(
        ValueError, match=rf"Invalid dropout probability p: {p!r} \(must be in \[0, 1\)\)"
    ):
        make(p)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_kept_fraction_and_mean_are_preserved(p: float) -> None:
    n = 200_000
    x = torch.ones(n)
    y = dropout(x, p, training=True, generator=_gen(0))
    kept = y != 0
    # the number kept is Binomial(n, 1 - p): allow 5 standard deviations
    assert abs(float(kept.float().mean()) - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # survivors scaled by 1/(1-p)
    # E[y] = x; each y_i has variance p / (1 - p)
    assert abs(float(y.mean()) - 1.0) < 5 * math.sqrt(p / (1 - p) / n)


def test_eval_mode_and_p_zero_are_the_identity() -> None:
    x = torch.randn(4, 3, 5, 5, generator=_gen(1))
    assert dropout(x, 0.5, training=False) is x
    assert dropout2d(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    assert Dropout(0.5).eval()(x) is x
    assert Dropout2d(0.5).eval()(x) is x
    assert not torch.equal(Dropout(0.5).train()(x), x)  # ...and training mode is not


def test_same_seed_same_mask_other_seed_other_mask() -> None:
    x = torch.randn(64, 32, generator=_gen(2))
    a = dropout(x, 0.5, training=True, generator=_gen(7))
    b = dropout(x, 0.5, training=True, generator=_gen(7))
    c = dropout(x, 0.5, training=True, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a != 0, c != 0)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_masks_match_pytorch_for_the_same_seed(p: float) -> None:
    x = torch.randn(8, 6, 4, 4, generator=_gen(3))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        ref = F.dropout(x, p, training=True)
        torch.manual_seed(11)
        ref2d = F.dropout2d(x, p, training=True)
    assert_close(dropout(x, p, training=True, generator=_gen(11)), ref)
    assert_close(dropout2d(x, p, training=True, generator=_gen(11)), ref2d)


def test_gradient_is_the_scaled_mask() -> None:
    x = torch.randn(10, 10, generator=_gen(4)).requires_grad_()
    y = dropout(x, 0.25, training=True, generator=_gen(5))
    y.sum().backward()
    mask = (y != 0).float()
    assert_close(x.grad, mask / 0.75)


def test_dropout2d_drops_whole_channels() -> None:
    n, c, p = 200, 50, 0.3
    x = torch.rand(n, c, 3, 3, generator=_gen(6)) + 0.5  # strictly positive
    y = dropout2d(x, p, training=True, generator=_gen(9))
    zero = (y == 0).flatten(2)  # (N, C, H*W)
    assert torch.equal(zero.all(2), zero.any(2))  # a channel is all zero or not zero at all
    kept = ~zero.all(2)
    assert_close(y[kept], x[kept] / (1 - p))
    frac = float(kept.float().mean())
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / (n * c))
    with pytest.raises(ValueError, match="Expected 4-D input"):
        dropout2d(torch.ones(3, 3), 0.5, training=True)


def test_modules_use_their_generator_and_repr() -> None:
    x = torch.ones(1000)
    a = Dropout(0.5, generator=_gen(1))(x)
    b = dropout(x, 0.5, training=True, generator=_gen(1))
    assert torch.equal(a, b)
    assert repr(Dropout(0.3)) == "Dropout(p=0.3)"
    net = nn.Sequential(nn.Linear(4, 4), Dropout2d(0.5))
    assert "Dropout2d(p=0.5)" in repr(net)
