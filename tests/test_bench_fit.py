"""The training-loop benchmark: its loops against a hand-computed SGD step, its rates against a
controlled clock, and its printed ratios against the printed rates (no timing is asserted)."""

import copy
import math
import re
import statistics
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn
from torch.testing import assert_close

from .scripts import load_script


@pytest.fixture(scope="module")
def bench_fit():
    return load_script("benchmarks/bench_fit.py")


class FakeClock:
    """A ``time.perf_counter`` that moves only when told to (by powers of two: exact)."""

    def __init__(self, step=0.0):
        self.now, self.step = 0.0, step

    def __call__(self):
        now = self.now
        self.now += self.step
        return now

    def advance(self, seconds):
        self.now += seconds


# ----------------------------------------------------------------------------- the printed report

RATE = re.compile(r"^   (\S.*?)\s+(\d+)  \(median (\d+)\)$", re.MULTILINE)
RATIO = re.compile(r"^   fit / (.+?)\s+= (\S+)x   \((.*)\)$", re.MULTILINE)


def parse_report(out):
    """The figures of section 1 and 2 as printed: rates (best, median) per label, the ratio and
    its goal verdict per comparison, the pipeline rates and the printed 'cheaper' factors."""
    rates = {m[1]: (int(m[2]), int(m[3])) for m in RATE.finditer(out)}
    ratios = {}
    for m in RATIO.finditer(out):
        verdict = re.search(r"goal >= ([\d.]+)x?: (met|MISSED)", m[3])
        ratios[m[1]] = (float(m[2]), (float(verdict[1]), verdict[2]) if verdict else None)
    pipe_line = re.search(r"data pipeline alone, no model \(best samples/s\): (.*)$", out,
                          re.MULTILINE)[1]
    pipes = {k: int(v) for k, v in (p.rsplit(" ", 1) for p in pipe_line.split(", "))}
    cheaper = re.search(r"slicing preloaded tensors is (\d+)x cheaper than a TensorDataset "
                        r"DataLoader and (\d+)x cheaper than the tutorial pipeline", out)
    acc = re.search(r"test accuracy ([\d.]+)% \(95% CI ([-\d.]+)%-([-\d.]+)%; goal >= 98.0%: "
                    r"(met|MISSED)\)", out)
    times = re.search(r"training time per run: median ([\d.]+) s, max ([\d.]+) s \(goal <= 3 s: "
                      r"(met|MISSED)\)", out)
    return rates, ratios, pipes, cheaper, acc, times


COMPARED = {"hand-written loop": "hand-written loop", "DataLoader loop": "DataLoader, tutorial "
            "pipeline", "TensorDataset DataLoader": "DataLoader, TensorDataset"}


def ratio_bounds(a, b, decimals=2):
    """The range of a / b printed with ``decimals`` when a and b were printed as integers."""
    half = 0.5 * 10 ** -decimals
    return (a - 0.5) / (b + 0.5) - half, (a + 0.5) / (b - 0.5) + half


def check_report_is_consistent(out):
    """Every printed ratio is the ratio of the printed rates, every verdict fits its figure."""
    rates, ratios, pipes, cheaper, acc, times = parse_report(out)
    assert set(rates) == {"cnnlab fit", *COMPARED.values()}
    assert set(ratios) == set(COMPARED)
    fit_best = rates["cnnlab fit"][0]
    for compared, label in COMPARED.items():
        value, goal = ratios[compared]
        low, high = ratio_bounds(fit_best, rates[label][0])
        assert low <= value <= high, (compared, value, fit_best, rates[label])
        if goal is not None and abs(value - goal[0]) > 0.01:
            assert goal[1] == ("met" if value >= goal[0] else "MISSED")
    assert list(pipes) == ["slicing", "TensorDataset", "tutorial"]
    for got, other in zip(cheaper.groups(), ("TensorDataset", "tutorial")):
        low, high = ratio_bounds(pipes["slicing"], pipes[other], decimals=0)
        assert low <= int(got) <= high
    mean, low, high = (float(acc[i]) for i in (1, 2, 3))
    assert low <= mean <= high
    if abs(mean - 98.0) > 0.01:
        assert acc[4] == ("met" if mean >= 98.0 else "MISSED")
    median, longest = float(times[1]), float(times[2])
    assert median <= longest
    if abs(longest - 3) > 0.01:
        assert times[3] == ("met" if longest <= 3 else "MISSED")
    return rates, ratios, pipes, cheaper, acc, times


@pytest.mark.parametrize("fashion", [False, True])
def test_main_prints_the_ratios_of_the_rates_it_measured(bench_fit, digits, monkeypatch, capsys,
                                                         fashion):
    asked = {}

    def throughput(data, *, width, epochs, repeats):
        asked["throughput"] = (data.name, width, epochs, repeats)
        return {"fit": (1000.0, 900.0), "hand": (1250.0, 1000.0), "tutorial": (250.0, 240.0),
                "TensorDataset": (500.0, 480.0)}

    def pipelines(data, repeats):
        return {"slicing": 1e6, "TensorDataset": 1e5, "tutorial": 2e4}

    accs, seconds = [0.97, 0.99, 0.995], [1.0, 4.0, 2.0]

    def digits_quality(seeds, epochs):
        asked["quality"] = (seeds, epochs)
        return accs, seconds

    def fit(model, data, **kwargs):  # only section 3 trains here
        asked["fit"] = (data.name, kwargs["epochs"])
        return SimpleNamespace(epoch_time=[0.5], test_acc=0.75)

    def load_dataset(name, **kwargs):  # Fashion-MNIST stood in for by digits
        asked.setdefault("datasets", []).append((name, kwargs))
        return digits

    for name, fake in [("throughput", throughput), ("pipelines", pipelines),
                       ("digits_quality", digits_quality), ("fit", fit),
                       ("load_dataset", load_dataset), ("available", lambda name: fashion)]:
        monkeypatch.setattr(bench_fit, name, fake)
    assert bench_fit.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rates, ratios, pipes, cheaper, acc, times = check_report_is_consistent(out)
    assert asked["throughput"] == (digits.name, 8, 1, 1) and asked["quality"] == (2, 1)
    assert rates == {"cnnlab fit": (1000, 900), "hand-written loop": (1250, 1000),
                     "DataLoader, tutorial pipeline": (250, 240),
                     "DataLoader, TensorDataset": (500, 480)}
    assert ratios == {"hand-written loop": (0.8, (0.95, "MISSED")),
                      "DataLoader loop": (4.0, (2.0, "met")),
                      "TensorDataset DataLoader": (2.0, None)}
    assert pipes == {"slicing": 1000000, "TensorDataset": 100000, "tutorial": 20000}
    assert cheaper.groups() == ("10", "50")
    mean, low, high = (float(acc[i]) / 100 for i in (1, 2, 3))
    half = stats.t.ppf(0.975, 2) * statistics.stdev(accs) / math.sqrt(3)  # Student t, n - 1 = 2
    assert mean == pytest.approx(statistics.mean(accs), abs=5e-5)
    assert (low, high) == (pytest.approx(mean - half, abs=1e-4), pytest.approx(mean + half,
                                                                              abs=1e-4))
    assert acc[4] == "met" and "SmallCNN(batch_norm=True, width=32) on digits, 3 seeds" in out
    assert (float(times[1]), float(times[2]), times[3]) == (2.0, 4.0, "MISSED")
    if fashion:
        n = len(digits.train[1])
        assert asked["datasets"][-1] == ("fashion_mnist", {"train_size": 300})
        assert f"   {n} images: 0.5 s per epoch ({2 * n} samples/s), test accuracy 75.00% after " \
               "1 epoch" in out.splitlines()
    else:
        assert "   skipped: Fashion-MNIST is not on this machine" in out and "fit" not in asked


@pytest.mark.slow
def test_bench_fit_quick_prints_consistent_ratios(bench_fit, capsys):
    assert bench_fit.main(["--quick"]) == 0
    out = capsys.readouterr().out
    check_report_is_consistent(out)
    assert "3. one epoch on the full Fashion-MNIST" in out
    epoch = re.search(r"(\d+) images: ([\d.]+) s per epoch \((\d+) samples/s\)", out)
    if epoch:  # Fashion-MNIST is on this machine
        n, t, rate = int(epoch[1]), float(epoch[2]), int(epoch[3])
        assert n / (t + 0.05) - 0.5 <= rate <= (n / (t - 0.05) if t > 0.05 else math.inf) + 0.5


# ----------------------------------------------------------------------------- measuring


def test_throughput_reports_the_best_and_median_rate_of_each_loop(bench_fit, digits,
                                                                  monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(time, "perf_counter", clock)
    costs = {"fit": [0.5, 0.25, 1.0], "hand": [2.0, 1.0, 4.0], "tutorial": [8.0, 16.0, 4.0],
             "TensorDataset": [1.0, 1.0, 2.0]}  # seconds per run, one per round
    order, models, settings = [], [], []

    def cost(name, model, kwargs):
        models.append(model)
        settings.append(kwargs)
        k = order.count(name)
        order.append(name)
        return costs[name][k]

    def fit(model, data, *, progress, **kwargs):
        assert data is digits
        return SimpleNamespace(train_time=cost("fit", model, kwargs))

    def hand_loop(model, x, y, **kwargs):
        clock.advance(cost("hand", model, kwargs))

    def dataloader_loop(model, x, y, *, dataset=None, **kwargs):
        assert dataset is None or isinstance(dataset, bench_fit.TutorialImages)
        clock.advance(cost("TensorDataset" if dataset is None else "tutorial", model, kwargs))

    for name, fake in [("fit", fit), ("hand_loop", hand_loop),
                       ("dataloader_loop", dataloader_loop)]:
        monkeypatch.setattr(bench_fit, name, fake)
    rates = bench_fit.throughput(digits, width=4, epochs=2, repeats=3)
    n = 2 * len(digits.train[1])  # samples per run
    for name, seq in costs.items():
        assert rates[name] == (n / min(seq), statistics.median(n / s for s in seq))
    assert order == ["fit", "hand", "tutorial", "TensorDataset",  # the order rotates
                     "hand", "tutorial", "TensorDataset", "fit",
                     "tutorial", "TensorDataset", "fit", "hand"]
    assert len({id(m) for m in models}) == 12  # a fresh model for every run
    assert all(s == settings[0] for s in settings) and settings[0]["epochs"] == 2


def test_pipeline_rate_counts_every_sample_once(bench_fit, digits, monkeypatch):
    x, y = digits.train
    tutorial = bench_fit.TutorialImages(digits)
    monkeypatch.setattr(time, "perf_counter", FakeClock(step=0.5))  # every pipeline takes 0.5 s
    for kind in ("slicing", "TensorDataset", "tutorial"):
        assert bench_fit.pipeline_rate(kind, x, y, tutorial, batch_size=64) == len(y) / 0.5


def test_pipelines_keep_the_best_rate_of_interleaved_repeats(bench_fit, digits, monkeypatch):
    calls = []

    def pipeline_rate(kind, x, y, tutorial):
        calls.append(kind)
        return {"slicing": [3.0, 9.0, 5.0], "TensorDataset": [2.0, 1.0, 1.5],
                "tutorial": [0.5, 0.25, 0.75]}[kind][calls.count(kind) - 1]

    monkeypatch.setattr(bench_fit, "pipeline_rate", pipeline_rate)
    assert bench_fit.pipelines(digits, repeats=3) == {"slicing": 9.0, "TensorDataset": 2.0,
                                                      "tutorial": 0.75}
    assert calls == ["slicing", "TensorDataset", "tutorial"] * 3


# ----------------------------------------------------------------------------- the loops


def test_tutorial_images_reproduce_the_preloaded_tensors(bench_fit, digits):
    x, y = digits.train
    mean, std = digits.mean[0], digits.std[0]
    raw = x * std + mean  # the pixel values before normalization
    step = float(raw.max()) / 255  # one uint8 level, in raw units
    dataset = bench_fit.TutorialImages(digits)
    assert len(dataset) == len(y)
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([img for img, _ in items])
    assert images.shape == x.shape and images.dtype == torch.float32
    assert_close(images, x, atol=0.5 * step / std + 1e-5, rtol=0)  # only rounded to 256 levels
    assert [label for _, label in items] == y.tolist()
    assert all(type(label) is int for _, label in items[:10])


def sgd_with_momentum(model, x, y, *, lr, steps, momentum=0.9):
    """``steps`` full-batch SGD steps with momentum, written out: v = m v + g; p -= lr v."""
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    for _ in range(steps):
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        with torch.no_grad():
            for p, v, g in zip(params, velocity, grads):
                v.mul_(momentum).add_(g)
                p.sub_(lr * v)
    return model


@pytest.fixture()
def tiny_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (20,), generator=g)
    torch.manual_seed(0)
    return x, y, nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


@pytest.mark.parametrize("loop", ["hand_loop", "dataloader_loop"])
def test_loops_on_one_full_batch_take_plain_sgd_momentum_steps(bench_fit, tiny_problem, loop):
    x, y, model = tiny_problem
    initial = copy.deepcopy(model)
    expected = sgd_with_momentum(copy.deepcopy(model), x, y, lr=0.1, steps=2)
    assert not torch.equal(expected[1].weight, initial[1].weight)  # the steps move the weights
    getattr(bench_fit, loop)(model, x, y, epochs=2, lr=0.1, batch_size=64, seed=0)
    for p, q in zip(model.parameters(), expected.parameters()):
        assert_close(p, q)


@pytest.mark.parametrize("loop", ["hand_loop", "dataloader_loop"])
def test_loops_see_every_sample_once_per_epoch_in_a_seeded_order(bench_fit, loop):
    x = torch.arange(20.0).reshape(20, 1, 1, 1)  # each image holds its own index
    y = torch.zeros(20, dtype=torch.long)

    def run(seed):
        seen = []
        model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
        model.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten().tolist()))
        getattr(bench_fit, loop)(model, x, y, epochs=2, lr=0.0, batch_size=8, seed=seed)
        return seen

    seen = run(0)
    assert [len(b) for b in seen] == [8, 8, 4] * 2
    for epoch in (seen[:3], seen[3:]):
        order = [int(v) for batch in epoch for v in batch]
        assert sorted(order) == list(range(20)) and order != list(range(20))  # shuffled
    assert run(0) == seen and run(1) != seen  # the seed sets the order
