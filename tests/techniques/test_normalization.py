"""Batch normalization from scratch, checked against torch.nn.BatchNorm2d / F.batch_norm."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlab.models import SmallCNN
from cnnlab.techniques import BatchNorm2d, activation_stats, batch_norm


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5, 5), (2, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_functional_batch_norm(shape: tuple[int, ...], training: bool) -> None:
    g = _gen(0)
    x = 3 * torch.randn(shape, generator=g) + 1
    gamma, beta = torch.randn(3, generator=g), torch.randn(3, generator=g)
    rm, rv = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5
    rm_ref, rv_ref, rv_before = rm.clone(), rv.clone(), rv.clone()
    out = batch_norm(x, gamma, beta, rm, rv, training=training, momentum=0.3, eps=1e-3)
    ref = F.batch_norm(x, rm_ref, rv_ref, gamma, beta, training=training, momentum=0.3, eps=1e-3)
    assert_close(out, ref)
    assert_close(rm, rm_ref)
    assert_close(rv, rv_ref)
    assert torch.equal(rv, rv_before) is not training  # updated in place in training mode only
    if training:
        dims = [0] + list(range(2, x.ndim))
        assert_close(out.mean(dims), beta, atol=1e-5, rtol=0)  # per-channel mean is beta


def test_training_mode_normalizes_with_biased_and_tracks_unbiased_variance() -> None:
    x = torch.tensor([[[[0.0, 2.0]]], [[[4.0, 6.0]]]])  # one channel, m = 4 values
    rm, rv = torch.zeros(1), torch.ones(1)
    out = batch_norm(x, None, None, rm, rv, training=True, momentum=1.0, eps=1e-12)
    biased = torch.tensor(5.0)  # mean 3, squared deviations 9, 1, 1, 9
    assert_close(out.flatten(), (torch.tensor([0.0, 2.0, 4.0, 6.0]) - 3) / biased.sqrt())
    assert_close(rm, torch.tensor([3.0]))
    assert_close(rv, torch.tensor([20.0 / 3]))  # unbiased: 20 / (4 - 1)


def test_batchnorm2d_matches_torch_over_several_steps_in_train_and_eval() -> None:
    g = _gen(0)
    ours, ref = BatchNorm2d(4, momentum=0.2), nn.BatchNorm2d(4, momentum=0.2)
    with torch.no_grad():  # non-trivial affine parameters, identical in both
        ref.weight.copy_(torch.randn(4, generator=g))
        ref.bias.copy_(torch.randn(4, generator=g))
    ours.load_state_dict(ref.state_dict())
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1)
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(4):
        for mode in ("train", "eval"):
            ours.train(mode == "train")
            ref.train(mode == "train")
            x = (2 * torch.randn(5, 4, 3, 3, generator=g) + step).requires_grad_()
            x_ref = x.detach().clone().requires_grad_()
            w = torch.randn(5, 4, 3, 3, generator=g)  # a random linear loss
            out, out_ref = ours(x), ref(x_ref)
            assert_close(out, out_ref)
            (out * w).sum().backward()
            (out_ref * w).sum().backward()
            assert_close(x.grad, x_ref.grad)
            assert_close(ours.weight.grad, ref.weight.grad)
            assert_close(ours.bias.grad, ref.bias.grad)
            opt_ours.step()
            opt_ref.step()
            opt_ours.zero_grad()
            opt_ref.zero_grad()
            assert_close(ours.running_mean, ref.running_mean)
            assert_close(ours.running_var, ref.running_var)
            assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    assert_close(ours.weight, ref.weight)
    assert not torch.equal(ref.running_mean, torch.zeros(4))  # statistics were really tracked


def test_batchnorm2d_state_dict_is_compatible_and_eval_does_not_update() -> None:
    ours, ref = BatchNorm2d(3), nn.BatchNorm2d(3)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.eval()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    ours(torch.randn(2, 3, 4, 4, generator=_gen(1)))
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_batchnorm2d_drops_into_a_network() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), BatchNorm2d(4), nn.ReLU())
    out = net(torch.randn(8, 1, 6, 6, generator=_gen(2)))
    assert out.shape == (8, 4, 6, 6)
    assert "BatchNorm2d(4, eps=1e-05, momentum=0.1)" in repr(net)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_features": 0}, r"Invalid num_features: 0 \(must be a positive int\)"),
        ({"num_features": 3, "eps": 0}, r"Invalid eps: 0 \(must be > 0\)"),
        ({"num_features": 3, "momentum": 1.5}, r"Invalid momentum: 1.5 \(must be in \[0, 1\]\)"),
    ],
)
def test_batchnorm2d_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchNorm2d(**kwargs)


def test_batch_norm_input_errors() -> None:
    bn = BatchNorm2d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="Expected 4-D input"):
        bn(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"Invalid gamma shape: \(2,\) \(expected \(3,\)\)"):
        batch_norm(torch.randn(4, 3), torch.ones(2), None, None, None, training=True)
    with pytest.raises(ValueError, match="Eval mode needs running_mean"):
        batch_norm(torch.randn(4, 3), None, None, None, None, training=False)


# ----------------------------------------------------------------------------- activation_stats


def test_activation_stats_reports_each_layer_and_leaves_the_model_unchanged() -> None:
    g = _gen(3)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), BatchNorm2d(4), nn.ReLU())
    x = 5 * torch.randn(16, 1, 6, 6, generator=g) + 2
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stats = activation_stats(net, x)  # training mode: BN normalizes with the batch statistics
    assert [s["type"] for s in stats] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert [s["name"] for s in stats] == ["0", "1", "2"]
    conv_out = net[0](x).detach()
    assert stats[0]["mean"] == pytest.approx(float(conv_out.mean()), rel=1e-5)
    assert stats[0]["std"] == pytest.approx(float(conv_out.std()), rel=1e-5)
    assert stats[1]["mean"] == pytest.approx(0.0, abs=1e-5)
    assert stats[1]["std"] == pytest.approx(1.0, abs=1e-2)
    assert stats[1]["shape"] == [16, 4, 6, 6]
    assert json.loads(json.dumps(stats)) == stats
    for k, v in net.state_dict().items():  # running statistics restored
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks for m in net.modules())  # hooks removed


def test_activation_stats_sees_torch_batchnorm_in_small_cnn() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = SmallCNN(1, 10, input_size=8, width=4, hidden=8, batch_norm=True).eval()
    stats = activation_stats(net, torch.randn(4, 1, 8, 8, generator=_gen(4)))
    # SmallCNN's ReLUs are modules, so they are reported too (in call order)
    assert [s["name"] for s in stats] == ["conv1", "bn1", "act1", "conv2", "bn2", "act2", "act3"]
    assert not net.training
