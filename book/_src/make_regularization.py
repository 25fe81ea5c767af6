"""Build book/regularization.ipynb (outputs stripped). Run: .venv/bin/python book/_src/make_regularization.py"""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md("""
# L1/L2 regularization (正则化)

The article (sections 2.2 and 3.2) says regularization adds a penalty on the weights to the loss,
which limits the model's complexity and so prevents overfitting, and gives the two classic
penalties:

$$
L_{L1} = L + \\lambda \\lVert w \\rVert_1, \\qquad L_{L2} = L + \\lambda \\lVert w \\rVert_2^2 .
$$

Those formulas are right. Its code (section 4.2) is not: the "L2 regularization optimizer" shrinks
each weight tensor by $\\text{wd} \\cdot \\lVert w \\rVert / \\lVert \\nabla L \\rVert \\cdot w$, a
term that is not the gradient of any L2 penalty, that grows without bound as training converges,
and that makes the weights infinite or NaN when a gradient is zero.

This chapter checks the penalties against PyTorch, shows that "weight decay" *is* L2 under SGD
but *is not* under Adam (which is why AdamW exists), runs the article's optimizer, and measures
over several seeds what L1 and L2 do on a small training set where a CNN overfits: to the
train/test gap, to test accuracy, and to the weights themselves.
""")


code('''
%matplotlib inline
import torch
torch.set_num_threads(1)  # like the sweeps' workers: a small CNN gains little from more threads
''' + SETUP + START_WORKERS)

code('''
from dataclasses import replace
from torch.testing import assert_close
from cnnlab.experiments import confidence_interval, summarize
from cnnlab.models import build_model
from cnnlab.train import fit
from cnnlab.techniques import (L1, L2, decay_param_groups, l1_penalty, l2_penalty,
                               penalized_parameters, weight_stats)
''')

code('''
N_TRAIN, SEEDS = 500, 5   # a training subset small enough to overfit; seeds per setting
BASE = RunConfig(DATASET, train_size=N_TRAIN, val_size=small_val_size(DATASET),
                 width=8, epochs=10, batch_size=32, lr=0.04)
DATA = load_for(BASE, seed=0)  # the splits of the runs below with seed 0
for key, value in [("n_train", f"{N_TRAIN:,}"), ("seeds", SEEDS), ("epochs", BASE.epochs),
                   ("lr", BASE.lr), ("batch", BASE.batch_size), ("n_test", f"{len(DATA.test[1]):,}"),
                   ("width", BASE.width), ("width2", 2 * BASE.width)]:
    glue(key, str(value), display=False)
print(DATA)
''')

md("""
Every experiment below trains the book's `SmallCNN` (two convolutions of width {glue:text}`width` and {glue:text}`width2`, a
128-unit hidden layer) on a stratified subset of {glue:text}`n_train` training images for
{glue:text}`epochs` epochs with SGD (momentum 0.9, learning rate {glue:text}`lr`, batch {glue:text}`batch`), and reports
accuracy on the {glue:text}`n_test`-image test set (the official one; on the digits fallback, a
held-out fifth).
Each setting is trained with {glue:text}`seeds` seeds (the seed picks the subset, the initial
weights and the batch order). The hardware line above is the machine that produced the numbers on
this page.

## The math

Both penalties act on the weights $w$ (convolution kernels and linear matrices; by convention not
on biases or normalization parameters, see below). Their gradients are

$$
\\frac{\\partial}{\\partial w}\\, \\lambda \\lVert w \\rVert_1 = \\lambda\\, \\operatorname{sign}(w),
\\qquad
\\frac{\\partial}{\\partial w}\\, \\lambda \\lVert w \\rVert_2^2 = 2 \\lambda w .
$$

L1 pulls every weight towards zero by the same amount, however small it already is, so weights
the data does not need end up at (or oscillating around) zero: **sparsity**. L2 pulls in
proportion to the weight: every weight shrinks by the same factor, the large, useful ones as much
as the rest, and a small weight approaches zero only geometrically: **shrinkage**, not sparsity.

With plain SGD and learning rate $\\eta$, the L2 step is

$$
w \\leftarrow w - \\eta\\,(\\nabla L + 2 \\lambda w) = (1 - 2 \\eta \\lambda)\\, w - \\eta \\nabla L ,
$$

which is "weight decay": PyTorch's `SGD(weight_decay=wd)` adds $\\text{wd}\\cdot w$ to the
gradient, so it equals an L2 penalty with $\\lambda = \\text{wd}/2$ (with momentum too, since both
enter the momentum buffer the same way). Adam is different. It divides each coordinate of the
gradient by a running estimate of its scale $\\sqrt{\\hat v}$:

$$
\\text{Adam + L2:}\\quad w \\leftarrow w - \\eta\\, \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon},
\\quad g = \\nabla L + \\text{wd}\\cdot w ;
\\qquad
\\text{AdamW:}\\quad w \\leftarrow w - \\eta \\left( \\frac{\\hat m}{\\sqrt{\\hat v} + \\epsilon}
+ \\text{wd}\\cdot w \\right), \\quad g = \\nabla L .
$$

In Adam + L2 the decay goes through the same normalization as the data gradient, so weights with
large gradients are barely decayed and weights with tiny gradients are pushed to zero at a rate
of about $\\eta$ per step; AdamW (Loshchilov and Hutter, *Decoupled Weight Decay
Regularization*, 2019) shrinks every weight by the same factor $1 - \\eta\\,\\text{wd}$. The same
`weight_decay` number means very different things in the two.

## From scratch, checked against PyTorch

`cnnlab.techniques.l1_penalty` and `l2_penalty` sum $|w|$ and $w^2$ over the penalized
parameters; the `L1(λ)` and `L2(λ)` hooks add $\\lambda$ times them to the training loss. Checked
against a plain PyTorch expression, and the SGD equivalence checked by training two copies of the
network for one epoch, one with the `L2(λ)` hook, one with `SGD(weight_decay=2λ)` on the same
weights:
""")

code('''
net = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8)
W = [p for p in net.parameters() if p.ndim >= 2]          # conv kernels and linear matrices
assert_close(l1_penalty(net), sum(w.abs().sum() for w in W))
assert_close(l2_penalty(net), sum(w.pow(2).sum() for w in W))
assert_close(L2(1e-3).extra_loss(net), 1e-3 * sum(w.pow(2).sum() for w in W))
assert_close(L1(1e-3).extra_loss(net), 1e-3 * sum(w.abs().sum() for w in W))
''')

code('''
LAM = 5e-3
a, b = (build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8) for _ in range(2))
sgd_l2 = torch.optim.SGD(a.parameters(), lr=0.04, momentum=0.9)                # + L2(λ) in the loss
sgd_wd = torch.optim.SGD(decay_param_groups(b, 2 * LAM), lr=0.04, momentum=0.9)  # weight_decay = 2λ
ha = fit(a, DATA, epochs=1, lr=0.04, batch_size=32, optimizer=sgd_l2, hooks=[L2(LAM)], progress=False)
hb = fit(b, DATA, epochs=1, lr=0.04, batch_size=32, optimizer=sgd_wd, progress=False)
for p, q in zip(a.parameters(), b.parameters()):
    assert_close(p, q)
''')

code('''
with torch.no_grad():
    max_diff = max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
print(f"after {ha.steps} steps: largest parameter difference {max_diff:.1e}; "
      f"test loss {ha.test_loss:.6f} (L2 hook) vs {hb.test_loss:.6f} (weight decay)")
glue("sgd_steps", str(ha.steps), display=False); glue("sgd_diff", f"{max_diff:.0e}", display=False)
''')

md("""
After {glue:text}`sgd_steps` steps the two networks differ by at most {glue:text}`sgd_diff` in any
parameter (float32 rounding: the two compute $2\\lambda w$ in a different order) and have the same
test loss. Under SGD, an L2 penalty with strength $\\lambda$ and weight decay $2\\lambda$ are the
same algorithm.

### Decay the weights, not the biases and normalization parameters

`decay_param_groups(model, wd)` (used above) builds the two optimizer groups that the usual
recipe asks for: weight decay on convolution kernels and linear matrices, none on biases and on
batch-norm scales and shifts. A bias shifts a unit's output and a BN scale sets a layer's gain;
pulling them towards zero does not make the function simpler, it only fights the layer. The L1
and L2 hooks penalize the same set by default (`include_bias=False`). On the network with batch
norm:
""")

code('''
bn_net = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8, batch_norm=True)
names = {id(p): n for n, p in bn_net.named_parameters()}
for g in decay_param_groups(bn_net, 5e-4):
    print(f"weight_decay={g['weight_decay']}:", ", ".join(names[id(p)] for p in g["params"]))
''')

md("""
### Adam + L2 is not AdamW

Same network, same data, one epoch, `weight_decay=0.1` in both: `torch.optim.Adam` adds the decay
to the gradient before normalizing it, `torch.optim.AdamW` applies it to the weights directly.
""")

code('''
nets = {}
for name in ("adam", "adamw"):
    nets[name] = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8)
    fit(nets[name], DATA, epochs=1, lr=2e-3, batch_size=32, optimizer=name, weight_decay=0.1,
        progress=False)
with torch.no_grad():
    adam_gap = max(float((p - q).abs().max()) for p, q in
                   zip(nets["adam"].parameters(), nets["adamw"].parameters()))
''')

code('''
norms = {name: weight_stats(m)["l2_norm"] for name, m in nets.items()}
print(f"weight norm: Adam + L2 {norms['adam']:.2f}, AdamW {norms['adamw']:.2f}; "
      f"largest parameter difference {adam_gap:.3f}")
glue("adam_gap", f"{adam_gap:.2f}", display=False)
glue("adam_more", "more" if norms["adam"] < norms["adamw"] else "less", display=False)
glue("norm_adam", f"{norms['adam']:.2f}", display=False); glue("norm_adamw", f"{norms['adamw']:.2f}", display=False)
''')

md("""
After a single epoch the two optimizers already disagree by {glue:text}`adam_gap` in some weight,
and Adam + L2 has shrunk the weights {glue:text}`adam_more` than AdamW (weight norm
{glue:text}`norm_adam` against {glue:text}`norm_adamw`). What that does to accuracy is measured
further down.

## The article's code (section 4.2)

As printed, the listing does not run. It fails at the first line that uses `model`, which it never
defines; once a model exists, `Optimizer.__init__` is called without its `defaults` argument. Its
`CNN` also uses `F` without importing it and hard-codes a flatten size of `64 * 16 * 16`, which
does not match a 32x32 input after two 2x2 poolings (`64 * 8 * 8`):
""")

code('''
import torch.nn.functional as F
from cnnlab.article import ArticleL2Regularization, listing_failures, run_listing
for what, exc in listing_failures("4.2"):   # as printed, then each bug a fix uncovers
    print(f"{what}: {type(exc).__name__}: {exc}")
exc = run_listing("4.2", "CNN()(torch.randn(2, 3, 32, 32))", F=F)
print(f"its CNN on a 32x32 batch: {type(exc).__name__}: {exc}")
''')

md("""
`cnnlab.article.ArticleL2Regularization` is the article's optimizer with just those bugs fixed.
Its step, per parameter tensor, is

$$
w \\leftarrow w - \\eta\\, g - \\text{wd} \\cdot \\frac{\\lVert w \\rVert}{\\lVert g \\rVert}\\, w ,
$$

while SGD with an L2 penalty takes $w \\leftarrow w - \\eta\\, g - 2 \\eta \\lambda\\, w$. The
decay term is not scaled by the learning rate and is divided by the gradient's norm, so it is not
the gradient of any fixed penalty. Here is one step on the first fully connected layer of the
network trained above (with `wd = 0.001`, the article's default, and the matching
$\\lambda = \\text{wd}/2$):
""")

code('''
a.zero_grad()                                   # `a`: the network trained for one epoch above
x, y = DATA.train[0][:256], DATA.train[1][:256]
F.cross_entropy(a(x), y).backward()
w, g, lr, wd = a.fc1.weight.detach(), a.fc1.weight.grad, 0.04, 1e-3
article = wd * w.norm() / g.norm() * w          # the article's decay term for this step
true_l2 = lr * 2 * (wd / 2) * w                 # SGD + L2(λ = wd/2): η · 2λ · w
ratio = float(article.norm() / true_l2.norm())
print(f"|w| = {float(w.norm()):.2f}, |g| = {float(g.norm()):.4f}; article decay / L2 decay = {ratio:.0f}")
glue("art_ratio", f"{ratio:,.0f}", display=False)
''')

md("""
On this tensor the article's decay is {glue:text}`art_ratio` times the L2 decay it claims to be,
and the ratio $\\lVert w \\rVert / (\\eta \\lVert g \\rVert)$ grows as training converges and the
gradient shrinks. Here it is training the network from scratch, with its default
`weight_decay=0.001` and this chapter's learning rate, next to the same optimizer with
`weight_decay=0`, which is plain SGD (its `else` branch):
""")

code('''
class WeightNorm:                       # a fit() hook that records |w| after every step
    def __init__(self): self.norms = []
    def after_step(self, model): self.norms.append(weight_stats(model)["l2_norm"])
art = {}
for wd in (1e-3, 0.0):
    m, rec = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8), WeightNorm()
    opt = ArticleL2Regularization(m.parameters(), lr=0.04, weight_decay=wd)
    h = fit(m, DATA, epochs=3, lr=0.04, batch_size=32, optimizer=opt, hooks=[rec], progress=False)
    art[wd] = (rec.norms, h)
    print(f"weight_decay={wd}: |w| {rec.norms[0]:.2f} -> {rec.norms[-1]:.2f}, test accuracy {h.test_acc:.1%}")
''')

code('''
fig, ax = plt.subplots(figsize=(5.5, 3), layout="constrained")
for wd, (norms_, h) in art.items():
    ax.plot(norms_, label=f"weight_decay={wd} (test accuracy {h.test_acc:.0%})")
ax.set_xlabel("step"); ax.set_ylabel("|w| (all weights)"); ax.legend(fontsize=8)
ax.set_title("SmallCNN trained with the article's L2 optimizer", fontsize=9); plt.show()
for key, wd in (("art", 1e-3), ("sgd", 0.0)):
    glue(f"{key}_acc", f"{art[wd][1].test_acc:.1%}", display=False)
    glue(f"{key}_norm1", f"{art[wd][0][-1]:.2f}", display=False)
glue("art_norm0", f"{art[1e-3][0][0]:.2f}", display=False)
''')

md("""
With the article's decay the weight norm goes from {glue:text}`art_norm0` to
{glue:text}`art_norm1` and the network ends at {glue:text}`art_acc` test accuracy (10 classes:
chance is 10%); without it, plain SGD ends at {glue:text}`sgd_norm1` and
{glue:text}`sgd_acc`. And when a gradient is exactly
zero, which happens for a layer that gets no signal (a dead ReLU layer, a frozen or unused
branch), $\\lVert w \\rVert / \\lVert g \\rVert$ is $x/0$ and the weights become infinite or NaN:
""")

code('''
lin = torch.nn.Linear(3, 2)
lin.weight.grad, lin.bias.grad = torch.zeros_like(lin.weight), torch.zeros_like(lin.bias)
ArticleL2Regularization(lin.parameters()).step()
print("weights after one step with a zero gradient:", lin.weight.detach().flatten().tolist())
''')

md("""
The fix is not a new optimizer: add $\\lambda \\lVert w \\rVert_2^2$ to the loss (the `L2(λ)`
hook), or use `torch.optim.SGD(decay_param_groups(model, wd))` with $\\text{wd} = 2\\lambda$, or
`AdamW` for decoupled decay with Adam.

## Does it help? λ against the train/test gap

Now the measurement: the same network and subset, with an L2 penalty of strength $\\lambda$
(`RunConfig.l2`) and, separately, an L1 penalty (`RunConfig.l1`), {glue:text}`seeds` seeds
each. $\\lambda = 0$ is the same unregularized run in both sweeps.
""")

code('''
L2_VALUES = [0.0, 1e-3, 3e-3, 1e-2, 3e-2]
l2_res = sweep(BASE, "l2", L2_VALUES, seeds=SEEDS)
for s in l2_res.summary:
    print(describe(s, "l2"), f"Train-test gap {s['gap']:.1%}.")
''')

code('''
L1_VALUES = [0.0, 3e-5, 1e-4, 3e-4, 1e-3]     # λ = 0 is the same run as in the L2 sweep (cached)
l1_res = sweep(BASE, "l1", L1_VALUES, seeds=SEEDS)
for s in l1_res.summary:
    print(describe(s, "l1"), f"Train-test gap {s['gap']:.1%}.")
''')

code('''
fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), layout="constrained", sharey="row")
for col, res in enumerate((l2_res, l1_res)):         # columns: L2, L1; λ = 0 drawn at the left
    plot_sweep(res, "train_acc", ax=axes[0, col], logx=True, label="train")
    plot_sweep(res, "test_acc", ax=axes[0, col], logx=True, label="test")
    plot_sweep(res, "gap", ax=axes[1, col], logx=True)
    axes[0, col].set_title(f"{res.param.upper()} penalty", fontsize=9)
    axes[1, col].set_xlabel(f"λ ({res.param.upper()})"); axes[0, col].set_xlabel("")
axes[0, 0].set_ylabel("accuracy (mean, 95% CI)"); axes[1, 0].set_ylabel("train - test (gap)")
for ax in axes[:, 1]: ax.set_ylabel("")
plt.show()
''')

code('''
from cnnlab.experiments import paired_difference, verdict   # per-seed differences; a word for a CI
''')

code('''
helped = {}
for res in (l2_res, l1_res):
    k, ends = res.param, (res.summary[0], res.summary[-1])    # λ = 0 and the largest λ
    best = max(res.summary[1:], key=lambda s: s["test_acc"])[k]
    d, lo, hi = paired_difference(res, best)
    helped[k] = lo > 0
    gap_lo, gap_hi = paired_difference(res, res.values[-1], "gap")[1:]
    texts = {"best": f"{best:g}", "verdict": verdict(lo, hi), "diff": f"{100 * d:+.1f}",
             "ci": f"{100 * lo:+.1f} to {100 * hi:+.1f}", "max": f"{res.values[-1]:g}",
             "gapword": verdict(gap_lo, gap_hi, "wider", "narrower", "not measurably different"),
             **{f"{m.split('_')[0]}{i}": f"{s[m]:.1%}" for i, s in enumerate(ends)
                for m in ("gap", "test_acc", "train_acc")}}
    for key, text in texts.items():
        glue(f"{k}_{key}", text, display=False)
''')

code('''
steps = BASE.epochs * -(-N_TRAIN // BASE.batch_size)       # epochs x batches per epoch
if not any(helped.values()):
    conclusion = (f"In this regime, {N_TRAIN} images and {steps} SGD steps of a small network, "
                  "neither penalty buys a measurable gain in test accuracy at any strength tried. "
                  "The small network, the short training and SGD's own noise already regularize "
                  "it; explicit penalties matter more for larger networks trained far longer "
                  "(see the exercises).")
else:
    which = " and ".join(k.upper() for k, v in helped.items() if v)
    conclusion = (f"So here {which} at the right strength does buy test accuracy, by the amount "
                  "above; too strong a penalty costs accuracy again, so λ is tuned on validation data.")
glue("reg_conclusion", conclusion, display=False)
''')

md("""
Without a penalty the network overfits: training accuracy {glue:text}`l2_train0`, test accuracy
{glue:text}`l2_test0`, a gap of {glue:text}`l2_gap0`. With L2 at $\\lambda$ =
{glue:text}`l2_max` the gap is {glue:text}`l2_gap1` ({glue:text}`l2_gapword` than without, seed
by seed), with training accuracy {glue:text}`l2_train1` and test accuracy {glue:text}`l2_test1`;
with L1 at $\\lambda$ = {glue:text}`l1_max` the gap is {glue:text}`l1_gap1`
({glue:text}`l1_gapword`), training accuracy {glue:text}`l1_train1`, test accuracy
{glue:text}`l1_test1`. A smaller gap is not the goal, though; test accuracy is, and a gap can
close from above, by fitting the training set less.

Compared seed by seed with the unregularized run (same subset, same initial weights, same batch
order), the best L2 strength in this sweep, $\\lambda$ = {glue:text}`l2_best`,
**{glue:text}`l2_verdict`** test accuracy: {glue:text}`l2_diff` percentage points (95% CI
{glue:text}`l2_ci`). The best L1 strength, $\\lambda$ = {glue:text}`l1_best`,
**{glue:text}`l1_verdict`** it: {glue:text}`l1_diff` points (95% CI {glue:text}`l1_ci`).
(Picking the best of four values and then testing it favours it slightly, so an interval that
contains zero is a clear "no measurable effect".) {glue:text}`reg_conclusion`

### What L1 and L2 do to the weights

Sparsity versus shrinkage is visible in the weights. The sweeps record, for every run, the share
of weights with $|w| < 10^{-3}$ and the weights' L2 norm:
""")

code('''
def weight_summary(res, key):
    rows = [{**r, key: r["weights"][key]} for r in res.rows]
    return summarize(rows, res.param, (key,))
fig, axes = plt.subplots(2, 2, figsize=(10, 5.2), layout="constrained", sharey="row")
for col, res in enumerate((l2_res, l1_res)):
    for row, key in enumerate(("frac_near_zero", "l2_norm")):
        plot_sweep(weight_summary(res, key), key, param=res.param, ax=axes[row, col], logx=True)
    axes[0, col].set_title(f"{res.param.upper()} penalty", fontsize=9); axes[0, col].set_xlabel("")
axes[0, 0].set_ylabel("share of |w| < 1e-3"); axes[1, 0].set_ylabel("|w| (L2 norm)")
for ax in axes[:, 1]: ax.set_ylabel("")
plt.show()
''')

code('''
z1, n1 = (weight_summary(l1_res, k)[-1][k] for k in ("frac_near_zero", "l2_norm"))  # L1, largest λ
z2, n2 = (weight_summary(l2_res, k) for k in ("frac_near_zero", "l2_norm"))
j = min(range(1, len(L2_VALUES)), key=lambda i: abs(n2[i]["l2_norm"] - n1))     # L2 with a similar |w|
for key, value in [("wz1", f"{z1:.0%}"), ("wn1", f"{n1:.1f}"), ("wz2", f"{z2[j]['frac_near_zero']:.0%}"),
                   ("wn2", f"{n2[j]['l2_norm']:.1f}"), ("wl1", f"{L1_VALUES[-1]:g}"), ("wl2", f"{L2_VALUES[j]:g}"),
                   ("wa1", f"{l1_res.summary[-1]['test_acc']:.1%}"), ("wa2", f"{l2_res.summary[j]['test_acc']:.1%}")]:
    glue(key, value, display=False)
''')

md("""
Both penalties shrink the weights as $\\lambda$ grows, but compare them at a similar weight norm
(mean over seeds): L1 at $\\lambda$ = {glue:text}`wl1` ends with $\\lVert w \\rVert$ =
{glue:text}`wn1` and {glue:text}`wz1` of the weights within $10^{-3}$ of zero; L2 at
$\\lambda$ = {glue:text}`wl2` with $\\lVert w \\rVert$ = {glue:text}`wn2` and
{glue:text}`wz2` (their mean test accuracies: {glue:text}`wa1` and {glue:text}`wa2`).

And the weight distributions of that pair, trained once more with one seed (the sweeps keep only
summary statistics):
""")

code('''
lam1, lam2 = L1_VALUES[-1], L2_VALUES[j]          # the pair compared above
trained = {}
for name, hooks in [("none", []), (f"L1 λ={lam1:g}", [L1(lam1)]), (f"L2 λ={lam2:g}", [L2(lam2)])]:
    m = build_model(DATA.input_shape, DATA.num_classes, seed=0, width=8)
    fit(m, DATA, epochs=BASE.epochs, lr=BASE.lr, batch_size=BASE.batch_size, hooks=hooks,
        progress=False)
    trained[name] = m
''')

code('''
stats = {name: weight_stats(m) for name, m in trained.items()}
for name, st in stats.items():
    print(f"{name:12s} near zero {st['frac_near_zero']:6.1%}  |w| {st['l2_norm']:6.2f}  "
          f"max|w| {st['abs_max']:.3f}")
for k, st in zip(("none", "l1", "l2"), stats.values()):
    glue(f"nz_{k}", f"{st['frac_near_zero']:.0%}", display=False)
    glue(f"max_{k}", f"{st['abs_max']:.2f}", display=False)
''')

code('''
from cnnlab.plots import plot_weight_hist
weights = {k: penalized_parameters(m) for k, m in trained.items()}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), layout="constrained")
plot_weight_hist(weights, ax=axes[0])
plot_weight_hist(weights, ax=axes[1], range_=(-0.02, 0.02), bins=81)
axes[0].set_title("all weights", fontsize=9); axes[1].set_title("zoom on |w| < 0.02", fontsize=9)
plt.show()
''')

md("""
In this run L1 leaves {glue:text}`nz_l1` of the weights within $10^{-3}$ of zero, L2
{glue:text}`nz_l2`, no penalty {glue:text}`nz_none`. L1 subtracts the same amount from every
weight at every step: the weights the data hardly uses reach zero and stay in a narrow spike there,
while the large ones keep most of their size (the largest is {glue:text}`max_l1`, against
{glue:text}`max_none` without a penalty). L2 multiplies every weight by the same factor at every
step: the whole distribution narrows, the large, useful weights included (the largest is
{glue:text}`max_l2`), and small weights approach zero only geometrically. SGD with L1's
subgradient does not produce exact zeros: each weight in the spike oscillates around zero by about
one step; proximal methods (soft thresholding) or pruning give exact zeros.

### Weight decay with Adam vs AdamW

The same `weight_decay` values with Adam (coupled, i.e. L2) and AdamW (decoupled), learning rate
0.002, three seeds each, and (to save time; the decay acts from the first step) half the epochs
of the SGD runs; `weight_decay = 0` is the same run for both:
""")

code('''
WD_VALUES = [0.0, 1e-1, 1.0]
ADAM = replace(BASE, optimizer="adam", lr=2e-3, epochs=BASE.epochs // 2)
adam_res = sweep(ADAM, "weight_decay", WD_VALUES, seeds=3)
adamw_res = sweep(replace(ADAM, optimizer="adamw"), "weight_decay", WD_VALUES[1:], seeds=3)
adamw_rows = [r for r in adam_res.rows if r["weight_decay"] == 0] + adamw_res.rows
''')

code('''
norm_rows = lambda rows: [{**r, "l2_norm": r["weights"]["l2_norm"]} for r in rows]
curves = {"Adam + L2 (coupled)": norm_rows(adam_res.rows), "AdamW (decoupled)": norm_rows(adamw_rows)}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), layout="constrained")
for label, rows in curves.items():
    summary = summarize(rows, "weight_decay", ("test_acc", "l2_norm"))
    plot_sweep(summary, "test_acc", param="weight_decay", ax=axes[0], logx=True, label=label)
    plot_sweep(summary, "l2_norm", param="weight_decay", ax=axes[1], logx=True, label=label)
    for key in ("test_acc", "l2_norm"):
        glue(f"{label.split()[0]}_{key}", f"{summary[-1][key]:.1%}" if key == "test_acc"
             else f"{summary[-1][key]:.2f}", display=False)
axes[1].set_ylabel("|w| after training"); plt.show()
glue("adam0", f"{adam_res.summary[0]['test_acc']:.1%}", display=False); glue("wd_top", f"{WD_VALUES[-1]:g}", display=False)
''')

md("""
At `weight_decay` = {glue:text}`wd_top`, Adam with coupled decay ends at {glue:text}`Adam_test_acc`
test accuracy with a weight norm of {glue:text}`Adam_l2_norm`, AdamW at {glue:text}`AdamW_test_acc`
with {glue:text}`AdamW_l2_norm` (no decay: {glue:text}`adam0`). With the decay inside Adam's
normalization, weights whose data gradients are small are pushed towards zero at a rate of about
$\\eta$ per step whatever their size; AdamW's decay shrinks each weight by the factor
$1 - \\eta\\,\\text{wd}$ per step, which is mild at these values. The same number is a very
different amount of regularization in the two optimizers, and a `weight_decay` tuned for one
does not transfer to the other. (`RunConfig.weight_decay` decays every parameter, biases
included; `decay_param_groups` is the refinement.)

## Try it

With a kernel (locally or on Colab) the panel trains the L2 sweep's setting for the $\\lambda$
you pick; already-trained runs come from the cache, so the values above are instant:
""")

code('''
display(sweep_panel(BASE, "l2", L2_VALUES, metric="test_acc", seeds=3, logx=True))
''')

md("""
On the static page, the same sweep precomputed: pick $\\lambda$ to see its learning curves (mean
over {glue:text}`seeds` seeds, band from min to max) next to the whole sweep.
""")

code('''
HTML(sweep_slider(l2_res, "test_acc", logx=True))
''')

md("""
## Takeaways

- The article's formulas are right: L1 adds $\\lambda \\lVert w \\rVert_1$, L2 adds
  $\\lambda \\lVert w \\rVert_2^2$ (gradient $2\\lambda w$) to the loss. Its "L2 optimizer" is not
  L2: it scales the decay by $\\lVert w \\rVert / \\lVert g \\rVert$, which explodes as the gradient
  shrinks, drags the weights down (here to a norm of {glue:text}`art_norm1` and {glue:text}`art_acc`
  test accuracy), and divides by zero on a zero gradient.
- Under SGD, an L2 penalty $\\lambda$ and `weight_decay = 2λ` are the same update (checked to
  float precision). Under Adam they are not: use AdamW for weight decay with Adam, and re-tune the
  value when switching.
- Decay weights, not biases or normalization parameters (`decay_param_groups`).
- L1 makes weights sparse, L2 shrinks them all. A narrower train/test gap is not the goal: whether
  a penalty improves test accuracy has to be measured, seed by seed against no penalty, with a
  confidence interval (above, for this small-data regime).

## Exercises

1. **Decay everything.** Train with `torch.optim.SGD(model.parameters(), lr=0.04, momentum=0.9,
   weight_decay=0.02)` (biases included) and with `SGD(decay_param_groups(model, 0.02), ...)` on
   the network with `batch_norm=True`, for five seeds. Does decaying the BN parameters change test
   accuracy measurably? Look at the BN scales (`model.bn1.weight`) after training.
2. **Fix the article's optimizer.** Write a `step()` that makes `ArticleL2Regularization` a true L2
   optimizer (decay term $\\eta \\cdot 2\\lambda w$), and check it with `assert_close` against
   `torch.optim.SGD(weight_decay=2λ, momentum=0)` over a few steps.
3. **More data, longer training.** Run `sweep_panel(replace(BASE, train_size=5000, epochs=30),
   "l2", L2_VALUES, logx=True)` (minutes per value on a CPU, seconds on a GPU). Does the best $\\lambda$ move, and does the
   paired difference to $\\lambda = 0$ become significant?
""")

nb.write(Path(__file__).resolve().parents[1] / "regularization.ipynb")
