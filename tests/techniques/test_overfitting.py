"""Early stopping (scripted validation curves and a real fit), batch augmentation (checked
against torchvision's own flip, against shift semantics, and for reproducibility), and the bound on
memorized noisy labels (by hand, and against counts on random predictions), and the label-noise
regime (its exact configuration, and that a network trained in it memorizes)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from cnnlab.cache import cache_key
from cnnlab.config import RunConfig
from cnnlab.data import noisy_labels
from cnnlab.experiments import load_for, run
from cnnlab.models import build_model
from cnnlab.techniques.overfitting import (
    Augmentation,
    EarlyStopping,
    memorized_at_least,
    noisy_regime,
    random_affine,
)
from cnnlab.train import History, evaluate, fit

# ----------------------------------------------------------------------------- early stopping


def _replay(hook: EarlyStopping, values: list[float], monitor: str = "val_loss"):
    """Feed ``values`` epoch by epoch; the model's weight holds the epoch number. Returns the
    model (after on_fit_end) and the epochs that ran."""
    model = nn.Linear(1, 1, bias=False)
    hook.on_fit_start(model, torch.optim.SGD(model.parameters(), lr=0.1))
    history = History()
    for epoch, value in enumerate(values, start=1):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        getattr(history, monitor).append(value)
        if hook.on_epoch_end(model, history):
            break
    hook.on_fit_end(model, history)
    return model, len(getattr(history, monitor))


def test_early_stopping_stops_after_patience_and_restores_best() -> None:
    hook = EarlyStopping(patience=2)
    model, ran = _replay(hook, [1.0, 0.8, 0.9, 0.85, 0.7, 0.6])
    assert ran == 4  # epochs 3 and 4 did not beat 0.8
    assert (hook.best_epoch, hook.best_value, hook.stopped_epoch) == (2, 0.8, 4)
    assert model.weight.item() == 2.0  # the weights of epoch 2 are back


def test_early_stopping_runs_to_the_end_when_it_keeps_improving() -> None:
    hook = EarlyStopping(patience=1)
    model, ran = _replay(hook, [1.0, 0.9, 0.8])
    assert ran == 3 and hook.stopped_epoch == 0
    assert model.weight.item() == 3.0


def test_early_stopping_min_delta_monitor_and_nan() -> None:
    hook = EarlyStopping(patience=2, min_delta=0.05)
    _, ran = _replay(hook, [1.0, 0.97, 0.96, 0.5])  # 0.97 and 0.96 are within min_delta
    assert ran == 3 and hook.best_epoch == 1
    hook = EarlyStopping(patience=1, monitor="val_acc")
    model, ran = _replay(hook, [0.5, 0.7, 0.6], monitor="val_acc")
    assert ran == 3 and hook.best_epoch == 2 and model.weight.item() == 2.0
    hook = EarlyStopping(patience=1)
    model, ran = _replay(hook, [0.5, math.nan, 0.1])  # NaN never counts as better
    assert ran == 2 and model.weight.item() == 1.0


def test_early_stopping_keeps_a_copy_not_a_view() -> None:
    hook = EarlyStopping(patience=3)
    model, _ = _replay(hook, [0.5, 0.9])
    assert hook.best_state is not None
    assert hook.best_state["weight"].item() == 1.0  # not changed by the epoch-2 update
    assert model.weight.item() == 1.0


def test_early_stopping_without_restore_leaves_the_last_weights() -> None:
    model, _ = _replay(EarlyStopping(patience=1, restore_best=False), [0.5, 0.9])
    assert model.weight.item() == 2.0


def test_early_stopping_resets_between_fits() -> None:
    hook = EarlyStopping(patience=1)
    _replay(hook, [0.1, 0.9])
    model, ran = _replay(hook, [5.0, 4.0, 3.0])  # a fresh fit: 5.0 is an improvement again
    assert ran == 3 and hook.best_epoch == 3 and model.weight.item() == 3.0


@pytest.mark.parametrize(
    "kwargs, match",
    [({"patience": 0}, "patience"), ({"patience": 1.5}, "patience"),
     ({"patience": True}, "patience"), ({"patience": 2, "monitor": "loss"}, "monitor"),
     ({"patience": 2, "min_delta": -1.0}, "min_delta")],
)
def test_early_stopping_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match} value"):
        EarlyStopping(**kwargs)


def test_early_stopping_in_fit_stops_and_restores_the_best_epoch(digits) -> None:
    model = build_model(digits.input_shape, digits.num_classes, seed=0, width=4)
    # min_delta is huge: only the first epoch counts as an improvement, so with patience 2
    # training stops after epoch 3 and the weights of epoch 1 come back.
    hook = EarlyStopping(patience=2, min_delta=1e9)
    hist = fit(model, digits, epochs=10, lr=0.05, seed=0, hooks=[hook], progress=False)
    assert hist.epochs == 3 and hist.stopped_early
    assert hook.best_epoch == 1
    val_loss, val_acc = evaluate(model, *digits.val)
    assert val_loss == pytest.approx(hist.val_loss[0], rel=1e-5)
    assert val_acc == pytest.approx(hist.val_acc[0])


# ----------------------------------------------------------------------------- augmentation


def _images(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Normalized-looking images: background -0.4, a random bright blob in the middle."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 1, size, size), -0.4)
    x[:, :, 4:8, 4:8] = 1.0 + torch.rand(n, 1, 4, 4, generator=g)
    return x


def test_random_affine_is_reproducible_from_the_generator_alone() -> None:
    x = _images()
    a = random_affine(x, torch.Generator().manual_seed(3))
    state = torch.get_rng_state()
    b = random_affine(x, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not touched
    c = random_affine(x, torch.Generator().manual_seed(4))
    assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype


def test_random_affine_without_motion_is_the_identity() -> None:
    x = _images()
    out = random_affine(x, torch.Generator().manual_seed(0), translate=0.0, degrees=0.0)
    assert_close(out, x)


def test_random_affine_fills_with_the_background_not_zero() -> None:
    x = _images(n=16)
    out = random_affine(x, torch.Generator().manual_seed(1), translate=0.3, degrees=30.0,
                        groups=None)
    assert_close(out.amin(dim=(1, 2, 3)), x.amin(dim=(1, 2, 3)))  # no pixel darker than before
    assert_close(out[:, :, 0, 0], torch.full((16, 1), -0.4))  # corners stay background


def test_random_affine_shifts_stay_within_translate() -> None:
    size, translate = 12, 0.2
    x = torch.zeros(32, 1, size, size)
    x[:, :, 6, 6] = 1.0  # one bright pixel in the middle
    out = random_affine(x, torch.Generator().manual_seed(2), translate=translate, degrees=0.0,
                        groups=None)
    grid = torch.arange(size, dtype=torch.float32)
    mass = out.sum(dim=(1, 2, 3))  # (N,)
    cy = (out.sum(dim=3)[:, 0] * grid).sum(1) / mass  # centre of mass, rows
    cx = (out.sum(dim=2)[:, 0] * grid).sum(1) / mass  # centre of mass, columns
    bound = translate * size + 1e-4
    assert ((cx - 6).abs() <= bound).all() and ((cy - 6).abs() <= bound).all()
    assert ((cx - 6).abs() > 0.5).any()  # it does move
    assert_close(mass, torch.ones(32), atol=1e-4, rtol=0)  # bilinear shifts keep the mass


def test_random_affine_groups_share_a_draw_and_none_draws_per_image() -> None:
    x = _images(n=1).expand(8, -1, -1, -1).contiguous()  # 8 copies of one image
    one = random_affine(x, torch.Generator().manual_seed(0), groups=1)
    assert all(torch.equal(one[0], one[i]) for i in range(8))
    each = random_affine(x, torch.Generator().manual_seed(0), groups=None)
    distinct = {tuple(each[i].flatten().tolist()) for i in range(8)}
    assert len(distinct) == 8


def test_random_affine_hflip_matches_torchvision_flip() -> None:
    from torchvision.transforms.v2 import functional as TF

    x = torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    out = random_affine(x, torch.Generator().manual_seed(5), translate=0.0, degrees=0.0,
                        hflip=True, groups=None)
    flipped = TF.horizontal_flip(x)
    kept = [torch.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x)]
    mirrored = [torch.allclose(o, fi, atol=1e-5) for o, fi in zip(out, flipped)]
    assert all(k or m for k, m in zip(kept, mirrored))
    assert any(kept) and any(mirrored)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"translate": 1.0}, "translate"), ({"translate": -0.1}, "translate"),
     ({"degrees": -1.0}, "degrees"), ({"groups": 0}, "groups"), ({"groups": 2.0}, "groups")],
)
def test_augmentation_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid {match} value"):
        Augmentation(**kwargs)
    with pytest.raises(ValueError, match=f"Invalid {match} value"):
        random_affine(_images(), torch.Generator(), **kwargs)


def test_augmentation_hook_keeps_labels_and_fit_stays_reproducible(digits) -> None:
    hook = Augmentation()
    x, y = digits.train[0][:10], digits.train[1][:10]
    out, labels = hook.transform_batch(x, y, torch.Generator().manual_seed(0))
    assert labels is y and out.shape == x.shape and not torch.allclose(out, x)

    def train() -> History:
        model = build_model(digits.input_shape, digits.num_classes, seed=0, width=4)
        return fit(model, digits, epochs=2, lr=0.05, seed=1, hooks=[Augmentation()],
                   progress=False)

    a, b = train(), train()
    assert a.train_loss == b.train_loss and a.test_acc == b.test_acc
    plain = fit(build_model(digits.input_shape, digits.num_classes, seed=0, width=4), digits,
                epochs=2, lr=0.05, seed=1, progress=False)
    assert plain.train_loss != a.train_loss  # the batches were transformed


# ----------------------------------------------------------------------------- memorized labels


def test_memorized_at_least_by_hand() -> None:
    assert memorized_at_least(1.0, 0.64) == pytest.approx(1.0)  # every wrong label fitted
    assert memorized_at_least(0.82, 0.64) == pytest.approx(0.18 / 0.36)
    assert memorized_at_least(0.64, 0.64) == 0.0  # fitting only the right labels is possible
    assert memorized_at_least(0.5, 0.64) == 0.0
    assert memorized_at_least(0.3, 0.0) == pytest.approx(0.3)  # every label wrong


@pytest.mark.parametrize(("acc", "right"), [(-0.1, 0.5), (1.1, 0.5), (0.5, 1.0), (0.5, -0.2),
                                            (math.nan, 0.5)])
def test_memorized_at_least_rejects_invalid_shares(acc: float, right: float) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        memorized_at_least(acc, right)


def test_memorized_at_least_bounds_the_counted_share() -> None:
    """On noisy labels and random predictions, the share of wrong labels predicted is never below
    the bound, and equals it when the predictions fit every right label."""
    gen = torch.Generator().manual_seed(0)
    true = torch.randint(10, (2000,), generator=gen)  # the true classes
    labels = noisy_labels(true, 0.4, 10, gen)
    wrong = labels != true
    n, n_wrong = len(labels), int(wrong.sum())
    right = 1 - n_wrong / n
    for keep in (0.0, 0.3, 0.7, 0.95):
        for fit_right in (True, False):
            pred = torch.randint(10, (2000,), generator=gen)  # a random guess where not kept
            pred = torch.where(torch.rand(2000, generator=gen) < keep, labels, pred)
            if fit_right:
                pred = torch.where(wrong, pred, true)
            acc = int((pred == labels).sum()) / n
            counted = int((pred == labels)[wrong].sum()) / n_wrong
            bound = memorized_at_least(acc, right)
            assert counted >= bound - 1e-9
            if fit_right:
                assert counted == pytest.approx(bound)


# ----------------------------------------------------------------------------- label-noise regime


def test_noisy_regime_is_the_configuration_the_chapters_trained() -> None:
    """The dropout and regularization chapters defined this RunConfig literally before it moved
    here; it must stay the same, field by field, or every cached run and printed number changes."""
    for dataset, val_size in (("fashion_mnist", 500), ("digits", None)):
        literal = RunConfig(dataset, train_size=500, val_size=val_size, width=16, epochs=30,
                            lr=0.05, label_noise=0.4)
        config = noisy_regime(dataset, val_size)
        assert config == literal
        assert config.to_dict() == literal.to_dict()
        assert cache_key(config, 3) == cache_key(literal, 3)
    assert noisy_regime("digits") == noisy_regime("digits", None)
    off = RunConfig().to_dict()  # every technique at its default, i.e. off
    regime = noisy_regime("fashion_mnist", 500).to_dict()
    for field in ("batch_norm", "dropout", "weight_decay", "l1", "l2", "clip_weights",
                  "clip_grad_norm", "augment", "early_stopping"):
        assert regime[field] == off[field], field


def test_noisy_regime_validates_val_size() -> None:
    with pytest.raises(ValueError, match="Invalid val_size value"):
        noisy_regime("digits", 0)


def test_noisy_regime_memorizes_wrong_labels() -> None:
    """On the offline digits (one run: ~0.5 s on one thread) the network fits far more training
    labels than are right: at least a quarter of the wrong labels learned by heart."""
    config = noisy_regime("digits")
    row = run(config, 0)
    clean = replace(config, label_noise=0.0)
    noisy_y, true_y = load_for(config, 0).train[1], load_for(clean, 0).train[1]
    right = float((noisy_y == true_y).float().mean())
    assert 0.55 < right < 0.75  # 40% replaced, a tenth of those by their own class
    assert row["train_eval_acc"] > right
    assert memorized_at_least(row["train_eval_acc"], right) > 0.25
