"""Build book/batch_norm.ipynb without outputs.

    .venv/bin/python book/_src/make_batch_norm.py
"""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md('''
# Batch normalization (批量归一化)

The article (sections 2.3, 3.3 and 4.3) says that batch normalization "normalizes the input
data", that it "reduces the computation of the inner loop (减少内层循环的计算量) and so speeds up
training", and that it reduces overfitting. Its code calls `F.batch_norm2d` after each ReLU.

What is true: batch normalization (Ioffe and Szegedy, 2015) normalizes the *activations of a layer*,
channel by channel, with the mean and variance of the current mini-batch, then scales and shifts
them with two learnable parameters per channel, $\\gamma$ and $\\beta$. At test time it uses running
averages of the statistics instead, so one image's prediction does not depend on the rest of its
batch. It adds work to every step; it does not remove any. What it buys is a better-conditioned
network that trains at larger learning rates and often needs fewer epochs. `F.batch_norm2d` does
not exist, and a stateless call could not keep $\\gamma$, $\\beta$ or running statistics anyway.

This chapter implements the layer from scratch and checks it against PyTorch, runs the article's
line, looks at per-layer activation statistics with and without BN, sweeps the learning rate over
five seeds with and without BN, times an epoch, and shows the classic bug of evaluating in training
mode.
''')

code(SETUP + START_WORKERS)

code('''
%matplotlib inline
import copy
import statistics
from dataclasses import replace
import torch
from torch import nn
from cnnlab.article import LISTING_BUGS, LISTINGS
from cnnlab.models import build_model
from cnnlab.perf import time_interleaved
from cnnlab.techniques import BatchNorm2d, activation_stats, batch_norm
from cnnlab.train import evaluate, fit
torch.set_num_threads(1)  # one thread per process: see the note below
''')

code('''
TRAIN_SIZE = 1000  # a small training subset, so that one run takes about a second
BASE = RunConfig(DATASET, train_size=TRAIN_SIZE, val_size=small_val_size(DATASET),
                 width=8, epochs=6, lr=0.03, batch_size=64)
LRS = [0.01, 0.03, 0.1, 0.2, 0.5]  # the learning rates of the sweep (SGD, momentum 0.9)
SEEDS = 5
data = load_for(BASE, seed=0)  # the splits of the runs below with seed 0
glue("bn_dataset", DATASET.replace("_", "-"), display=False)
glue("bn_train_size", f"{TRAIN_SIZE:,}", display=False)
glue("bn_test_size", f"{len(data.test[1]):,}", display=False)
glue("bn_epochs", str(BASE.epochs), display=False)
glue("bn_width", str(BASE.width), display=False)
glue("bn_base_lr", str(BASE.lr), display=False)
''')

md('''
Every number on this page was measured on {glue:text}`bn_dataset` with a training subset of
{glue:text}`bn_train_size` images (validation: a held-out part of the training files; test: the
{glue:text}`bn_test_size` test images), on the hardware printed above. The network is the book's
two-convolution CNN (`cnnlab.models.SmallCNN`) with {glue:text}`bn_width` channels in the first
convolution, trained with SGD (momentum 0.9, batch size 64) for {glue:text}`bn_epochs` epochs.
The sweeps train in two worker processes of one thread each; the networks trained in this notebook
itself also use one thread (`torch.set_num_threads(1)` above). On a quiet machine a second thread
can speed up a single step ({doc}`conv_optimization` measures it), but the sweeps already keep
both cores busy, and on a machine whose cores are shared a second thread can make every step many
times slower (it waits for the other).

## What batch normalization computes

For a convolutional layer's output $x$ of shape $(N, C, H, W)$, BN treats each channel $c$
separately and pools the statistics over the batch and all positions, $m = N H W$ values:

$$
\\mu_c = \\frac{1}{m} \\sum_{n,h,w} x_{nchw}, \\qquad
\\sigma_c^2 = \\frac{1}{m} \\sum_{n,h,w} \\left(x_{nchw} - \\mu_c\\right)^2 .
$$

It normalizes with them and then applies a learnable per-channel scale $\\gamma_c$ and shift
$\\beta_c$ (initialized to 1 and 0), so the layer can undo the normalization where that helps:

$$
\\hat{x}_{nchw} = \\frac{x_{nchw} - \\mu_c}{\\sqrt{\\sigma_c^2 + \\epsilon}}, \\qquad
y_{nchw} = \\gamma_c \\, \\hat{x}_{nchw} + \\beta_c .
$$

During training it also keeps running estimates for test time, an exponential moving average with
momentum $\\alpha$ (PyTorch's default $\\alpha = 0.1$). The batch is normalized with the *biased*
variance $\\sigma_c^2$, but the running estimate averages the *unbiased* one:

$$
\\hat{\\mu}_c \\leftarrow (1 - \\alpha)\\, \\hat{\\mu}_c + \\alpha\\, \\mu_c, \\qquad
\\hat{\\sigma}_c^2 \\leftarrow (1 - \\alpha)\\, \\hat{\\sigma}_c^2
  + \\alpha\\, \\frac{m}{m - 1}\\, \\sigma_c^2 .
$$

In evaluation mode nothing is averaged and nothing depends on the batch:

$$
y_{nchw} = \\gamma_c \\,
  \\frac{x_{nchw} - \\hat{\\mu}_c}{\\sqrt{\\hat{\\sigma}_c^2 + \\epsilon}} + \\beta_c .
$$

The article's section 3.3 lists only the first two steps (mean and variance, normalize to mean 0
and variance 1); without $\\gamma$ and $\\beta$ a layer could never represent anything but unit
variance, and without running statistics the model has no batch-independent test-time behaviour.

## From scratch, checked against PyTorch

`cnnlab.techniques.batch_norm` is the formula above as a function (the math);
`cnnlab.techniques.BatchNorm2d` holds $\\gamma$, $\\beta$ and the running buffers and picks the
mode (the bookkeeping). The cell below gives both layers the same random $\\gamma$ and $\\beta$,
runs three training batches through them, and compares the outputs, the running statistics,
and the output in evaluation mode with `torch.nn.BatchNorm2d`.
''')

code('''
gen = torch.Generator().manual_seed(0)
ours, ref = BatchNorm2d(4), nn.BatchNorm2d(4)
with torch.no_grad():
    ours.weight.uniform_(0.5, 2.0, generator=gen); ours.bias.normal_(generator=gen)
ref.load_state_dict(ours.state_dict())  # the same gamma, beta and buffers
for step in range(3):  # training mode: batch statistics, running averages updated
    x = 3 * torch.randn(16, 4, 5, 5, generator=gen) + 2  # (N, C, H, W), mean 2, std 3
    torch.testing.assert_close(ours(x), ref(x))
for buf in ("running_mean", "running_var"):  # momentum averages; the variance unbiased
    torch.testing.assert_close(getattr(ours, buf), getattr(ref, buf))
ours.eval(); ref.eval()  # evaluation mode: the running statistics
torch.testing.assert_close(ours(x), ref(x))
print("outputs (train and eval mode) and running statistics match torch.nn.BatchNorm2d")
''')

md('''
With $\\gamma = 1$, $\\beta = 0$ the training-mode output has mean 0 and (biased) standard
deviation 1 in every channel, and with momentum 1 the running variance is exactly the batch's
*unbiased* variance:
''')

code('''
x = 3 * torch.randn(32, 4, 6, 6, generator=gen) + 2  # (N, C, H, W)
bn = BatchNorm2d(4, momentum=1.0)  # the running statistics become this batch's
y = bn(x)
print("per-channel mean of y:", [f"{v:+.1e}" for v in y.mean(dim=(0, 2, 3)).tolist()])
std = y.std(dim=(0, 2, 3), unbiased=False)  # (C,) biased, as BN normalizes with
print("per-channel std of y: ", [f"{v:.5f}" for v in std.tolist()])
torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2, 3), unbiased=True))
print("running_var == unbiased batch variance; the batch was normalized with the biased one")
''')

md('''
## The article's code

Listing 4.3 defines the network's forward pass with two calls of `F.batch_norm2d`, each after a
ReLU. Run as printed (with the missing `import torch.nn.functional as F` supplied, so that this is
the first error met), the forward pass stops at the first of them:
''')

code('''
bug = next(b for b in LISTING_BUGS if b.listing == "4.3")
print("\\n".join(line for line in LISTINGS["4.3"].splitlines() if "F." in line and "(x" in line))
exc = bug.run()
print(f"\\n{bug.what}: {type(exc).__name__}: {exc}")
''')

md('''
The function that does exist, `torch.nn.functional.batch_norm(x, running_mean, running_var,
weight, bias, training, momentum, eps)`, needs exactly the state a stateless call cannot keep:
$\\gamma$ and $\\beta$ must be parameters the optimizer updates, the running statistics must
persist between steps, and the layer must know whether the model is training. That is why BN is a
module (`nn.BatchNorm2d`) created in `__init__`, one per convolution. The book's network puts it
between the convolution and the ReLU, as in the BN paper, and drops the convolution's bias, which
$\\beta$ makes redundant:
''')

code('''
print(build_model(data.input_shape, data.num_classes, width=BASE.width, batch_norm=True))
''')

md('''
## Activation statistics with and without BN

First, one network of each kind, trained with the same width, seed, data and learning rate
(lr = {glue:text}`bn_base_lr`):
''')

code('''
models, hists = {}, {}
for bn in (False, True):
    models[bn] = build_model(data.input_shape, data.num_classes, seed=0, width=BASE.width,
                             batch_norm=bn)
    hists[bn] = fit(models[bn], data, epochs=BASE.epochs, lr=BASE.lr, seed=0, progress=False)
    print(f"batch_norm={bn!s:5}: test accuracy {hists[bn].test_acc:.1%}")
''')

md('''
`cnnlab.techniques.activation_stats(model, x)` records the mean and standard deviation of each
layer's output in one forward pass. Below: what each ReLU receives (the convolution's output
without BN, the BN layer's output with it) and the logits, for freshly initialized networks and for
the two networks just trained, on 512 training images, in training mode: what the layers see while
the network trains (`activation_stats` restores the running statistics afterwards).
''')

code('''
def pre_activation_stats(model, x):
    """Stats of what each ReLU receives (BN output if the model has BN) and of the logits."""
    first = nn.BatchNorm2d if model.config.batch_norm else nn.Conv2d
    return activation_stats(model.train(), x, types=(first, nn.Linear))

x_probe = data.train[0][:512]  # (512, C, H, W)
stats = {}
for bn, name in ((False, "no BN"), (True, "BN")):
    fresh = build_model(data.input_shape, data.num_classes, seed=0, width=BASE.width, batch_norm=bn)
    stats[f"{name}, initialized"] = pre_activation_stats(fresh, x_probe)
    stats[f"{name}, trained"] = pre_activation_stats(models[bn], x_probe)
''')

code('''
layers = ["conv1 (to ReLU)", "conv2 (to ReLU)", "fc1 (to ReLU)", "fc2 (logits)"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.3), layout="constrained")
for (name, recs), style in zip(stats.items(), ["o--", "o-", "s--", "s-"]):
    for ax, key in zip(axes, ("mean", "std")):
        ax.plot(layers, [r[key] for r in recs], style, label=name)
for ax, key in zip(axes, ("mean", "std")):
    ax.set_title(f"{key} of each layer's output", fontsize=9); ax.grid(alpha=0.3)
    ax.tick_params(axis="x", labelsize=7)
axes[1].set_yscale("log"); axes[1].legend(fontsize=7)
plt.show()
''')

code('''
def std_range(name, n=2):  # spread of the std over the first n layers (the convolutions)
    s = [r["std"] for r in stats[name][:n]]
    return f"{min(s):.2f} to {max(s):.2f}"
for name in stats:
    print(f"{name:18s}", "  ".join(f"{r['name']}: mean {r['mean']:+.2f} std {r['std']:.2f}"
                                   for r in stats[name]))
for key, name in (("plain_init", "no BN, initialized"), ("plain_trained", "no BN, trained"),
                  ("bn_trained", "BN, trained")):
    glue(f"bn_std_{key}", std_range(name), display=False)
''')

md('''
Without BN the scale of each convolution's output is whatever the weights make it: at
initialization its standard deviation is {glue:text}`bn_std_plain_init` over the two convolutions,
after training {glue:text}`bn_std_plain_trained`, and every weight update changes it for the layers
above. With BN the input of each convolutional ReLU starts at mean 0 and standard deviation 1 by
construction, and after training sits where the learned $\\gamma$ and $\\beta$ put it
({glue:text}`bn_std_bn_trained`). Note what BN does *not* touch: the fully connected layers of this
network are not normalized, and their scale still moves freely (a likely reason why the BN
network, too, fails at the largest learning rate of the sweep below).

## Learning rate with and without BN

The claim that matters: BN lets a network train at learning rates where the plain network fails.
Each point below is the test accuracy after {glue:text}`bn_epochs` epochs, the mean of five seeds
(each seed draws its own training subset, initial weights and batch order) with a 95% confidence
interval (Student's t; with two or three failed runs among five it is very wide and can reach
below 0). A run *diverges* when its loss becomes NaN or infinite (training stops); it *stalls*
when it finishes with a test accuracy under 20% (chance is 10%): the typical failure here, with
every ReLU dead and the loss stuck at $\\ln 10$.
''')

code('''
res = {bn: sweep(replace(BASE, batch_norm=bn), "lr", LRS, seeds=SEEDS) for bn in (False, True)}
def stalled(result, lr):  # runs that finished, but at chance level
    return sum(r["test_acc"] < 0.2 and not r["diverged"] for r in result.rows if r["lr"] == lr)
''')

code('''
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
for bn, label in ((False, "without BN"), (True, "with BN")):
    plot_sweep(res[bn], "test_acc", ax=ax, label=label, logx=True)
    for s in res[bn].summary:  # plot_sweep marks diverged runs; mark the stalled ones too
        if n := stalled(res[bn], s["lr"]):
            ax.annotate(f"{n}/{s['n']} stalled", (s["lr"], s["test_acc"]), fontsize=7,
                        color=f"C{int(bn)}", xytext=(5, 8 if bn else -12),
                        textcoords="offset points")
ax.axhline(0.1, color="0.6", lw=1, ls=":"); ax.set_ylabel("test accuracy (mean, 95% CI)")
plt.show()
''')

code('''
print("    lr | without BN: acc [95% CI]   div stall | with BN: acc [95% CI]      div stall")
for s0, s1 in zip(res[False].summary, res[True].summary):
    cells = [f"{s['test_acc']:6.1%} [{s['test_acc_low']:6.1%}, {s['test_acc_high']:6.1%}] "
             f"{s['n_diverged']:3d} {stalled(r, s['lr']):5d}"
             for s, r in ((s0, res[False]), (s1, res[True]))]
    print(f"{s0['lr']:6g} | {cells[0]} | {cells[1]}")
''')

code('''
def max_good_lr(result):  # the largest lr at which every seed trains (test accuracy >= 50%)
    good = [lr for lr in LRS if all(r["test_acc"] >= 0.5 for r in result.rows if r["lr"] == lr)]
    return max(good) if good else None
lr_plain, lr_bn = max_good_lr(res[False]), max_good_lr(res[True])
glue("bn_lr_plain", str(lr_plain), display=False); glue("bn_lr_bn", str(lr_bn), display=False)
glue("bn_lr_word", "a larger" if (lr_bn or 0) > (lr_plain or 0) else
     ("the same" if lr_bn == lr_plain else "a smaller"), display=False)
fails = {bn: [stalled(res[bn], lr) + s["n_diverged"] for lr, s in zip(LRS, res[bn].summary)]
         for bn in (False, True)}
''')

code('''
def ci(s):
    return f"{s['test_acc']:.1%} (95% CI {s['test_acc_low']:.1%} to {s['test_acc_high']:.1%})"
above = [lr for lr, s0, s1 in zip(LRS, res[False].summary, res[True].summary)
         if s1["test_acc_low"] > s0["test_acc_high"]]  # BN's CI entirely above the plain one's
glue("bn_above", ", ".join(map(str, above)) if above else "none of the rates", display=False)
k = LRS.index(lr_plain) + 1 if lr_plain in LRS[:-1] else len(LRS) - 1  # first rate past plain's
glue("bn_k_lr", str(LRS[k]), display=False)
glue("bn_k_plain", ci(res[False].summary[k]), display=False)
glue("bn_k_bn", ci(res[True].summary[k]), display=False)
glue("bn_k_fail_plain", str(fails[False][k]), display=False)
glue("bn_k_fail_bn", str(fails[True][k]), display=False)
''')

code('''
glue("bn_fail_plain", str(sum(fails[False])), display=False)
glue("bn_fail_bn", str(sum(fails[True])), display=False)
glue("bn_n_runs", str(len(LRS) * SEEDS), display=False)
''')

code('''
helps = []
if (lr_bn or 0) > (lr_plain or 0):
    helps.append("it trains reliably at a larger rate")
if any(lr <= (lr_plain or 0) for lr in above):
    helps.append(f"at rates where both train it gets further in the same {BASE.epochs} epochs")
glue("bn_helps", "So BN helps here: " + ", and ".join(helps) + "." if helps else
     "So no clear advantage of BN shows in this setting.", display=False)
top, f0, f1 = LRS[-1], fails[False][-1], fails[True][-1]
glue("bn_ceiling", f"At lr = {top}, {f0} of 5 runs without BN and {f1} of 5 with BN failed"
     + (": BN moves the ceiling but does not remove it." if min(f0, f1) >= 3 else "."),
     display=False)
''')

code('''
g = {bn: res[bn].summary[LRS.index(BASE.lr)] for bn in (False, True)}
for bn, key in ((False, "plain"), (True, "bn")):
    glue(f"bn_gap_{key}", f"{g[bn]['gap']:.1%} (95% CI {g[bn]['gap_low']:.1%} to "
         f"{g[bn]['gap_high']:.1%})", display=False)
overlap = (g[True]["gap_high"] >= g[False]["gap_low"]
           and g[False]["gap_high"] >= g[True]["gap_low"])
glue("bn_gap_word", "the intervals overlap: no difference is measurable here" if overlap else
     ("smaller with BN, as the article says" if g[True]["gap"] < g[False]["gap"] else
      "larger with BN: in these runs BN does not reduce overfitting"), display=False)
''')

md('''
Measured: the largest learning rate at which all five seeds train (test accuracy at least 50%) is
{glue:text}`bn_lr_plain` without BN and {glue:text}`bn_lr_bn` with BN, {glue:text}`bn_lr_word`
rate. At the next rate of the sweep, lr = {glue:text}`bn_k_lr`, the plain network scores
{glue:text}`bn_k_plain` with {glue:text}`bn_k_fail_plain` of 5 runs failed, the BN network
{glue:text}`bn_k_bn` with {glue:text}`bn_k_fail_bn` failed. Over all {glue:text}`bn_n_runs` runs
per setting, {glue:text}`bn_fail_plain` failed (diverged or stalled) without BN and
{glue:text}`bn_fail_bn` with it; the table lists them per rate (divergence counts come from the
rows' `diverged` flags). BN's confidence interval lies entirely above the plain network's at:
{glue:text}`bn_above`. {glue:text}`bn_helps` {glue:text}`bn_ceiling`

The article's third claim, that BN reduces overfitting, can be read off the same runs: at
lr = {glue:text}`bn_base_lr` the gap between training accuracy (on the batches as trained) and test
accuracy is {glue:text}`bn_gap_plain` without BN and {glue:text}`bn_gap_bn` with it;
{glue:text}`bn_gap_word`. (The regularization and dropout chapters measure overfitting in more
detail.)

## Does BN "reduce inner-loop computation"?

The article says BN speeds up training by reducing the computation of the inner loop. The cell
below times one training epoch of the two networks, with and without BN (same width, data, batch
size and learning rate), side by side: `cnnlab.perf.time_interleaved` alternates the two five
times and reports each one's median, so a background job slows both alike. (Validation and test
sets are cut to 64 images here, so that the timed call is almost all training.)
''')

code('''
timing_data = replace(data, val=(data.val[0][:64], data.val[1][:64]),
                      test=(data.test[0][:64], data.test[1][:64]))
net = {bn: build_model(data.input_shape, data.num_classes, seed=0, width=BASE.width,
                       batch_norm=bn) for bn in (False, True)}
epoch = {name: (lambda bn=bn: fit(net[bn], timing_data, epochs=1, lr=BASE.lr, progress=False))
         for bn, name in ((False, "without BN"), (True, "with BN"))}
timings = time_interleaved(epoch, repeats=5)
for name, t in timings.items():
    print(f"{name:10s}: {t.median * 1000:6.1f} ms per epoch (median of 5; spread {t.spread:.0%})")
ratio = timings["with BN"].median / timings["without BN"].median
print(f"with BN / without BN: {ratio:.2f}")
''')

code('''
glue("bn_time_ratio", f"{ratio:.2f}", display=False)
glue("bn_time_word", "more" if ratio > 1 else "less", display=False)
''')

md('''
An epoch with BN took {glue:text}`bn_time_ratio` times as long as one without it
({glue:text}`bn_time_word` time per epoch). BN is extra work: per convolution, two reductions over
the batch per channel, the normalization and the affine transform, forward and backward; nothing
in it removes a loop. Whatever BN saves must come from *fewer* epochs or a *larger* learning rate.
The sweep's runs recorded the validation accuracy after every epoch, so we can count the epochs
each run needed to first reach 75%:
''')

code('''
TARGET = 0.75
def epochs_to_target(result, bn_lr):  # per seed: first epoch with val_acc >= TARGET, else None
    return [next((e for e, a in enumerate(r["history"]["val_acc"], 1) if a >= TARGET), None)
            for r in result.rows if r["lr"] == bn_lr]
def mean_epochs(bn, lr):
    hit = [e for e in epochs_to_target(res[bn], lr) if e is not None]
    return (statistics.mean(hit), len(hit)) if hit else (float("nan"), 0)
print(f"epochs to reach {TARGET:.0%} validation accuracy (mean over the seeds that reach it)")
for lr in LRS:
    (e0, n0), (e1, n1) = mean_epochs(False, lr), mean_epochs(True, lr)
    print(f"lr {lr:<5g} without BN: {e0:4.1f} ({n0}/{SEEDS} reach it)   with BN: {e1:4.1f} "
          f"({n1}/{SEEDS} reach it)")
''')

code('''
(e0, n0), (e1, n1) = mean_epochs(False, BASE.lr), mean_epochs(True, BASE.lr)
glue("bn_target", f"{TARGET:.0%}", display=False)
glue("bn_ep_plain", f"{e0:.1f} epochs ({n0} of {SEEDS} seeds reach it)", display=False)
glue("bn_ep_bn", f"{e1:.1f} epochs ({n1} of {SEEDS} seeds reach it)", display=False)
glue("bn_ep_word", "fewer" if e1 < e0 or n1 > n0 else "not fewer", display=False)
''')

md('''
At lr = {glue:text}`bn_base_lr` the plain network needs {glue:text}`bn_ep_plain` to reach
{glue:text}`bn_target` validation accuracy, the BN network {glue:text}`bn_ep_bn`:
{glue:text}`bn_ep_word` epochs with BN, each {glue:text}`bn_time_ratio` times as long. That
trade, not a cheaper inner loop, is what BN offers; the table shows it per learning rate ("nan"
where no seed got there within {glue:text}`bn_epochs` epochs).

## Train mode vs eval mode: the classic bug

In training mode BN normalizes with the statistics of the batch it is given. Evaluating a model
left in training mode (forgetting `model.eval()`) therefore makes each prediction depend on the
other test images in its batch, and overwrites the running statistics with test data. The smaller
the batch, the noisier the statistics. With one image per batch, each channel of a convolution is
normalized by that image's own spatial mean and variance (instance normalization), which discards
the image's overall brightness and contrast per channel.

Below, the BN network trained above predicts the first 2,000 test images in evaluation mode and,
on a copy (so its running statistics survive), in training mode, with the test images in their
given (mixed) order and sorted by class (a batch that holds one kind of garment, as a service that
receives requests in bursts might see).
''')

code('''
@torch.no_grad()
def predict_in_train_mode(model, x, batch_size):
    """Predictions with BN using each batch's own statistics: the bug, on a copy."""
    m = copy.deepcopy(model).train()
    return torch.cat([m(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
x_test, y_test = data.test[0][:2000], data.test[1][:2000]
by_class = torch.argsort(y_test, stable=True)  # test images sorted by label
BATCHES = [256, 32, 8, 2, 1]
acc_eval = {b: evaluate(models[True], x_test, y_test, batch_size=b)[1] for b in (256, 1)}
with torch.no_grad():
    pred_eval = models[True].eval()(x_test).argmax(1)  # evaluation mode: running statistics
''')

code('''
rows = {}
for b in BATCHES:
    pred = predict_in_train_mode(models[True], x_test, b)
    pred_sorted = (predict_in_train_mode(models[True], x_test[by_class], b) if b > 1
                   else pred[by_class])  # a batch of one has no neighbours: same predictions
    rows[b] = ((pred == y_test).float().mean().item(),
               (pred_sorted == y_test[by_class]).float().mean().item(),
               (pred != pred_eval).float().mean().item())
print("batch   eval mode | train mode: acc (mixed)  acc (sorted by class)  differ from eval")
for b, (acc_mixed, acc_sorted, differ) in rows.items():
    ev = f"{acc_eval[b]:9.1%}" if b in acc_eval else " " * 9
    print(f"{b:5d}   {ev} |  {acc_mixed:19.1%}  {acc_sorted:21.1%}  {differ:16.1%}")
''')

code('''
glue("bn_acc_eval", f"{acc_eval[256]:.1%}", display=False)
d = abs(acc_eval[1] - acc_eval[256])
glue("bn_eval_same", "the same" if d == 0 else f"within {d:.2%} (floating-point rounding differs "
     "with the batch size)", display=False)
for b in (256, 1):
    glue(f"bn_acc_train_{b}", f"{rows[b][0]:.1%}", display=False)
    glue(f"bn_differ_{b}", f"{rows[b][2]:.1%}", display=False)
glue("bn_acc_sorted_256", f"{rows[256][1]:.1%}", display=False)
gap = max(abs(rows[b][0] - acc_eval[256]) for b in BATCHES)
glue("bn_mode_gap", f"{gap:.1%}", display=False)
''')

code('''
if gap < 0.01:
    verdict = "For this small network on this data the accuracy hides the bug almost completely."
elif gap < 0.05:
    verdict = "The accuracy shows the bug only mildly here."
else:
    verdict = "The accuracy shows the bug."
glue("bn_mode_verdict", verdict + " The predictions show it more clearly:", display=False)
''')

md('''
In evaluation mode the accuracy is {glue:text}`bn_acc_eval`, {glue:text}`bn_eval_same` for batches
of 256 and of 1: the running statistics do not depend on the batch. In training mode the same
weights score {glue:text}`bn_acc_train_256` with batches of 256 and {glue:text}`bn_acc_train_1`
with single images, and {glue:text}`bn_acc_sorted_256` with class-sorted batches of 256. With the
test images in mixed order the training-mode accuracy differs from the evaluation-mode one by at
most {glue:text}`bn_mode_gap` over the batch sizes. {glue:text}`bn_mode_verdict`
{glue:text}`bn_differ_256` of the test images get a different class in training mode with
batches of 256 than in evaluation mode, and {glue:text}`bn_differ_1` with single images. A model
whose answer for an image depends on which other images arrived with it is not reproducible, and
a training-mode pass over test data has also replaced its running statistics. How much the
accuracy suffers depends on the network and the data; the dependence on the batch is always
there.

A truly degenerate case is a BN layer that sees one value per channel, such as `BatchNorm1d` after
a fully connected layer: a batch of one $(1, C)$ vector has nothing to average over, and the
normalized output would be $0/0$. PyTorch and `cnnlab.techniques.batch_norm` both refuse it in
training mode:
''')

code('''
x1 = torch.randn(1, 4)  # (N=1, C=4): one value per channel
for name, call in (("nn.BatchNorm1d", lambda: nn.BatchNorm1d(4)(x1)),
                   ("cnnlab batch_norm", lambda: batch_norm(x1, None, None, None, None,
                                                            training=True))):
    try:
        call()
    except ValueError as e:
        print(f"{name}: {type(e).__name__}: {e}")
''')

md('''
## Try it: the learning rate with BN

With a running kernel (locally or on Colab) the panel below trains the BN network at the learning
rate you pick, over the number of seeds you pick, and adds the result to its figure (runs already
in the cache, such as the sweep above, come back at once). To explore the network without BN,
change `batch_norm=True` to `False`.
''')

code('''
display(sweep_panel(replace(BASE, batch_norm=True), "lr", LRS, logx=True))
''')

md('''
On the static page the panel cannot train. The two sliders below show the same sweeps,
precomputed: for each learning rate, the training and validation accuracy per epoch (mean over
the five seeds, band from the worst to the best seed) next to the whole sweep. First with BN:
''')

code('''
HTML(sweep_slider(res[True], "test_acc", logx=True))
''')

md('''
and the same network without BN:
''')

code('''
HTML(sweep_slider(res[False], "test_acc", logx=True))
''')

md('''
## Takeaways

- BN normalizes each channel of a layer's activations with the batch's mean and (biased) variance,
  then applies a learnable $\\gamma$, $\\beta$; at test time it uses running averages (of the
  unbiased variance). It is a module with parameters, buffers and two modes, not a function call:
  `F.batch_norm2d` does not exist.
- It does not make an epoch cheaper: here an epoch with BN took {glue:text}`bn_time_ratio` times as
  long. What it can buy is in the optimization. Measured here: every seed trains up to
  lr = {glue:text}`bn_lr_bn` with BN and up to {glue:text}`bn_lr_plain` without, and at
  lr = {glue:text}`bn_base_lr` the BN network reaches {glue:text}`bn_target` validation accuracy
  in {glue:text}`bn_ep_bn`, the plain one in {glue:text}`bn_ep_plain`.
- BN normalizes only the layers it is attached to: the fully connected layers of this network stay
  unnormalized.
- Always call `model.eval()` before evaluating or serving a model with BN. In training mode the
  prediction for an image depends on its batch: here {glue:text}`bn_differ_1` of the test
  predictions changed with single images, while the accuracy (mixed order) moved by at most
  {glue:text}`bn_mode_gap`.

## Exercises

1. **Scale invariance.** Multiply the weights of `conv1` in a BN network by 10 (`with
   torch.no_grad(): model.conv1.weight.mul_(10)`) and check with `torch.testing.assert_close` that
   the output in training mode does not change. Why does that make the *effective* learning rate of
   the convolution weights shrink as they grow, and why does the same not hold for `fc1`?
2. **Batch size.** Sweep `batch_size` over `[4, 16, 64, 256]` with `batch_norm=True` at
   `lr=0.03` (`sweep(replace(BASE, batch_norm=True), "batch_size", ...)`) and without BN. Where
   does BN get worse than no BN, and what does that say about its batch statistics?
3. **The article's placement.** Write a copy of `SmallCNN` with `cnnlab.techniques.BatchNorm2d`
   after the ReLU instead of before it (the article's order), train it with `cnnlab.train.fit` at
   the learning rates of the sweep for three seeds, and compare with the curves above.
''')

nb.write(Path(__file__).resolve().parents[1] / "batch_norm.ipynb")
