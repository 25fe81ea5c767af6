import math

import pytest
import torch
from torch import nn

from cnnlab.models import build_model
from cnnlab.train import CosineLR, History, Hook, evaluate, fit, make_optimizer, progress_enabled


def small(digits, **kw):
    return build_model(digits.input_shape, digits.num_classes, seed=0, width=8, **kw)


def test_fit_learns_digits(digits):
    hist = fit(small(digits, batch_norm=True), digits, epochs=3, lr=0.05)
    assert hist.test_acc > 0.9
    assert len(hist.train_loss) == len(hist.val_acc) == len(hist.epoch_time) == 3
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert not hist.diverged and hist.steps == 3 * math.ceil(len(digits.train[1]) / 64)


def test_same_seed_same_history_with_dropout(digits):
    a = fit(small(digits, dropout=0.5), digits, epochs=2, lr=0.05, seed=3)
    b = fit(small(digits, dropout=0.5), digits, epochs=2, lr=0.05, seed=3)
    c = fit(small(digits, dropout=0.5), digits, epochs=2, lr=0.05, seed=4)
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc and a.test_acc == b.test_acc
    assert a.train_loss != c.train_loss


def test_fit_restores_the_callers_rng(digits):
    torch.manual_seed(7)
    state = torch.random.get_rng_state()
    fit(small(digits, dropout=0.3), digits, epochs=1, lr=0.05)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_divergence_is_reported_not_raised(digits):
    hist = fit(small(digits), digits, epochs=5, lr=1e4)
    assert hist.diverged
    assert len(hist.train_loss) == 1  # stopped in the first epoch
    assert hist.steps < math.ceil(len(digits.train[1]) / 64)  # ... at the first bad step
    assert 0.0 <= hist.test_acc <= 0.3


class Recorder(Hook):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, model, optimizer):
        self.calls.append("start")

    def transform_batch(self, x, y, generator):
        self.calls.append("batch")
        return x, y

    def extra_loss(self, model):
        self.calls.append("loss")
        return torch.zeros(())

    def after_backward(self, model):
        assert all(p.grad is not None for p in model.parameters())
        self.calls.append("backward")

    def after_step(self, model):
        self.calls.append("step")

    def on_epoch_end(self, model, history):
        self.calls.append("epoch")
        return False

    def on_fit_end(self, model, history):
        self.calls.append("end")


def test_hooks_are_called_in_order(digits):
    rec = Recorder()
    hist = fit(small(digits), digits, epochs=2, lr=0.01, hooks=[rec])
    steps = hist.steps
    assert rec.calls[0] == "start" and rec.calls[-1] == "end"
    assert rec.calls[1:5] == ["batch", "loss", "backward", "step"]
    assert rec.calls.count("step") == steps and rec.calls.count("epoch") == 2


class StopAfter(Hook):
    def __init__(self, n):
        self.n = n

    def on_epoch_end(self, model, history):
        return history.epochs >= self.n


def test_a_hook_can_stop_training(digits):
    hist = fit(small(digits), digits, epochs=5, lr=0.05, hooks=[StopAfter(2)])
    assert hist.epochs == 2 and hist.stopped_early


class LrRecorder(Hook):
    """The learning rate of every step, per epoch (hooks run in list order: put it first)."""

    def __init__(self):
        self.epochs = [[]]

    def on_fit_start(self, model, optimizer):
        self.optimizer = optimizer

    def after_step(self, model):
        self.epochs[-1].append(self.optimizer.param_groups[0]["lr"])

    def on_epoch_end(self, model, history):
        self.epochs.append([])
        return False


def test_cosine_lr_lowers_the_rate_between_epochs_along_half_a_cosine(digits):
    rec, lr = LrRecorder(), 0.08
    fit(small(digits), digits, epochs=4, lr=lr, hooks=[rec, CosineLR(4)])
    rates = [sorted(set(epoch)) for epoch in rec.epochs[:-1]]  # one rate within each epoch
    assert rates == [[pytest.approx(lr * f)] for f in (1.0, (2 + 2 ** 0.5) / 4, 0.5,
                                                        (2 - 2 ** 0.5) / 4)]
    constant = LrRecorder()
    fit(small(digits), digits, epochs=2, lr=lr, hooks=[constant])
    assert {r for epoch in constant.epochs for r in epoch} == {lr}


def test_cosine_lr_scales_each_parameter_group_from_its_own_rate(digits):
    model = small(digits)
    groups = [{"params": [model.fc2.weight], "lr": 0.1},
              {"params": [p for n, p in model.named_parameters() if n != "fc2.weight"]}]
    opt = make_optimizer(groups, "sgd", lr=0.02)
    schedule = CosineLR(2)
    fit(model, digits, epochs=2, lr=0.02, optimizer=opt, hooks=[schedule])
    # after the last epoch: the rate of an epoch index 2 of 2 (zero), from each group's own start
    assert schedule.base == [0.1, 0.02] and [g["lr"] for g in opt.param_groups] == [0.0, 0.0]


@pytest.mark.parametrize("epochs", [0, -1, 2.5, True])
def test_cosine_lr_rejects_bad_epochs(epochs):
    with pytest.raises(ValueError, match=f"Invalid epochs value: {epochs!r}"):
        CosineLR(epochs)


class AddConstant(Hook):
    def extra_loss(self, model):
        return torch.tensor(10.0)


def test_extra_loss_enters_the_training_loss(digits):
    base = fit(small(digits), digits, epochs=1, lr=0.01)
    plus = fit(small(digits), digits, epochs=1, lr=0.01, hooks=[AddConstant()])
    assert plus.train_loss[0] == pytest.approx(base.train_loss[0] + 10.0, abs=1e-4)


def test_evaluate_uses_eval_mode_and_restores_it(digits):
    model = small(digits, dropout=0.9)
    model.train()
    a = evaluate(model, *digits.test)
    b = evaluate(model, *digits.test)
    assert a == b and model.training  # dropout off during evaluation, mode restored


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(epochs=0), "Invalid epochs value: 0"),
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(lr=float("nan")), "Invalid learning rate: nan"),
        (dict(batch_size=0), "Invalid batch_size value: 0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(optimizer="lion"), "Unknown optimizer: 'lion'"),
    ],
)
def test_invalid_arguments(digits, kwargs, match):
    args = dict(epochs=1, lr=0.1) | kwargs
    with pytest.raises(ValueError, match=match):
        fit(small(digits), digits, **args)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                      ("adamw", torch.optim.AdamW)])
def test_make_optimizer(name, cls):
    opt = make_optimizer(nn.Linear(2, 2).parameters(), name, lr=0.1, weight_decay=0.01)
    assert isinstance(opt, cls) and opt.defaults["weight_decay"] == 0.01


def test_a_ready_optimizer_is_used(digits):
    model = small(digits)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    before = [p.clone() for p in model.parameters()]
    fit(model, digits, epochs=1, lr=0.1, optimizer=opt)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_history_roundtrips_through_a_dict(digits):
    hist = fit(small(digits), digits, epochs=1, lr=0.05)
    again = History.from_dict(hist.to_dict())
    assert again == hist and again.train_time == pytest.approx(sum(hist.epoch_time))


def test_progress_switch(monkeypatch):
    monkeypatch.setenv("CNNLAB_PROGRESS", "0")
    assert not progress_enabled(None) and progress_enabled(True)
    monkeypatch.setenv("CNNLAB_PROGRESS", "1")
    assert progress_enabled(None) and not progress_enabled(False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_on_cuda(digits):
    model = small(digits, batch_norm=True).cuda()
    hist = fit(model, digits, epochs=2, lr=0.05)
    assert hist.test_acc > 0.85 and next(model.parameters()).is_cuda


def test_train_epoch_is_the_hand_written_loop():
    """One epoch of train_epoch equals the plain loop readers write, step for step."""
    import copy

    from cnnlab.train import History, hook_stages, train_epoch

    torch.manual_seed(0)
    x, y = torch.randn(50, 1, 8, 8), torch.randint(0, 10, (50,))
    model = build_model((1, 8, 8), 10, seed=0, width=4)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    history = History()
    loss, acc = train_epoch(model, opt, x, y, batch_size=16, stages=hook_stages(()),
                            gen=torch.Generator().manual_seed(3), history=history)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(3))
    total, hits = 0.0, 0
    for i in range(0, 50, 16):
        xb, yb = x[perm[i:i + 16]], y[perm[i:i + 16]]
        out = ref(xb)
        step_loss = torch.nn.functional.cross_entropy(out, yb)
        ref_opt.zero_grad()
        step_loss.backward()
        ref_opt.step()
        total += float(step_loss.detach()) * len(yb)
        hits += int((out.argmax(1) == yb).sum())
    assert history.steps == 4 and not history.diverged
    assert loss == pytest.approx(total / 50, rel=1e-6) and acc == hits / 50
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b)


def test_train_epoch_stops_at_a_non_finite_loss():
    from cnnlab.train import History, hook_stages, train_epoch

    class Explode:
        def extra_loss(self, model):
            return torch.tensor(float("inf"))

    model = build_model((1, 8, 8), 10, seed=0, width=4)
    history = History()
    train_epoch(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.randn(64, 1, 8, 8),
                torch.randint(0, 10, (64,)), batch_size=8, gen=torch.Generator(),
                stages=hook_stages([Explode()]), history=history)
    assert history.diverged and history.steps == 1


def test_train_eval_acc_is_the_training_split_in_eval_mode(digits):
    """The overfitting gap's training accuracy: every training image, eval mode, final weights
    (not the running accuracy of the batches as trained, with dropout on)."""
    model = small(digits, dropout=0.5)
    hist = fit(model, digits, epochs=2, lr=0.05, channels_last=False)
    _, expected = evaluate(model, *digits.train)
    assert hist.train_eval_acc == expected
    assert hist.train_eval_acc != hist.train_acc[-1]  # dropout lowers the running accuracy
    assert History.from_dict(hist.to_dict()).train_eval_acc == expected


def test_final_val_acc_scores_the_weights_training_ends_with(digits):
    """With early stopping the best weights (by validation loss) are restored: final_val_acc is
    theirs, the best epoch's validation accuracy, not the last epoch's."""
    from cnnlab.techniques.overfitting import EarlyStopping
    model = small(digits)
    hist = fit(model, digits, epochs=12, lr=0.3, hooks=[EarlyStopping(2)], channels_last=False)
    _, expected = evaluate(model, *digits.val)
    assert hist.final_val_acc == expected
    best = min(range(hist.epochs), key=lambda e: hist.val_loss[e])
    assert hist.final_val_acc == pytest.approx(hist.val_acc[best])
    plain = fit(small(digits), digits, epochs=2, lr=0.05, channels_last=False)
    assert plain.final_val_acc == plain.val_acc[-1]  # no hook: the last epoch's weights
