"""L1 / L2 penalties and weight decay, checked against PyTorch's optimizers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlab.models import build_model
from cnnlab.techniques import (
    L1,
    L2,
    BatchNorm2d,
    decay_param_groups,
    l1_penalty,
    l2_penalty,
    penalized_parameters,
    weight_stats,
)
from cnnlab.techniques.regularization import ProximalL1, init_std, soft_threshold
from cnnlab.train import evaluate, fit


def _net(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    """conv (weight + bias) -> BN -> ReLU -> flatten -> linear (weight + bias), seeded."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)
    ).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=dtype))
    return net


def _batches(n: int, seed: int = 1, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 2, 6, 6, generator=g, dtype=dtype), torch.randint(0, 5, (8,), generator=g))
        for _ in range(n)
    ]


def _train(net: nn.Module, opt: torch.optim.Optimizer, batches, penalty=None) -> list[list]:
    """Plain training loop; returns a snapshot of the parameters after every step."""
    snapshots = []
    for x, y in batches:
        loss = F.cross_entropy(net(x), y)
        if penalty is not None:
            loss = loss + penalty.extra_loss(net)
        opt.zero_grad()
        loss.backward()
        opt.step()
        snapshots.append([p.detach().clone() for p in net.parameters()])
    return snapshots


# ----------------------------------------------------------------------------- penalties


def test_penalties_sum_over_weights_only_by_default() -> None:
    net = _net()
    conv_w, lin_w = net[0].weight, net[4].weight
    assert_close(l1_penalty(net), conv_w.abs().sum() + lin_w.abs().sum())
    assert_close(l2_penalty(net), conv_w.pow(2).sum() + lin_w.pow(2).sum())
    everything = list(net.parameters())
    assert_close(l1_penalty(net, include_bias=True), sum(p.abs().sum() for p in everything))
    assert_close(l2_penalty(net, include_bias=True), sum(p.pow(2).sum() for p in everything))
    assert [id(p) for p in penalized_parameters(net)] == [id(conv_w), id(lin_w)]


def test_penalty_gradients_are_sign_and_two_w() -> None:
    net = _net()
    l2_penalty(net).backward()
    assert_close(net[4].weight.grad, 2 * net[4].weight.detach())
    assert net[4].bias.grad is None and net[1].weight.grad is None  # not penalized
    net.zero_grad()
    l1_penalty(net).backward()
    assert_close(net[0].weight.grad, torch.sign(net[0].weight.detach()))


def test_penalties_skip_our_batchnorm_and_count_shared_weights_once() -> None:
    lin = nn.Linear(4, 4)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert_close(l2_penalty(shared), lin.weight.pow(2).sum())
    assert len(penalized_parameters(shared, include_bias=True)) == 2
    bn = nn.Sequential(nn.Conv2d(1, 2, 1), BatchNorm2d(2))
    assert penalized_parameters(bn) == [bn[0].weight]
    assert_close(l1_penalty(nn.ReLU()), torch.tensor(0.0))


@pytest.mark.parametrize("hook", [L1, L2])
@pytest.mark.parametrize("lam", [-0.1, float("nan"), float("inf")])
def test_negative_or_non_finite_lambda_raises(hook, lam: float) -> None:
    with pytest.raises(ValueError, match=rf"Invalid lambda: {lam!r} \(must be >= 0\)"):
        hook(lam)


def test_hooks_add_lambda_times_penalty() -> None:
    net = _net()
    assert_close(L1(0.3).extra_loss(net), 0.3 * l1_penalty(net))
    assert_close(L2(0.3).extra_loss(net), 0.3 * l2_penalty(net))
    all_l2 = l2_penalty(net, include_bias=True)
    assert_close(L2(0.3, include_bias=True).extra_loss(net), 0.3 * all_l2)
    assert L2(0).extra_loss(net) is None


# ----------------------------------------------------------------------------- weight decay


def test_decay_param_groups_split_weights_from_biases_and_norm_params() -> None:
    net = _net()
    groups = decay_param_groups(net, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(net[0].weight), id(net[4].weight)}
    assert {id(p) for p in groups[1]["params"]} == {
        id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[4].bias)
    }
    assert decay_param_groups(nn.Linear(2, 2, bias=False), 0.1)[0]["weight_decay"] == 0.1
    assert len(decay_param_groups(nn.Linear(2, 2, bias=False), 0.1)) == 1
    with pytest.raises(ValueError, match=r"Invalid weight_decay value: -1 \(must be >= 0\)"):
        decay_param_groups(net, -1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_with_l2_equals_sgd_weight_decay_two_lambda_step_for_step(momentum: float) -> None:
    lam, lr, steps = 0.05, 0.1, 6
    batches = _batches(steps, dtype=torch.float64)
    a, b, c = (_net(dtype=torch.float64) for _ in range(3))
    with_l2 = _train(a, torch.optim.SGD(a.parameters(), lr=lr, momentum=momentum), batches, L2(lam))
    with_wd = _train(
        b, torch.optim.SGD(decay_param_groups(b, 2 * lam), lr=lr, momentum=momentum), batches
    )
    for step_a, step_b in zip(with_l2, with_wd):
        for pa, pb in zip(step_a, step_b):
            assert_close(pa, pb)
    # The factor 2 matters: weight_decay = lam is a different (weaker) regularizer.
    half = _train(c, torch.optim.SGD(decay_param_groups(c, lam), lr=lr, momentum=momentum), batches)
    assert not torch.allclose(half[-1][0], with_l2[-1][0])


def test_sgd_with_l2_hook_in_fit_equals_weight_decay_in_fit(digits) -> None:
    lam, lr = 1e-3, 0.05
    a = build_model(digits.input_shape, digits.num_classes, seed=0, width=4, hidden=16)
    b = build_model(digits.input_shape, digits.num_classes, seed=0, width=4, hidden=16)
    fit(a, digits, epochs=1, lr=lr, hooks=[L2(lam, include_bias=True)], progress=False)
    fit(b, digits, epochs=1, lr=lr, weight_decay=2 * lam, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert_close(pa, pb, rtol=1e-4, atol=1e-5)


def test_adam_with_l2_is_coupled_decay_not_adamw() -> None:
    lam, lr, steps = 0.05, 0.01, 6
    batches = _batches(steps, dtype=torch.float64)
    a, b, c = (_net(dtype=torch.float64) for _ in range(3))
    adam_l2 = _train(a, torch.optim.Adam(a.parameters(), lr=lr), batches, L2(lam))
    adam_wd = _train(b, torch.optim.Adam(decay_param_groups(b, 2 * lam), lr=lr), batches)
    adamw = _train(c, torch.optim.AdamW(decay_param_groups(c, 2 * lam), lr=lr), batches)
    for pa, pb in zip(adam_l2[-1], adam_wd[-1]):  # Adam's weight_decay is the L2 penalty...
        assert_close(pa, pb)
    weights = [0, 4]  # ...but AdamW's decoupled decay is not: the weights end up elsewhere
    for i in weights:
        diff = (adam_l2[-1][i] - adamw[-1][i]).abs().max()
        assert diff > 1e-3, f"parameter {i}: Adam+L2 and AdamW differ by only {float(diff)}"


def test_l1_makes_more_weights_near_zero_than_l2_at_equal_loss(digits) -> None:
    """Softmax regression on digits: with strengths that give the same training cross-entropy
    (within 10%), L1 leaves several times more weights near zero than L2."""

    def train(hook) -> tuple[float, float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        fit(model, digits, epochs=30, lr=0.05, hooks=[hook], progress=False)
        data_loss = evaluate(model, *digits.train)[0]  # cross-entropy without the penalty
        return data_loss, weight_stats(model)["frac_near_zero"]

    loss_l1, sparse_l1 = train(L1(1e-2))
    loss_l2, sparse_l2 = train(L2(2e-2))
    assert abs(loss_l1 - loss_l2) < 0.1 * loss_l2
    assert sparse_l1 > 3 * sparse_l2
    assert sparse_l1 > 0.05


# ----------------------------------------------------------------------------- weight_stats


def test_weight_stats_values_and_json() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[0.0, -0.0005], [2.0, -3.0]]))
    stats = weight_stats(net)
    assert stats == {
        "l1": pytest.approx(5.0005),
        "l2": pytest.approx(13.00000025),
        "l2_norm": pytest.approx(13.00000025**0.5),
        "abs_max": 3.0,
        "frac_near_zero": 0.5,
        # init_std of a 2-input layer: 1 / sqrt(3 * 2) = 0.408; 1% of it is 0.00408, so 0.0
        # and -0.0005 are below it, 2 and -3 are not
        "frac_below_init": 0.5,
        "frac_zero": 0.25,
        "count": 4,
    }
    assert json.loads(json.dumps(stats)) == stats
    assert stats["l1"] == pytest.approx(float(l1_penalty(net).detach()))
    assert weight_stats(net, include_bias=True)["count"] == 4 + 2 + 2 + 2
    assert weight_stats(nn.ReLU())["count"] == 0


def test_weight_stats_relative_threshold_is_per_layer() -> None:
    """Two layers of very different initial scale: the same |w| is below 1% of the wide
    layer's scale and above 1% of the narrow one's."""
    net = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(3000, 1, bias=False))
    with torch.no_grad():
        net[0].weight.fill_(0.004)  # 1% of 1/sqrt(9) = 0.00333: above
        net[1].weight.fill_(0.0001)  # 1% of 1/sqrt(9000) = 0.000105: below
    stats = weight_stats(net)
    assert stats["frac_below_init"] == pytest.approx(3000 / 3003)
    assert stats["frac_zero"] == 0.0
    assert weight_stats(net, relative_threshold=2.0)["frac_below_init"] == 1.0
    with pytest.raises(ValueError, match="relative_threshold"):
        weight_stats(net, relative_threshold=0)


def test_init_std_is_pytorchs_default_initialization() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        conv, lin = nn.Conv2d(16, 32, 3), nn.Linear(400, 300)
    assert init_std(conv.weight) == pytest.approx(1 / (3 * 16 * 9) ** 0.5)
    assert init_std(lin.weight) == pytest.approx(1 / (3 * 400) ** 0.5)
    for w in (conv.weight, lin.weight):  # the drawn weights have that std (4,608 and 120,000)
        assert float(w.detach().std()) == pytest.approx(init_std(w), rel=0.05)
    with pytest.raises(ValueError, match="ndim"):
        init_std(lin.bias)


# ----------------------------------------------------------------------------- proximal L1


def test_soft_threshold_by_hand() -> None:
    w = torch.tensor([-1.0, -0.3, -0.1, 0.0, 0.05, 0.2, 0.7])
    # a = 0.2: |w| <= 0.2 becomes 0, the rest moves 0.2 towards zero
    expected = torch.tensor([-0.8, -0.1, 0.0, 0.0, 0.0, 0.0, 0.5])
    assert_close(soft_threshold(w, 0.2), expected)
    assert_close(soft_threshold(w, 0.0), w)
    with pytest.raises(ValueError, match="amount"):
        soft_threshold(w, -0.1)


def test_soft_threshold_is_the_proximal_operator_of_l1() -> None:
    """prox(v) = argmin_w a|w| + (w - v)^2 / 2, checked by brute force on a grid."""
    a, grid = 0.3, torch.linspace(-2, 2, 40001, dtype=torch.float64)
    for v in (-1.2, -0.25, 0.0, 0.1, 0.31, 1.5):
        objective = a * grid.abs() + (grid - v) ** 2 / 2
        best = float(grid[objective.argmin()])
        assert float(soft_threshold(torch.tensor(v, dtype=torch.float64), a)) == \
            pytest.approx(best, abs=1e-4)


def test_proximal_l1_thresholds_weights_after_each_step() -> None:
    """One SGD step, then the hook: the weights equal soft_threshold(SGD's weights, lr * lam);
    biases and BN parameters are untouched; weights become exactly zero."""
    lam, lr = 0.5, 0.1
    a, b = _net(), _net()
    (x, y), = _batches(1)
    for net in (a, b):
        F.cross_entropy(net(x), y).backward()
        torch.optim.SGD(net.parameters(), lr=lr).step()
    ProximalL1(lam, lr).after_step(a)
    weights = {id(p) for p in penalized_parameters(a)}
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert_close(pa, soft_threshold(pb, lr * lam) if id(pa) in weights else pb)
    assert weight_stats(a)["frac_zero"] > 0.05
    assert weight_stats(b)["frac_zero"] == 0.0
    for bad in ({"lam": -1.0, "lr": 0.1}, {"lam": 0.1, "lr": 0.0}):
        with pytest.raises(ValueError, match="Invalid"):
            ProximalL1(**bad)


def test_proximal_l1_gives_exact_zeros_where_the_subgradient_does_not(digits) -> None:
    """Softmax regression on digits with the same lam: the subgradient leaves no weight exactly
    zero, the proximal step leaves many."""

    def train(hook) -> dict:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        fit(model, digits, epochs=10, lr=0.05, hooks=[hook], progress=False)
        return weight_stats(model)

    sub, prox = train(L1(1e-2)), train(ProximalL1(1e-2, lr=0.05 / (1 - 0.9)))
    assert sub["frac_zero"] == 0.0
    assert prox["frac_zero"] > 0.3  # 0.71 when written
