"""Build book/dropout.ipynb (outputs stripped). Run: .venv/bin/python book/_src/make_dropout.py"""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md("""
# Dropout (随机失活)

The article (sections 2.4 and 3.4) describes dropout as randomly dropping a fraction of the
neurons during training, so that the network cannot rely on any particular one, which reduces
overfitting. That is right. Its code (section 4.4) does something else: a "Dropout optimizer"
that, at every step, replaces the network's *weights* by `F.dropout(weights)`. Each step zeroes
about half of the remaining weights for good and doubles the rest, and never applies a gradient:
it destroys the model.

Dropout acts on *activations*, during training only. This chapter writes down inverted dropout,
checks the from-scratch version against PyTorch, shows what happens when a model is evaluated
without `model.eval()`, runs the article's optimizer on a trained network, and measures over
several seeds what the dropout rate $p$ does to the train/test gap on a small training set.
""")


code('''
%matplotlib inline
import torch
torch.set_num_threads(1)  # like the sweeps' workers: a small CNN gains little from more threads
''' + SETUP + START_WORKERS)

code('''
from dataclasses import replace
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close
from cnnlab.experiments import confidence_interval
from cnnlab.models import build_model
from cnnlab.train import fit
from cnnlab.techniques import Dropout, dropout
''')

code('''
N_TRAIN, SEEDS = 500, 5   # a training subset small enough to overfit; seeds per setting
BASE = RunConfig(DATASET, train_size=N_TRAIN, val_size=small_val_size(DATASET),
                 width=16, epochs=15, batch_size=32, lr=0.04)
DATA = load_for(BASE, seed=0)  # the splits of the runs below with seed 0
for key, value in [("n_train", f"{N_TRAIN:,}"), ("seeds", SEEDS), ("epochs", BASE.epochs),
                   ("width", BASE.width), ("width2", 2 * BASE.width), ("lr", BASE.lr),
                   ("batch", BASE.batch_size), ("n_test", f"{len(DATA.test[1]):,}")]:
    glue(key, str(value), display=False)
print(DATA)
''')

md("""
The experiments train the book's `SmallCNN` (two convolutions of width {glue:text}`width` and
{glue:text}`width2`, a 128-unit hidden layer, dropout of rate $p$ before each of the two fully
connected layers) on a stratified subset of {glue:text}`n_train` training images for
{glue:text}`epochs` epochs with SGD (momentum 0.9, learning rate {glue:text}`lr`, batch {glue:text}`batch`), and report
accuracy on the {glue:text}`n_test`-image test set (the official one; on the digits fallback, a
held-out fifth). Each
setting runs with {glue:text}`seeds` seeds (the seed picks the subset, the initial weights, the
batch order and the dropout masks). The hardware line above produced the numbers on this page.

## The math

During training, each activation $x_i$ is kept with probability $1 - p$ and zeroed otherwise;
with *inverted* dropout, what PyTorch and `cnnlab.techniques.dropout` do, the kept ones are
scaled by $1/(1-p)$ at once:

$$
y_i = \\frac{m_i\\, x_i}{1 - p}, \\qquad m_i \\sim \\operatorname{Bernoulli}(1 - p), \\qquad
\\mathbb{E}[y_i] = x_i, \\qquad \\operatorname{Var}[y_i] = \\frac{p}{1 - p}\\, x_i^2 .
$$

Because the expectation is unchanged, evaluation needs no correction: in eval mode dropout is
the identity, $y = x$. (The original paper, Srivastava et al. 2014, dropped without scaling and
multiplied the weights by $1 - p$ at test time instead; the two are the same in expectation.)
Every step trains a different random sub-network that shares its weights with all the others,
so no unit can count on a particular other unit being there, and evaluation uses (an
approximation of) the average of all of them.

## From scratch, checked against PyTorch

`cnnlab.techniques.dropout(x, p, training=..., generator=...)` draws the mask from a
`torch.Generator`. Given the same seed it draws exactly the mask `torch.nn.functional.dropout`
draws after `torch.manual_seed`; on a large tensor, the share kept is $1 - p$, the survivors are
$1/(1-p)$ and the mean is preserved; in eval mode both it and `nn.Dropout` return the input
unchanged:
""")

code('''
P = 0.3
x = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0))
with torch.random.fork_rng():
    torch.manual_seed(1); ref = F.dropout(x, P, training=True)
ours = dropout(x, P, training=True, generator=torch.Generator().manual_seed(1))
assert_close(ours, ref)                                        # the same mask, the same scaling
ones = dropout(torch.ones(1_000_000), P, training=True, generator=torch.Generator().manual_seed(2))
kept = ones[ones != 0]
assert_close(kept, torch.full_like(kept, 1 / (1 - P)))          # survivors scaled by 1/(1-p)
assert abs(kept.numel() / ones.numel() - (1 - P)) < 0.005       # a share 1-p kept
assert abs(float(ones.mean()) - 1) < 0.005                      # E[y] = x
assert Dropout(P).eval()(x) is x; assert_close(nn.Dropout(P).eval()(x), x)   # eval: identity
''')

code('''
share, mean = kept.numel() / ones.numel(), float(ones.mean())
print(f"p = {P}: kept {share:.4f} (expected {1 - P}), survivors = {float(kept[0]):.4f}, mean {mean:.4f}")
glue("kept_share", f"{share:.2%}", display=False); glue("kept_mean", f"{mean:.4f}", display=False)
''')

md("""
On a million ones with $p = 0.3$, {glue:text}`kept_share` survive and the mean is
{glue:text}`kept_mean`: the expected activation is preserved.

## The article's code (section 4.4)

As printed, the listing stops at the first use of the undefined `model`; its `CNN` has
`super(CNN, self).__init()` (a typo for `__init__`), its optimizer calls `Optimizer.__init__`
without `defaults`, and it uses `F` without importing it:
""")

code('''
from cnnlab.article import ArticleDropoutOptimizer, listing_failures
for what, exc in listing_failures("4.4"):   # as printed, then each bug a fix uncovers
    print(f"{what}: {type(exc).__name__}: {exc}")
''')

md("""
`cnnlab.article.ArticleDropoutOptimizer` is that optimizer with just enough fixed to run. Its
`step()` sets every parameter to `F.dropout(parameter, p)` and nothing else: after $k$ steps a
share $1 - (1 - p)^k$ of the weights is zero for good, and the survivors have been multiplied by
$(1 - p)^{-k}$. To see what that does to a model, first train one properly, with dropout
$p = 0.5$ on the activations:
""")

code('''
model = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=BASE.width, dropout=0.5)
hist = fit(model, DATA, epochs=BASE.epochs, lr=BASE.lr, batch_size=BASE.batch_size, progress=False)
x_test, y_test = DATA.test
print(f"test accuracy {hist.test_acc:.1%} after {hist.steps} steps")
glue("model_acc", f"{hist.test_acc:.1%}", display=False)
''')

md("""
### Forgetting `model.eval()`

`cnnlab.train.evaluate` (which `fit` uses) switches the model to eval mode. Forgetting that, and
classifying the test set with dropout still on, makes every pass use another random
sub-network, at training strength:
""")

code('''
@torch.no_grad()
def accuracy(model, x, y):
    return float((model(x).argmax(1) == y).float().mean())
xs, ys = x_test[:2000], y_test[:2000]                     # 2,000 test images
model.eval(); eval_acc = accuracy(model, xs, ys)
model.train(); torch.manual_seed(0)
train_accs = [accuracy(model, xs, ys) for _ in range(5)]
with torch.no_grad():
    flips = float((model(xs).argmax(1) != model(xs).argmax(1)).float().mean())
model.eval()
print(f"eval mode: {eval_acc:.2%}; train mode, 5 passes: " + ", ".join(f"{a:.1%}" for a in train_accs))
print(f"test images whose predicted class changes between two train-mode passes: {flips:.1%}")
''')

code('''
word = "lower on every pass" if max(train_accs) < eval_acc else "not lower on every pass"
for key, value in [("eval_acc", f"{eval_acc:.1%}"), ("train_lo", f"{min(train_accs):.1%}"),
                   ("train_hi", f"{max(train_accs):.1%}"), ("flips", f"{flips:.1%}"),
                   ("train_word", word), ("n_eval", f"{len(ys):,}")]:
    glue(key, value, display=False)
''')

md("""
In eval mode the network classifies {glue:text}`eval_acc` of the first {glue:text}`n_eval`
test images correctly; left in
training mode, between {glue:text}`train_lo` and {glue:text}`train_hi` over five passes
({glue:text}`train_word`), and {glue:text}`flips` of these images change their predicted
class from one pass to the next.
With batch normalization the same bug does something else (each batch is normalized with its own
statistics, and the running statistics are overwritten; see the batch normalization chapter). Always call `model.eval()`
before evaluating, and `model.train()` before training again.

### The article's "Dropout optimizer" on the trained network

Now the article's optimizer takes over the trained model, with its default $p = 0.5$. A small
hook records, after every step, the share of weights that are exactly zero and the accuracy on
the {glue:text}`n_probe` validation images:
""")

code('''
class Probe:                     # a fit() hook: nonzero weights and validation accuracy per step
    def __init__(self, x, y): self.x, self.y, self.left, self.acc = x, y, [], []
    def after_step(self, model):
        self.left.append(sum(int((w != 0).sum()) for w in model.parameters() if w.ndim >= 2))
        model.eval(); self.acc.append(accuracy(model, self.x, self.y)); model.train()
probe = Probe(DATA.val[0][:1000], DATA.val[1][:1000])
glue("n_probe", f"{len(probe.y):,}", display=False)
art_hist = fit(model, DATA, epochs=1, lr=BASE.lr, batch_size=BASE.batch_size, hooks=[probe],
               optimizer=ArticleDropoutOptimizer(model.parameters(), p=0.5), progress=False)
''')

code('''
n_weights = sum(p.numel() for p in model.parameters() if p.ndim >= 2)
zero = [1 - n / n_weights for n in probe.left]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
steps = range(1, len(zero) + 1)
axes[0].plot(steps, zero, "o-", label="measured")
axes[0].plot(steps, [1 - 0.5 ** k for k in steps], "k--", lw=1, label="1 - (1 - p)^k")
axes[0].set_ylabel("share of weights = 0"); axes[0].legend(fontsize=8)
axes[1].plot(steps, probe.acc, "o-", label="during the article's steps")
axes[1].axhline(hist.test_acc, color="0.6", ls=":", label="the trained model (test)"); axes[1].legend(fontsize=8)
axes[1].set_ylabel("validation accuracy"); axes[1].set_ylim(0, 1)
for ax in axes: ax.set_xlabel("steps of the article's optimizer"); ax.grid(alpha=0.3)
plt.show()
''')

code('''
k = next((i for i, a in enumerate(probe.acc, 1) if a < 0.5), None)
for key, value in [("zero1", f"{zero[0]:.0%}"), ("left", f"{probe.left[-1]:,}"),
                   ("total", f"{n_weights:,}"), ("steps", str(len(zero))),
                   ("acc_end", f"{probe.acc[-1]:.1%}"), ("test", f"{art_hist.test_acc:.1%}"),
                   ("half", f"after {k} step{'s' if k > 1 else ''}" if k else "at no step")]:
    glue(f"art_{key}", value, display=False)
''')

md("""
The first step zeroes {glue:text}`art_zero1` of the weights; after {glue:text}`art_steps` steps
{glue:text}`art_left` of the {glue:text}`art_total` weights are left, on the
predicted curve $1 - (1-p)^k$. Validation accuracy falls below 50% {glue:text}`art_half` and ends at
{glue:text}`art_acc_end` (the test set: {glue:text}`art_test`; chance is 10%), from a model that
had {glue:text}`model_acc`. The loss was computed and back-propagated at every step, and then
ignored. Dropout is not an optimizer: it belongs in the model's forward pass (`nn.Dropout`,
`cnnlab.techniques.Dropout`), on activations, and switches off in eval mode.

## Does it help? The rate $p$ against the train/test gap

The measurement: the same network and subset, with dropout rate $p$ (`RunConfig.dropout`), over
{glue:text}`seeds` seeds. This regime (width {glue:text}`width`, {glue:text}`epochs` epochs) is
chosen so that the network without dropout clearly overfits, which is where dropout has
something to act on.
""")

code('''
P_VALUES = [0.0, 0.1, 0.2, 0.35, 0.5]
sweep(BASE, "dropout", P_VALUES[:3], seeds=SEEDS);   # trained in two cells, so no cell runs long
''')

code('''
res = sweep(BASE, "dropout", P_VALUES, seeds=SEEDS)   # the first three rates come from the cache
for s in res.summary:
    print(describe(s, "dropout"), f"Train accuracy {s['train_acc']:.1%}, gap {s['gap']:.1%}.")
''')

code('''
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
plot_sweep(res, "train_acc", ax=axes[0], label="train"); plot_sweep(res, "test_acc", ax=axes[0], label="test")
plot_sweep(res, "gap", ax=axes[1]); axes[0].set_ylabel("accuracy (mean, 95% CI)")
plt.show()
''')

code('''
from cnnlab.experiments import paired_difference, verdict   # per-seed differences; a word for a CI
''')

code('''
s0, s1 = res.summary[0], res.summary[-1]
best = max(res.summary[1:], key=lambda s: s["test_acc"])["dropout"]
d, lo, hi = paired_difference(res, best)
for key, value in [("p_max", f"{P_VALUES[-1]:g}"), ("gap0", f"{s0['gap']:.1%}"), ("gap1", f"{s1['gap']:.1%}"),
                   ("train0", f"{s0['train_acc']:.1%}"), ("train1", f"{s1['train_acc']:.1%}"),
                   ("test0", f"{s0['test_acc']:.1%}"), ("test1", f"{s1['test_acc']:.1%}"),
                   ("p_best", f"{best:g}"), ("verdict", verdict(lo, hi)), ("diff", f"{100 * d:+.1f}"),
                   ("ci", f"{100 * lo:+.1f} to {100 * hi:+.1f}"),
                   ("gapword", verdict(*paired_difference(res, P_VALUES[-1], "gap")[1:], "wider", "narrower",
                                       "not measurably different"))]:
    glue(f"do_{key}", value, display=False)
''')

code('''
trend = "rises" if s1["test_acc"] > s0["test_acc"] else "falls"
if lo > 0:
    text = (f"So dropout helps here: by the amount above at p = {best:g}, in this small-data regime "
            "where the network without it memorizes its training set.")
else:
    text = (f"Mean test accuracy {trend} from {s0['test_acc']:.1%} at p = 0 to {s1['test_acc']:.1%} "
            f"at p = {P_VALUES[-1]:g}, but seed by seed no rate is measurably better than none: "
            "dropout trades training fit for a smaller gap, and on a small network trained for a "
            "few hundred steps that is not (yet) a measurable gain in test accuracy.")
glue("do_conclusion", text, display=False)
''')

md("""
Without dropout the network overfits: training accuracy {glue:text}`do_train0`, test accuracy
{glue:text}`do_test0`, a gap of {glue:text}`do_gap0`. At $p$ = {glue:text}`do_p_max` the gap is
{glue:text}`do_gap1` ({glue:text}`do_gapword` than without dropout, seed by seed), with training
accuracy {glue:text}`do_train1` and test accuracy {glue:text}`do_test1`. (Training accuracy is
measured on the training batches *with* dropout on, as the network trained, so part of its drop
is the noise dropout adds, not a worse fit.)

Compared seed by seed with $p = 0$ (same subset, same initial weights, same batch order), the
best rate in this sweep, $p$ = {glue:text}`do_p_best`, **{glue:text}`do_verdict`** test
accuracy: {glue:text}`do_diff` percentage points (95% CI {glue:text}`do_ci`). Picking the best of
four rates and then testing it favours it slightly, so an interval containing zero means no
measurable effect. {glue:text}`do_conclusion`

## Try it

With a kernel (locally or on Colab) the panel trains this setting for the rate you pick (runs
already trained above come from the cache):
""")

code('''
display(sweep_panel(BASE, "dropout", P_VALUES, metric="test_acc", seeds=3))
''')

md("""
On the static page, the same sweep precomputed: pick $p$ to see its learning curves (mean over
{glue:text}`seeds` seeds, band from min to max; training accuracy with dropout on) next to the
whole sweep.
""")

code('''
HTML(sweep_slider(res, "test_acc"))
''')

md("""
## Takeaways

- Dropout zeroes each *activation* with probability $p$ during training and scales the survivors
  by $1/(1-p)$, so the expected activation is unchanged and evaluation is the identity
  (`cnnlab.techniques.dropout` draws the same masks as PyTorch).
- Call `model.eval()` before evaluating: in training mode the predictions are noisy and worse.
- The article's "Dropout optimizer" applies dropout to the *weights*, permanently, at every step,
  and never uses the gradient: half the remaining weights vanish per step and the trained model
  collapses to chance within a few steps.
- Dropout narrows the train/test gap; whether it raises test accuracy depends on how much the
  network overfits, and is reported above with its confidence interval.

## Exercises

1. **MC dropout.** Average the softmax outputs of 30 train-mode passes over the test set
   ("Monte Carlo dropout", Gal and Ghahramani 2016). Is its accuracy closer to the eval-mode
   accuracy than a single train-mode pass? Use the spread of the 30 predictions as an uncertainty
   estimate: are the images with the largest spread more often misclassified?
2. **Non-inverted dropout.** Write a dropout that does *not* scale by $1/(1-p)$ during training.
   Show that a model trained with it and evaluated in eval mode is miscalibrated, and that
   multiplying the next layer's weights by $1-p$ at test time repairs it.
3. **Training length.** Dropout slows fitting: each step trains a thinned network. Re-run the
   sweep with `replace(BASE, epochs=10)` and `replace(BASE, epochs=30)` (the second takes a few
   minutes on a CPU). How do the best rate and the paired difference to $p = 0$ move with the
   training length?
""")

nb.write(Path(__file__).resolve().parents[1] / "dropout.ipynb")
