"""Weight clipping and gradient clipping, checked against torch.clamp and torch.nn.utils."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from cnnlab.models import build_model
from cnnlab.techniques import GradientClipping, WeightClipping, clip_weights_, grad_norm
from cnnlab.train import Hook, fit


def _net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))  # N(0, 1): many |w| > r
    return net


def _with_grads(net: nn.Module, scale: float = 1.0, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 2, 6, 6, generator=g)
    (scale * net(x).pow(2).sum()).backward()
    return net


# ----------------------------------------------------------------------------- clip_weights_


@pytest.mark.parametrize("r", [0.01, 0.5])
def test_clip_weights_matches_clamp(r: float) -> None:
    net = _net()
    expected = [p.detach().clamp(-r, r) for p in net.parameters()]
    assert any(p.abs().max() > r for p in net.parameters())  # there is something to clip
    clip_weights_(net, r)
    for p, e in zip(net.parameters(), expected):
        assert_close(p.detach(), e)
        assert p.abs().max() <= r


def test_clip_weights_accepts_tensors_and_iterables_and_keeps_autograd_clean() -> None:
    w = torch.tensor([-2.0, -0.005, 0.0, 0.3], requires_grad=True)
    clip_weights_(w, 0.01)
    assert_close(w.detach(), torch.tensor([-0.01, -0.005, 0.0, 0.01]))
    assert w.grad_fn is None and w.is_leaf
    a, b = torch.full((2,), 5.0), torch.full((3,), -5.0)
    clip_weights_(iter([a, b]), 1.0)
    assert_close(a, torch.ones(2))
    assert_close(b, -torch.ones(3))


@pytest.mark.parametrize("r", [0, -0.01, float("nan"), float("inf")])
def test_clip_weights_rejects_bad_r(r: float) -> None:
    with pytest.raises(ValueError, match=rf"Invalid clip range r: {r!r} \(must be > 0\)"):
        clip_weights_(_net(), r)
    with pytest.raises(ValueError, match="Invalid clip range r"):
        WeightClipping(r)


def test_weight_clipping_hook_clips_after_every_step(digits) -> None:
    r = 0.02

    class Spy(Hook):  # runs after WeightClipping in the same step
        def __init__(self) -> None:
            self.max_abs: list[float] = []

        def after_step(self, model: nn.Module) -> None:
            self.max_abs.append(max(float(p.detach().abs().max()) for p in model.parameters()))

    spy = Spy()
    model = build_model(digits.input_shape, digits.num_classes, seed=0, width=4, hidden=16)
    history = fit(model, digits, epochs=1, lr=0.05, hooks=[WeightClipping(r), spy], progress=False)
    assert len(spy.max_abs) == history.steps > 0
    assert max(spy.max_abs) <= r

    free = build_model(digits.input_shape, digits.num_classes, seed=0, width=4, hidden=16)
    fit(free, digits, epochs=1, lr=0.05, progress=False)
    # without the hook the weights leave [-r, r]: the hook did the clipping
    assert max(float(p.detach().abs().max()) for p in free.parameters()) > r


# ----------------------------------------------------------------------------- grad_norm


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_grad_norm_matches_clip_grad_norm(norm_type: float) -> None:
    net = _with_grads(_net())
    reference = torch.nn.utils.clip_grad_norm_(net.parameters(), 1e12, norm_type=norm_type)
    assert_close(torch.tensor(grad_norm(net, norm_type)), reference)


def test_grad_norm_is_zero_without_gradients_and_skips_missing_ones() -> None:
    net = _net()
    assert grad_norm(net) == 0.0
    _with_grads(net)
    net[0].bias.grad = None
    expected = torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
    )
    assert_close(torch.tensor(grad_norm(net)), expected)


# ----------------------------------------------------------------------------- GradientClipping


def test_gradient_clipping_by_norm_matches_torch_and_records_the_preclip_norm() -> None:
    net, ref = _with_grads(_net(), scale=100.0), _with_grads(_net(), scale=100.0)
    expected_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    hook = GradientClipping(max_norm=1.0)
    hook.after_backward(net)
    assert hook.norms == [pytest.approx(float(expected_norm), rel=1e-6)]
    assert hook.norms[0] > 1.0  # it really clipped
    for p, q in zip(net.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad)
    assert grad_norm(net) == pytest.approx(1.0, rel=1e-5)


def test_gradient_clipping_by_value_matches_torch() -> None:
    net, ref = _with_grads(_net()), _with_grads(_net())
    torch.nn.utils.clip_grad_value_(ref.parameters(), 0.1)
    hook = GradientClipping(max_value=0.1)
    hook.after_backward(net)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert_close(p.grad, q.grad)
        assert p.grad.abs().max() <= 0.1
    assert hook.norms[0] > grad_norm(net)  # recorded before clipping


def test_gradient_clipping_leaves_small_gradients_alone() -> None:
    net, ref = _with_grads(_net(), scale=1e-6), _with_grads(_net(), scale=1e-6)
    GradientClipping(max_norm=1.0).after_backward(net)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs max_norm or max_value"),
        ({"max_norm": 0}, r"Invalid max_norm: 0 \(must be > 0\)"),
        ({"max_value": -1.0}, r"Invalid max_value: -1.0 \(must be > 0\)"),
    ],
)
def test_gradient_clipping_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GradientClipping(**kwargs)


def test_gradient_clipping_in_fit_bounds_every_step_and_resets_per_fit(digits) -> None:
    class Spy(Hook):  # runs after GradientClipping in the same step
        def __init__(self) -> None:
            self.norms: list[float] = []

        def after_backward(self, model: nn.Module) -> None:
            self.norms.append(grad_norm(model))

    clip, spy = GradientClipping(max_norm=0.5), Spy()
    model = build_model(digits.input_shape, digits.num_classes, seed=0, width=4, hidden=16)
    history = fit(model, digits, epochs=1, lr=0.05, hooks=[clip, spy], progress=False)
    assert len(clip.norms) == len(spy.norms) == history.steps
    assert max(clip.norms) > 0.5  # some steps had larger gradients...
    assert max(spy.norms) <= 0.5 * (1 + 1e-5)  # ...and none got through
    fit(model, digits, epochs=1, lr=0.05, hooks=[clip], progress=False)
    assert len(clip.norms) == history.steps  # a new fit starts a new record


def test_gradient_clipping_rescues_a_too_large_learning_rate(digits) -> None:
    """The chapter's point: at lr=0.5 (momentum 0.9) plain SGD does not learn, clipped SGD does;
    clipping the *weights* does not help."""
    kwargs = {"epochs": 3, "lr": 0.5, "progress": False}
    losses = {}
    for name, hooks in [
        ("none", []),
        ("grad", [GradientClipping(max_norm=1.0)]),
        ("weight", [WeightClipping(0.05)]),
    ]:
        model = build_model(digits.input_shape, digits.num_classes, seed=0, width=8, hidden=32)
        losses[name] = fit(model, digits, hooks=hooks, **kwargs).train_loss[-1]
    assert losses["grad"] < 0.5 * losses["none"]
    assert losses["grad"] < 0.5 * losses["weight"]



def test_gradient_clipping_with_infinite_norm_only_records():
    import math

    net = torch.nn.Linear(4, 3)
    (net(torch.ones(2, 4)) * 100).sum().backward()
    before = [p.grad.clone() for p in net.parameters()]
    hook = GradientClipping(max_norm=math.inf)
    hook.after_backward(net)
    for b, p in zip(before, net.parameters()):
        torch.testing.assert_close(p.grad, b)
    assert hook.norms[0] == pytest.approx(float(torch.cat([b.flatten() for b in before]).norm()))
    with pytest.raises(ValueError, match="Invalid max_norm: -inf"):
        GradientClipping(max_norm=-math.inf)
