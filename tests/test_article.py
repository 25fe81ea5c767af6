"""The article's code (section 4): the listings fail as printed, and the runnable versions in
cnnlab.article do the wrong things the book says they do."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from cnnlab.article import (
    CNN,
    LISTING_BUGS,
    LISTINGS,
    ArticleDropoutOptimizer,
    ArticleL2Regularization,
    ArticleWeightClip,
    build_article_cnn,
    listing_failures,
    run_listing,
    split_listing,
)
from cnnlab.data import load_dataset
from cnnlab.techniques import L2, clip_weights_
from cnnlab.train import evaluate, fit

SEED_ARTICLE = Path(
    os.environ.get(
        "CNNLAB_SOURCE_ARTICLE",
        Path(__file__).resolve().parents[2] / "shared" / "seed" / "source-article.zh.md",
    )
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP contention on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, val_size=143)  # pinned: the collapse test uses it


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _net(seed: int = 0) -> nn.Sequential:
    """A conv + linear net with N(0, 1) weights: most |w| are far above 0.01."""
    g = _gen(seed)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 3 * 3, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return net


def _loss(net: nn.Module, scale: float = 1.0, seed: int = 1) -> torch.Tensor:
    g = _gen(seed)
    x, y = torch.randn(4, 1, 5, 5, generator=g), torch.randint(0, 3, (4,), generator=g)
    return scale * F.cross_entropy(net(x), y)


def _backward(net: nn.Module, scale: float = 1.0) -> None:
    net.zero_grad()
    _loss(net, scale).backward()


# ----------------------------------------------------------------------------- the listings


@pytest.mark.skipif(not SEED_ARTICLE.is_file(), reason="the source article is not at hand")
def test_listings_are_the_articles_code_blocks_verbatim() -> None:
    blocks = re.findall(r"```python\n(.*?)```", SEED_ARTICLE.read_text(encoding="utf-8"), re.DOTALL)
    assert [LISTINGS[k] for k in ("4.1", "4.2", "4.3", "4.4", "4.5")] == blocks


@pytest.mark.parametrize(
    ("name", "marker"),
    [
        ("4.1", "class WeightClip(optim.Optimizer):"),
        ("4.2", "class L2Regularization(optim.Optimizer):"),
        ("4.3", "x = F.batch_norm2d(x)"),
        ("4.4", "p.data = F.dropout(p.data, p=self.p, training=self.train)"),
        ("4.5", "super(CNN, self).__init()"),
    ],
)
def test_listings_are_valid_python_and_split_into_definitions_and_driver(
    name: str, marker: str
) -> None:
    text = LISTINGS[name]
    compile(text, name, "exec")  # syntactically fine: every failure is at run time
    assert marker in text
    assert "nn.Linear(64 * 16 * 16, 128)" in text and "import torch.nn.functional" not in text
    definitions, driver = split_listing(name)
    assert definitions + driver == text
    assert driver.startswith("# 创建一个") and "class " not in driver


@pytest.mark.parametrize("name", sorted(LISTINGS))
def test_every_listing_as_printed_fails_on_the_undefined_model(name: str) -> None:
    exc = run_listing(name)
    assert isinstance(exc, NameError)
    assert str(exc) == "name 'model' is not defined"


FRAGMENTS = [  # one per LISTING_BUGS entry, in order: what the exception says
    "name 'model' is not defined",
    "name 'F' is not defined",
    "shape '[-1, 16384]' is invalid for input of size 8192",
    "missing 1 required positional argument: 'defaults'",
    "1D tensors expected, but got 2D and 2D tensors",
    "missing 1 required positional argument: 'defaults'",
    "has no attribute 'batch_norm2d'",
    "'super' object has no attribute '_CNN__init'",
    "missing 1 required positional argument: 'defaults'",
    "'super' object has no attribute '_CNN__init'",
]


@pytest.mark.parametrize(
    ("bug", "fragment"),
    list(zip(LISTING_BUGS, FRAGMENTS, strict=True)),
    ids=[f"{b.listing}-{b.raises}-{i}" for i, b in enumerate(LISTING_BUGS)],
)
def test_each_listing_bug_raises_the_named_exception(bug, fragment: str) -> None:
    exc = bug.run()
    assert type(exc).__name__ == bug.raises
    assert fragment in str(exc)


def test_the_flatten_bug_silently_merges_four_images_into_one_row() -> None:
    box: dict = {}
    code = "box['out'] = CNN()(torch.randn(4, 3, 32, 32))\n"
    assert run_listing("4.1", code, F=F, box=box) is None
    assert box["out"].shape == (1, 10)  # 4 images in, 1 prediction out


def test_the_driver_runs_once_its_missing_names_are_supplied() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    names = {"model": net, "inputs": torch.randn(5, 3, 2, 2, generator=_gen(0)),
             "labels": torch.arange(5), "F": F}
    before = net[1].weight.detach().clone()
    assert run_listing("4.5", **names) is None  # the SGD training loop itself is fine
    assert not torch.equal(net[1].weight, before)


def test_run_listing_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown listing: '4.6'"):
        run_listing("4.6")


# ----------------------------------------------------------------------------- CNN


def test_cnn_is_the_listings_network_where_the_listing_is_right() -> None:
    """On 64x64 inputs the printed 64 * 16 * 16 happens to be right: there both agree exactly."""
    box: dict = {}
    assert run_listing("4.1", "box['CNN'] = CNN\n", F=F, box=box) is None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        printed = box["CNN"]()
    ours = CNN(3, 10, 64)
    ours.load_state_dict(printed.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=_gen(0))
    assert_close(ours(x), printed(x))


SIZES = [((3, 32, 32), 64 * 8 * 8), ((1, 28, 28), 64 * 7 * 7), ((1, 8, 8), 64 * 2 * 2)]


@pytest.mark.parametrize(("shape", "flat"), SIZES)
def test_cnn_runs_on_any_input_size(shape: tuple[int, int, int], flat: int) -> None:
    net = build_article_cnn(shape, 10, seed=0)
    assert net.flat_features == flat
    assert net(torch.randn(5, *shape, generator=_gen(1))).shape == (5, 10)
    with pytest.raises(ValueError, match="Invalid input_size"):
        CNN(1, 10, 3)


def test_build_article_cnn_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = build_article_cnn((1, 8, 8), 10, seed=3), build_article_cnn((1, 8, 8), 10, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


# ----------------------------------------------------------------------------- WeightClip (4.1)


def test_article_weight_clip_leaves_weights_unclipped_when_gradients_are_small() -> None:
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    _backward(net, scale=1e-6)  # every gradient norm is far below max_norm
    assert max(float(p.grad.norm()) for p in net.parameters()) < 0.01
    ArticleWeightClip(net.parameters(), max_norm=0.01).step()
    for p, b in zip(net.parameters(), before):
        assert torch.equal(p.detach(), b)  # not clipped, and not trained either
    assert max(float(p.detach().abs().max()) for p in net.parameters()) > 1.0
    clip_weights_(net, 0.01)  # weight clipping proper clips regardless of the gradient
    assert max(float(p.detach().abs().max()) for p in net.parameters()) <= 0.01


def test_article_weight_clip_clips_only_tensors_with_a_large_gradient() -> None:
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    _backward(net)
    big = [float(p.grad.norm()) > 0.5 for p in net.parameters()]
    assert any(big) and not all(big)
    ArticleWeightClip(net.parameters(), max_norm=0.5).step()
    for p, b, is_big in zip(net.parameters(), before, big):
        expected = b.clamp(-0.5, 0.5) if is_big else b
        assert torch.equal(p.detach(), expected)


def test_article_weight_clip_adds_grad_dot_w_to_the_closure_loss() -> None:
    net = _net()

    def closure() -> torch.Tensor:
        net.zero_grad()
        loss = _loss(net)
        loss.backward()
        return loss

    plain = float(_loss(net).detach())
    returned = ArticleWeightClip(net.parameters(), max_norm=100.0).step(closure)
    extra = sum(float((p.grad * p.detach()).sum()) for p in net.parameters())
    assert float(returned.detach()) == pytest.approx(plain + extra, rel=1e-5)
    assert abs(extra) > 1e-3  # so the returned "loss" is not the loss


# ----------------------------------------------------------------------------- L2 (4.2)


def test_article_l2_update_is_its_formula_and_not_the_l2_gradient_step() -> None:
    lr, wd = 0.1, 0.01
    art, ref = _net(), _net()
    w0 = [p.detach().clone() for p in art.parameters()]
    _backward(art)
    grads = [p.grad.clone() for p in art.parameters()]
    ArticleL2Regularization(art.parameters(), lr=lr, weight_decay=wd).step()
    for p, w, g in zip(art.parameters(), w0, grads):  # w - lr*g - wd*||w||/||g||*w
        assert_close(p.detach(), w - lr * g - wd * w.norm() / g.norm() * w)
    # SGD on L + wd*||w||^2 would take w - lr*(g + 2*wd*w): a different point
    opt = torch.optim.SGD(ref.parameters(), lr=lr)
    opt.zero_grad()
    (_loss(ref) + L2(wd, include_bias=True).extra_loss(ref)).backward()
    opt.step()
    for p, q in zip(art.parameters(), ref.parameters()):
        assert not torch.allclose(p, q, rtol=1e-3, atol=1e-4)


def test_article_l2_decay_grows_as_the_gradient_shrinks_and_divides_by_zero() -> None:
    lr, wd = 0.1, 0.01

    def decay_term(scale: float) -> torch.Tensor:
        net = _net()
        w = net[2].weight.detach().clone()
        _backward(net, scale)
        g = net[2].weight.grad.clone()
        ArticleL2Regularization(net.parameters(), lr=lr, weight_decay=wd).step()
        return (w - lr * g) - net[2].weight.detach()  # the part of the step that is "decay"

    ratio = decay_term(1e-3).norm() / decay_term(1.0).norm()
    assert float(ratio) == pytest.approx(1e3, rel=1e-3)  # 1000x smaller gradient, 1000x more decay

    net = _net()
    _backward(net)
    net[2].weight.grad.zero_()  # e.g. a layer behind dead ReLUs
    ArticleL2Regularization(net.parameters(), lr=lr, weight_decay=wd).step()
    assert not torch.isfinite(net[2].weight).any()


def test_article_l2_without_decay_is_plain_sgd() -> None:
    art, ref = _net(), _net()
    _backward(art)
    _backward(ref)
    ArticleL2Regularization(art.parameters(), lr=0.1, weight_decay=0.0).step()
    torch.optim.SGD(ref.parameters(), lr=0.1).step()
    for p, q in zip(art.parameters(), ref.parameters()):
        assert_close(p, q)


# ----------------------------------------------------------------------------- Dropout (4.4)


def test_article_dropout_optimizer_zeroes_weights_for_good_and_doubles_the_rest() -> None:
    g = _gen(0)
    w = nn.Parameter(torch.randn(20_000, generator=g))
    w0 = w.detach().clone()
    opt = ArticleDropoutOptimizer([w], p=0.5)
    zero_before = torch.zeros_like(w0, dtype=torch.bool)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for k in range(1, 5):
            w.grad = torch.randn(w.shape, generator=g)  # gradients are ignored
            opt.step()
            zero = w.detach() == 0
            assert zero[zero_before].all()  # once zero, zero forever
            frac = float(zero.float().mean())
            expected = 1 - 0.5**k
            assert abs(frac - expected) < 5 * math.sqrt(expected * (1 - expected) / w.numel())
            assert_close(w.detach()[~zero], w0[~zero] * 2**k)  # survivors doubled each step
            zero_before = zero


def test_article_dropout_optimizer_collapses_a_trained_model(digits) -> None:
    model = build_article_cnn(digits.input_shape, digits.num_classes, seed=0)
    fit(model, digits, epochs=2, lr=0.05, progress=False)
    acc_trained = evaluate(model, *digits.test)[1]
    assert acc_trained > 0.8
    opt = ArticleDropoutOptimizer(model.parameters(), p=0.5, train=True)
    x, y = digits.train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for i in range(8):  # eight "training" steps on mini-batches of 64
            opt.zero_grad()
            F.cross_entropy(model(x[64 * i : 64 * (i + 1)]), y[64 * i : 64 * (i + 1)]).backward()
            opt.step()
    acc_after = evaluate(model, *digits.test)[1]
    assert acc_after < 0.3  # chance is 0.1
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    assert zeros / sum(p.numel() for p in model.parameters()) > 0.99  # 1 - 0.5**8 = 0.996


def test_article_dropout_optimizer_with_train_false_raises_as_printed() -> None:
    opt = ArticleDropoutOptimizer(_net().parameters(), p=0.5, train=False)
    with pytest.raises(UnboundLocalError):
        opt.step()


def test_listing_failures_lists_the_printed_failure_then_each_bug() -> None:
    failures = listing_failures("4.4")
    bugs = [b for b in LISTING_BUGS if b.listing == "4.4"]
    assert [what for what, _ in failures] == ["as printed"] + [b.what for b in bugs]
    assert isinstance(failures[0][1], NameError)
    assert [type(exc).__name__ for _, exc in failures[1:]] == [b.raises for b in bugs]
    with pytest.raises(ValueError, match="Unknown listing: '9.9'"):
        listing_failures("9.9")
