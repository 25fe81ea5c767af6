"""Build book/weight_clipping.ipynb (without outputs).

    .venv/bin/python book/_src/make_weight_clipping.py
"""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md(r'''
# Weight clipping (权重裁剪)

The article (sections 2.1, 3.1 and 4.1) says that weight clipping "limits the range of the weights
to prevent the vanishing or exploding gradients that overly large weights cause", and that this
"makes the gradients more stable and so improves training efficiency". Its recipe in section 3.1 is
the right one: clamp every weight to $[-r, r]$. Its code in section 4.1 is not: a `WeightClip`
"optimizer" that clamps a tensor only when its *gradient* is large, and never takes a gradient
step at all.

What is true: weight clipping constrains the **model**, not the optimization. It limits which
functions the network can represent. That is exactly why the Wasserstein GAN uses it (to keep its
critic Lipschitz), and it is why a small $r$ ruins a classifier. It is not the cure for exploding
gradients. The cure is **gradient-norm clipping** (Pascanu, Mikolov and Bengio, "On the difficulty
of training recurrent neural networks", 2013). It rescales the *gradient* when it is too long, and
leaves the weights, and so the model's capacity, alone.

This chapter implements both from scratch and checks them against PyTorch. It sweeps $r$ over five
seeds and looks at the weight histograms, provokes exploding gradients and fixes them with
gradient-norm clipping (plotting the gradient norm at every step), and runs the article's
`WeightClip`.
''')

code(SETUP + START_WORKERS)

code('''
%matplotlib inline
import math
from dataclasses import replace
import torch
import torch.nn.functional as F
from torch.testing import assert_close
from cnnlab.article import ArticleWeightClip, listing_failures, split_listing
from cnnlab.models import build_model
from cnnlab.plots import plot_weight_hist
from cnnlab.techniques import GradientClipping, WeightClipping, clip_weights_, grad_norm
from cnnlab.train import evaluate, fit
''')

code('''
TRAIN_SIZE = 1000  # a small training subset, so that one run takes about a second
BASE = RunConfig(DATASET, train_size=TRAIN_SIZE, val_size=small_val_size(DATASET),
                 width=8, epochs=6, lr=0.05, batch_size=64)
SEEDS = 5
data = load_for(BASE, seed=0)  # the splits of the runs below with seed 0
CHANCE = 1 / data.num_classes  # accuracy of a constant guess on these balanced test sets
def glue_text(**values):  # computed values for the prose (myst-nb glue; not displayed here)
    for key, value in values.items():
        glue(key, str(value), display=False)
glue_text(wc_dataset=DATASET.replace("_", "-"), wc_train_size=f"{TRAIN_SIZE:,}",
          wc_val_size=f"{len(data.val[1]):,}", wc_test_size=f"{len(data.test[1]):,}",
          wc_width=BASE.width, wc_epochs=BASE.epochs, wc_momentum=BASE.momentum, wc_lr=BASE.lr,
          wc_batch=BASE.batch_size, wc_chance=f"{CHANCE:.0%}")
''')

md(r'''
All numbers on this page come from {glue:text}`wc_dataset`: a stratified subset of
{glue:text}`wc_train_size` training images (a new subset per seed), {glue:text}`wc_val_size`
held-out validation images, and the {glue:text}`wc_test_size` images of the official test set. The
network is the book's small two-convolution CNN (width {glue:text}`wc_width`, no batch norm),
trained for {glue:text}`wc_epochs` epochs with SGD (momentum {glue:text}`wc_momentum`, learning
rate {glue:text}`wc_lr`, batch size {glue:text}`wc_batch`) unless a section says otherwise. The
hardware line above is the machine that produced them. Chance level, a constant guess, is
{glue:text}`wc_chance`.

## The math

Weight clipping runs after every optimizer step and clamps every parameter $w$ to $[-r, r]$:

$$
w \;\leftarrow\; \operatorname{clip}(w, -r, r) \;=\; \min\bigl(\max(w, -r),\, r\bigr).
$$

The article's section 3.1 describes exactly this (its first step, computing each matrix's maximum
and minimum, is not needed). Gradient-norm clipping runs after `backward()` and before the step. It
treats the gradients $g_1, \dots, g_T$ of all $T$ parameter tensors as one long vector, and if that
vector is longer than $c$ (`max_norm`), it shrinks it to length $c$ without turning it:

$$
\|g\|_2 = \Bigl(\sum_{i=1}^{T} \|g_i\|_2^2\Bigr)^{1/2},
\qquad
g_i \;\leftarrow\; g_i \cdot \min\Bigl(1,\; \frac{c}{\|g\|_2 + \epsilon}\Bigr),
$$

with $\epsilon = 10^{-6}$ in PyTorch. The first formula changes the model (the set of reachable
weights becomes a box). The second changes only the length of one step: the step direction is
kept, and every weight can still go anywhere.

The article's `WeightClip`, written as a formula, does neither. For each tensor $w$ with gradient
$\nabla_w L$ and its `max_norm` $m$:

$$
\text{if } \|\nabla_w L\|_2 > m: \quad w \leftarrow \operatorname{clip}(w, -m, m),
$$

and there is no $w \leftarrow w - \eta \nabla_w L$ anywhere: the model never learns.

## From scratch, checked against PyTorch

`cnnlab.techniques.clip_weights_` is the first formula and the `GradientClipping` hook (what
`fit()` calls after `backward()`) the second. One cell checks both: weight clipping against
`torch.clamp_`, and gradient clipping against `torch.nn.utils.clip_grad_norm_` and against the
formula computed by hand on the gradients of a real batch.
''')

code('''
w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.1  # a conv weight
ours = w.clone(); clip_weights_(ours, 0.05)
assert_close(ours, w.clone().clamp_(-0.05, 0.05))                  # weight clipping = clamp_
nets = [build_model(data.input_shape, data.num_classes, seed=0, width=8) for _ in range(2)]
for net in nets:
    F.cross_entropy(net(data.train[0][:64]), data.train[1][:64]).backward()
raw = [p.grad.clone() for p in nets[0].parameters()]
GradientClipping(max_norm=0.1).after_backward(nets[0])              # ours, as fit() calls it
total = torch.nn.utils.clip_grad_norm_(nets[1].parameters(), max_norm=0.1)  # PyTorch's
scale = min(1.0, 0.1 / (torch.cat([g.flatten() for g in raw]).norm() + 1e-6))  # the formula
for p, q, g in zip(nets[0].parameters(), nets[1].parameters(), raw):
    assert_close(p.grad, q.grad); assert_close(p.grad, g * scale)
print(f"both match: gradient norm {float(total):.3f} -> {grad_norm(nets[0]):.3f} (max_norm 0.1)")
''')

md(r'''
## Where weight clipping is really used: the WGAN critic

The Wasserstein GAN (Arjovsky, Chintala and Bottou, "Wasserstein GAN", 2017) trains a *critic*
$f$ whose difference of means, $\mathbb{E}[f(\text{real})] - \mathbb{E}[f(\text{fake})]$,
estimates the Wasserstein distance. That holds only if $f$ is Lipschitz:
$|f(x) - f(y)| \le K \|x - y\|$ for a fixed $K$. A network whose weights all lie in $[-r, r]$ has
layers of bounded norm, so it is $K$-Lipschitz for some $K$ that depends on $r$ and the
architecture. So after every RMSProp step the critic's weights are clamped to $[-0.01, 0.01]$.
Here the restriction of the function class *is the point*. Even so, the authors call weight clipping
"a clearly terrible way to enforce a Lipschitz constraint". Gulrajani et al. ("Improved Training of
Wasserstein GANs", 2017) showed its two failures: *capacity underuse*, where the critic learns
overly simple functions and its weights pile up at $\pm r$, and vanishing or exploding gradients
unless $r$ is tuned just right. They replaced it with a **gradient penalty** (WGAN-GP). Miyato et
al. ("Spectral Normalization for Generative Adversarial Networks", 2018) replaced it with
**spectral normalization**, which divides each weight matrix by its largest singular value. Today
both are used instead of clipping.

A classifier has no Lipschitz constraint to meet, so for it weight clipping is only a restriction.
The next sections measure what it costs.

## Clamp range $r$ vs accuracy

Five values of $r$ and "off", each over five seeds. Which values are "large" depends on the
initial weights. PyTorch draws them uniformly from $\pm 1/\sqrt{\text{fan-in}}$, so a layer
with many inputs starts with small weights:
''')

code('''
R_VALUES = [None, 0.3, 0.1, 0.05, 0.02, 0.01]  # None: no clipping
init = build_model(data.input_shape, data.num_classes, seed=0, width=8)
for name in ("conv1", "conv2", "fc1", "fc2"):
    w = getattr(init, name).weight.detach()
    above = ", ".join(f"{float((w.abs() > r).float().mean()):.0%}" for r in R_VALUES[1:])
    print(f"{name}: fan-in {w[0].numel():4d}, largest |w| {float(w.abs().max()):.3f}; "
          f"share above r = {R_VALUES[1:]}: {above}")
    glue_text(**{f"wc_init_{name}": f"{float(w.abs().max()):.3f}"})
glue_text(wc_fanin_fc1=init.fc1.weight[0].numel())
''')

md(r'''
The largest initial weight is {glue:text}`wc_init_conv1` in the first convolution,
{glue:text}`wc_init_conv2` in the second and {glue:text}`wc_init_fc1` in the
{glue:text}`wc_fanin_fc1`-input fully connected layer. The largest $r$ barely touches the
initial weights; the smallest clips most of them.
''')

code('''
clip = sweep(BASE, "clip_weights", R_VALUES, seeds=SEEDS)
fig = plot_sweep(clip, "test_acc")
fig.axes[0].axhline(CHANCE, color="0.5", ls=":", lw=1, label="chance")
fig.axes[0].set_xlabel("clip range r (off = no clipping)")
fig.axes[0].legend(fontsize=8); plt.show()
for s in clip.summary:
    print(describe(s, "clip_weights"))
''')

code('''
by_r = {s["clip_weights"]: s for s in clip.summary}
def pct_ci(s, m="test_acc"):
    return f"{s[m]:.1%} (95% CI {s[m + '_low']:.1%} to {s[m + '_high']:.1%})"
hurt = [r for r in R_VALUES[1:] if by_r[r]["test_acc_high"] < by_r[None]["test_acc_low"]]
safe = [r for r in R_VALUES[1:] if r not in hurt]
glue_text(wc_off=pct_ci(by_r[None]), wc_safe=", ".join(map(str, safe)) or "none of the values",
          wc_hurt=", ".join(map(str, hurt)) or "none of the values",
          wc_first_hurt=max(hurt) if hurt else "none of the values",
          wc_first_hurt_acc=pct_ci(by_r[max(hurt)]) if hurt else "n/a",
          wc_min_r=R_VALUES[-1], wc_min_r_acc=pct_ci(by_r[R_VALUES[-1]]))
''')

code('''
loss_min_r = [r["train_loss"] for r in clip.rows if r["clip_weights"] == R_VALUES[-1]]
glue_text(wc_min_r_loss=f"{sum(loss_min_r) / len(loss_min_r):.3f}",
          wc_ln10=f"{math.log(data.num_classes):.3f}")
''')

md(r'''
**Measured effect.** Without clipping the network reaches {glue:text}`wc_off` test accuracy.
Clipping at r = {glue:text}`wc_safe` stays within the noise of that (the confidence intervals
overlap). Clipping costs accuracy at r = {glue:text}`wc_hurt`. At the largest of these, r =
{glue:text}`wc_first_hurt`, the network reaches {glue:text}`wc_first_hurt_acc`, and at r =
{glue:text}`wc_min_r` it reaches {glue:text}`wc_min_r_acc`, against {glue:text}`wc_chance` for a
constant guess. At r = {glue:text}`wc_min_r` the mean final training loss is
{glue:text}`wc_min_r_loss`; a uniform guess over the classes has loss $\ln 10 =$
{glue:text}`wc_ln10`. With every weight this small, the logits cannot grow large enough to prefer
one class, so the network cannot fit even its training set. That is capacity collapse, and it
comes from the constraint, not from the optimizer.

### Capacity collapse, seen in the weights

Three single runs with `fit` and the `WeightClipping` hook, with the configuration and the seed
of the sweep's first runs: no clipping, a moderate $r$, and the smallest one. Each run also
records its gradient norms, for a later section.
''')

code('''
HIST_R = [None, 0.05, 0.01]
trained = {}
for r in HIST_R:
    model = build_model(data.input_shape, data.num_classes, seed=0, width=8)
    rec = GradientClipping(max_norm=1e9)  # a limit never reached: it only records the norms
    hooks = [rec] + ([WeightClipping(r)] if r is not None else [])
    hist = fit(model, data, epochs=BASE.epochs, lr=BASE.lr, seed=0, hooks=hooks, progress=False)
    trained[r] = (model, hist, rec.norms)
fig, axes = plt.subplots(1, 3, figsize=(11, 3.2), layout="constrained")
for ax, (r, (model, hist, _)) in zip(axes, trained.items()):
    plot_weight_hist({f"r = {r or 'off'}": list(model.parameters())}, ax=ax)
    ax.set_title(f"r = {r or 'off'}: test accuracy {hist.test_acc:.1%}", fontsize=9)
plt.show()
''')

code('''
def frac_at_bound(model, r):  # share of all parameters sitting exactly at -r or +r
    ps = [p.detach().flatten() for p in model.parameters()]
    return float((torch.cat(ps).abs() >= r * (1 - 1e-6)).float().mean())
all_off = torch.cat([p.detach().flatten() for p in trained[None][0].parameters()])
glue_text(wc_absmax_off=f"{float(all_off.abs().max()):.2f}", wc_r_mid=HIST_R[1], wc_r_min=HIST_R[2])
for key, r in (("mid", HIST_R[1]), ("min", HIST_R[2])):
    glue_text(**{f"wc_bound_{key}": f"{frac_at_bound(trained[r][0], r):.0%}"})
    print(f"r = {r}: {frac_at_bound(trained[r][0], r):.1%} of the parameters sit at +-r")
''')

md(r'''
Unclipped, the weights spread smoothly, and the largest is {glue:text}`wc_absmax_off`. Clipped,
every weight that wants to be larger is stopped at the wall. At r = {glue:text}`wc_r_mid`,
{glue:text}`wc_bound_mid` of all parameters sit exactly at $\pm r$, the two spikes at the edges. At
r = {glue:text}`wc_r_min` it is {glue:text}`wc_bound_min`. A weight at the wall carries only its
sign. The network has lost the magnitudes that let it weigh one input more than another. This is
the pile-up that Gulrajani et al. saw in WGAN critics.

## Exploding gradients, and the right fix

The article promises that clipping weights prevents exploding gradients. To see what does, we make
training unstable on purpose. We keep the same network without batch norm and use SGD with momentum
0.9 at a learning rate {glue:text}`wc_lr_factor` times the default one, a rate found by trying
larger ones until the plain network failed. We train once without any clipping and once with
gradient-norm clipping. The `GradientClipping` hook records the total gradient norm *before*
clipping at every step. Without clipping we still use it, with a `max_norm` of $10^9$ that no
gradient reaches, so it only records.
''')

code('''
LR_UNSTABLE, MAX_NORM = 0.5, 1.0
glue_text(wc_lr_factor=f"{LR_UNSTABLE / BASE.lr:.0f}", wc_lr_unstable=LR_UNSTABLE,
          wc_max_norm=MAX_NORM)
unstable = {}
for name, c in [("no clipping", 1e9), (f"clip_grad_norm = {MAX_NORM}", MAX_NORM)]:
    model = build_model(data.input_shape, data.num_classes, seed=0, width=8)
    hook = GradientClipping(max_norm=c)   # c = 1e9 is never reached: it only records the norms
    hist = fit(model, data, epochs=BASE.epochs, lr=LR_UNSTABLE, seed=0, hooks=[hook],
               progress=False)
    unstable[name] = (model, hist, hook.norms)
''')

code('''
fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
for name, (model, hist, norms) in unstable.items():
    ax.plot(range(1, len(norms) + 1), norms, lw=1.2,
            label=f"{name}: test accuracy {hist.test_acc:.1%}")
ax.axhline(MAX_NORM, color="0.5", ls="--", lw=1, label="max_norm")
ax.set_yscale("log"); ax.set_xlabel("optimizer step")
ax.set_ylabel("gradient norm (before clipping)")
ax.set_title(f"SGD, momentum 0.9, lr = {LR_UNSTABLE}, no batch norm", fontsize=9)
ax.legend(fontsize=8); ax.grid(alpha=0.3); plt.show()
''')

code('''
def dead_units(model):  # share of hidden units (after fc1) that output 0 for every test image
    with torch.no_grad():
        hidden = model.act3(model.fc1(model.features(data.test[0]).flatten(1)))  # (N, hidden)
    return float((hidden.amax(0) == 0).float().mean())
def n_classes_predicted(model):
    with torch.no_grad():
        return model(data.test[0]).argmax(1).unique().numel()
(m_off, h_off, n_off), (m_on, h_on, n_on) = unstable.values()
peak = max(range(len(n_off)), key=n_off.__getitem__)
last_epoch = n_off[-math.ceil(TRAIN_SIZE / BASE.batch_size):]  # the norms of the last epoch
''')

code('''
glue_text(wc_norm_first=f"{n_off[0]:.2f}", wc_norm_peak=f"{n_off[peak]:.0f}",
          wc_norm_peak_step=peak + 1, wc_steps=len(n_off),
          wc_norm_last=f"{sum(last_epoch) / len(last_epoch):.2f}",
          wc_dead_off=f"{dead_units(m_off):.0%}", wc_dead_on=f"{dead_units(m_on):.0%}",
          wc_loss_off=f"{h_off.train_loss[-1]:.3f}", wc_acc_off_unstable=f"{h_off.test_acc:.1%}",
          wc_acc_on_unstable=f"{h_on.test_acc:.1%}",
          wc_classes_off=n_classes_predicted(m_off), wc_classes_on=n_classes_predicted(m_on))
''')

md(r'''
Without clipping the gradient norm starts at {glue:text}`wc_norm_first`. Early in training it
spikes to {glue:text}`wc_norm_peak` (step {glue:text}`wc_norm_peak_step` of {glue:text}`wc_steps`).
One such step at learning rate {glue:text}`wc_lr_unstable`, amplified by momentum, throws the
weights so far that the ReLUs die: {glue:text}`wc_dead_off` of the hidden layer's units output zero
for every test image (against {glue:text}`wc_dead_on` with clipping). After that the gradient is
tiny (its mean over the last epoch is {glue:text}`wc_norm_last`), because almost no signal gets
through the dead units. The training loss is stuck at {glue:text}`wc_loss_off`, next to the uniform
guess's {glue:text}`wc_ln10`. The network predicts {glue:text}`wc_classes_off` distinct class(es)
for the {glue:text}`wc_test_size` test images and reaches {glue:text}`wc_acc_off_unstable`. Here
the loss never becomes NaN, so `fit` does not flag a divergence. A dead network is the quieter face
of the same explosion.

With gradient-norm clipping at `max_norm` = {glue:text}`wc_max_norm` the spikes still happen
(the hook records the norm before clipping), but no gradient that reaches the optimizer is longer
than `max_norm`. (Momentum can still add several of them up into one step.) The network predicts
{glue:text}`wc_classes_on` distinct classes and reaches {glue:text}`wc_acc_on_unstable`. The
weights were never clamped.

### Over seeds and learning rates

One seed can be lucky, so here are five seeds per learning rate, with and without `clip_grad_norm`
= {glue:text}`wc_max_norm`. A run counts as *collapsed* when its test accuracy is within 5 points
of chance.
''')

code('''
LRS = [0.05, 0.2, 0.5]
lr_plain = sweep(BASE, "lr", LRS, seeds=SEEDS)
lr_clip = sweep(replace(BASE, clip_grad_norm=MAX_NORM), "lr", LRS, seeds=SEEDS)
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
plot_sweep(lr_plain, "test_acc", ax=ax, logx=True, label="no clipping")
plot_sweep(lr_clip, "test_acc", ax=ax, logx=True, label=f"clip_grad_norm = {MAX_NORM}")
ax.axhline(CHANCE, color="0.5", ls=":", lw=1, label="chance")
ax.set_xlabel("learning rate (SGD, momentum 0.9)"); ax.minorticks_off()
ax.legend(fontsize=8); plt.show()
''')

code('''
def collapsed(result, lr):  # "k/n": runs at this lr within 5 points of chance
    accs = [r["test_acc"] for r in result.rows if r["lr"] == lr]
    return f"{sum(a < CHANCE + 0.05 for a in accs)}/{len(accs)}"
p0, c0 = lr_plain.summary[0], lr_clip.summary[0]  # the default learning rate
stable_norms = torch.tensor(trained[None][2])  # the unclipped run at the default lr, above
glue_text(wc_lrs=", ".join(map(str, LRS)), wc_low_lr=LRS[0],
          wc_collapse_plain=", ".join(collapsed(lr_plain, lr) for lr in LRS),
          wc_collapse_clip=", ".join(collapsed(lr_clip, lr) for lr in LRS),
          wc_low_lr_plain=pct_ci(p0), wc_low_lr_clip=pct_ci(c0),
          wc_low_lr_verdict="costs some accuracy" if c0["test_acc_high"] < p0["test_acc_low"]
          else "costs nothing measurable",
          wc_stable_median=f"{float(stable_norms.median()):.2f}",
          wc_stable_above=f"{float((stable_norms > MAX_NORM).float().mean()):.0%}")
''')

md(r'''
**Measured effect.** At learning rates {glue:text}`wc_lrs`, the number of collapsed runs out of
five is {glue:text}`wc_collapse_plain` without clipping and {glue:text}`wc_collapse_clip` with
gradient-norm clipping. Where some seeds collapse and others do not, a mean with a $t$ interval
describes the two-valued outcome badly (the interval can even reach below zero), so the counts are
the better summary there. What does clipping cost where training is stable? At the default
learning rate {glue:text}`wc_low_lr` it {glue:text}`wc_low_lr_verdict`:
{glue:text}`wc_low_lr_clip` with clipping against {glue:text}`wc_low_lr_plain` without. In the
unclipped run at that rate (seed 0, recorded above), the median gradient norm is
{glue:text}`wc_stable_median`, and {glue:text}`wc_stable_above` of the steps are longer than
`max_norm` = {glue:text}`wc_max_norm`: clipping shortens those steps even though nothing was
exploding. `max_norm` is a hyperparameter: set it near the typical norm of stable training, not
far below it.

## The article's `WeightClip`

This is the class as printed in section 4.1:
''')

code('''
definitions, driver = split_listing("4.1")
print(definitions[definitions.index("# 定义一个权重裁剪优化器"):] + driver)
''')

md(r'''
Run as printed, the listing stops at its first bug. Each fix only uncovers the next one:
''')

code('''
for what, exc in listing_failures("4.1"):   # as printed, then each bug a fix uncovers
    print(f"- {what}\\n    {type(exc).__name__}: {exc}")
''')

md(r'''
`cnnlab.article.ArticleWeightClip` is the same class with only those crashes fixed (the
`defaults` argument, and `(grad * w).sum()` in place of `torch.dot`). Nothing else changes. We train
the chapter's network with it for one epoch, first with the `max_norm=0.01` that the article's
driver passes, then with the class's default of 1.0. We count how many weights changed and measure
the test accuracy before and after.
''')

code('''
for key, m_norm in (("small", 0.01), ("default", 1.0)):
    model = build_model(data.input_shape, data.num_classes, seed=0, width=8)
    tensors_before = [p.detach().clone() for p in model.parameters()]
    before = torch.cat([t.flatten() for t in tensors_before])
    acc_before = evaluate(model, *data.test)[1]
    opt = ArticleWeightClip(model.parameters(), max_norm=m_norm)
    hist = fit(model, data, epochs=1, lr=BASE.lr, optimizer=opt, seed=0, progress=False)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    changed, absmax = float((after != before).float().mean()), float(after.abs().max())
    clamped = sum(not torch.equal(p.detach(), t) for p, t in zip(model.parameters(), tensors_before))
    n_tensors = len(tensors_before)
    print(f"max_norm={m_norm}: {hist.steps} steps, {clamped} of {n_tensors} tensors clamped, "
          f"{changed:.1%} of the weights changed, max |w| = {absmax:.3f}, "
          f"test accuracy {acc_before:.1%} -> {hist.test_acc:.1%}")
    glue_text(**{f"wc_art_changed_{key}": f"{changed:.1%}", f"wc_art_absmax_{key}": f"{absmax:.3f}",
                 f"wc_art_acc_{key}": f"{hist.test_acc:.1%}",
                 f"wc_art_tensors_{key}": f"{clamped} of its {n_tensors} parameter tensors",
                 f"wc_art_untouched_{key}": "in a tensor whose gradient stayed shorter, so it was "
                 "never clamped" if absmax > m_norm else "inside the clip range"})
glue_text(wc_art_acc0=f"{acc_before:.1%}")  # the same untrained network both times
''')

md(r'''
With `max_norm=0.01`, every tensor whose gradient is longer than 0.01 is clamped to
$[-0.01, 0.01]$; that happened to {glue:text}`wc_art_tensors_small`.
{glue:text}`wc_art_changed_small` of the weights changed, and the largest is now
{glue:text}`wc_art_absmax_small` ({glue:text}`wc_art_untouched_small`). That is weight clipping at
$r = 0.01$ on the tensors it touched, the collapsed end of the sweep above, with no learning on
top. Test accuracy: {glue:text}`wc_art_acc_small`. With the default `max_norm=1.0`, the class clamped {glue:text}`wc_art_tensors_default`:
{glue:text}`wc_art_changed_default` of the weights changed, and the accuracy stays that of the
untrained network ({glue:text}`wc_art_acc0` before, {glue:text}`wc_art_acc_default` after). Either
way the model does not learn, because `step()` never subtracts the gradient. The extra `loss +=
dot(grad, w)` only changes the number `step(closure)` returns, not the weights.

The fix is to keep the two techniques apart and leave the step to a real optimizer:
`WeightClipping(r)` after `optimizer.step()` if you need a box constraint (a WGAN critic), and
`GradientClipping(max_norm=c)` after `backward()` if gradients explode. In a plain PyTorch loop:

```python
loss.backward()
torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # exploding gradients
optimizer.step()
with torch.no_grad():                                              # WGAN critic only
    for p in critic.parameters():
        p.clamp_(-0.01, 0.01)
```

## Explore

With a kernel (locally or in Colab), the panel below trains the chapter's configuration at the
$r$ you pick, over as many seeds as you choose, and adds the result to the plot. Runs are cached,
so the values of the sweep above come back at once.
''')

code('''
display(sweep_panel(BASE, "clip_weights", R_VALUES, seeds=3, value=0.05))
''')

md(r'''
On the static page, the same sweep is precomputed. Move the slider to see each $r$'s learning
curves (mean over five seeds, band from min to max) next to the whole sweep:
''')

code('''
HTML(sweep_slider(clip, "test_acc"))
''')

md(r'''
## Takeaways

- Weight clipping (clamp every weight to $[-r, r]$ after each step) restricts the model. On this
  classifier, large $r$ does nothing and small $r$ collapses accuracy towards chance, as measured
  above. The weights pile up at $\pm r$.
- It has one real use: keeping a WGAN critic Lipschitz ($r = 0.01$), and even there gradient
  penalties and spectral normalization have replaced it.
- Exploding gradients are fixed by **gradient-norm clipping**, which rescales the gradient and
  leaves the weights free. In the learning-rate sweep above it kept the network alive at rates
  where the plain network collapsed.
- The article's `WeightClip` mixes the two, conditions the wrong one on the other's quantity, and
  never takes a gradient step. It clamps the tensors whose gradients happen to be long (to a
  range set by the gradient threshold), leaves the others as they were, and the model never learns.

## Exercises

1. **Which layer collapses?** Write a hook (a class with an `after_step(model)` method) that calls
   `clip_weights_` on one layer only, for example `model.fc1`, and rerun $r = 0.01$ for each
   layer. Which layer's clipping costs the most accuracy? (Hint: compare each layer's fan-in with
   the default initialization bound $1/\sqrt{\text{fan-in}}$.)
2. **A WGAN-like setting.** WGAN uses RMSProp with a learning rate of $5 \cdot 10^{-5}$, so that
   one step moves a weight by much less than $r$. Rerun the sweep with
   `replace(BASE, optimizer="adam", lr=1e-3)` and with `lr=1e-4`. Does a smaller step move the
   collapse point? Do the weights still pile up at $\pm r$?
3. **Tuning `max_norm`.** At learning rate {glue:text}`wc_lr_unstable`, sweep `clip_grad_norm`
   over `[0.1, 0.3, 1.0, 3.0, 10.0]`. Where does clipping stop preventing the collapse, and where
   does it start slowing training down? Compare with the median of the recorded gradient norms of
   a stable run.
''')

nb.write(Path(__file__).resolve().parents[1] / "weight_clipping.ipynb")
