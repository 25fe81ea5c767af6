"""Build book/article_errors.ipynb (without outputs): `.venv/bin/python book/_src/make_article_errors.py`."""

from pathlib import Path

from nbbuild import COLAB, SETUP, Notebook

nb = Notebook()
nb.code(COLAB, ["remove-cell"])

nb.md(r'''
# Appendix: the article's errors (附录：原文的错误)

The source article gets its formulas right. Much of its prose and nearly all of its code are wrong.
This appendix lists the errors one per row: what the article says, what happens when it is run
(every entry in that column is computed by the cells on this page, with the article's code as
printed in `cnnlab.article`), the fix, and the chapter that shows it. The first table covers the
code of section 4, the second the text of sections 2, 3, 5 and 6.
''')

nb.code(SETUP)

nb.code('''
import time
import torch
import torch.nn.functional as F
from torch import nn
from IPython.display import Markdown
from cnnlab.article import (LISTINGS, LISTING_BUGS, ArticleDropoutOptimizer, ArticleL2Regularization,
                            ArticleWeightClip, build_article_cnn, run_listing, split_listing)
from cnnlab.evaluation import markdown_table
from cnnlab.models import build_model
from cnnlab.techniques import clip_weights_, conv2d_flops, count_params
from cnnlab.train import evaluate, fit
torch.set_num_threads(1)  # tiny tensors: one thread is faster on 2 shared cores
torch.manual_seed(0)  # the random inputs below are the same on every run
SEEN = {}  # what each error does when run, filled by the cells below
def failure(exc):
    return "runs without error" if exc is None else f"`{type(exc).__name__}: {exc}`"
''')

nb.md(r'''
## The listings as printed

Every listing uses names it never defines (`model`, `inputs`, `labels`) and `F`, which it never
imports. `run_listing` executes a listing in a fresh namespace and returns the exception it
raises; `LISTING_BUGS` gets past each error in turn (supplying `F`, or running only the class
definitions with a small driver) to reach the next one.
''')

nb.code('''
as_printed = {name: run_listing(name) for name in LISTINGS}
print({name: failure(exc) for name, exc in as_printed.items()})
SEEN["undefined"] = ("all five listings stop at " + failure(as_printed["4.1"])
                     if len({str(e) for e in as_printed.values()}) == 1 else str(as_printed))
for i, bug in enumerate(LISTING_BUGS[1:], start=1):
    SEEN[f"bug{i}"] = failure(bug.run())
''')

nb.md(r'''
Some errors raise nothing. They are found by running the article's classes: `cnnlab.article` holds
them with only the changes needed to run (each marked `# was:`), and the cells below train with
them on scikit-learn's 8x8 digits.
''')

nb.code('''
box = {}
run_listing("4.1", "box['out'] = CNN()(torch.randn(4, 3, 32, 32))\\n", F=F, box=box)
SEEN["flatten4"] = f"4 images in, output of shape {tuple(box['out'].shape)}: one prediction"
digits = load_dataset("digits", seed=0)
x, y = digits.train[0][:64], digits.train[1][:64]

def article_net():
    return build_article_cnn(digits.input_shape, digits.num_classes, seed=0)
''')

nb.code('''
net = article_net()  # 4.1: WeightClip at its default max_norm=1.0, 20 steps
opt = ArticleWeightClip(net.parameters(), max_norm=1.0)
before = [p.detach().clone() for p in net.parameters()]
loss0 = F.cross_entropy(net(x), y).item()
for _ in range(20):
    opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
loss1 = F.cross_entropy(net(x), y).item()
unchanged = sum(torch.equal(b, p) for b, p in zip(before, net.parameters()))
SEEN["wclip"] = (f"20 steps: training loss {loss0:.3f} \\u2192 {loss1:.3f}; {unchanged} of "
                 f"{len(before)} weight tensors unchanged (no gradient step is ever taken)")
''')

nb.code('''
net = article_net()  # 4.2: the decay is wd * ||w|| / ||g|| * w, per tensor
F.cross_entropy(net(x), y).backward()
ratios = [(p.norm() / p.grad.norm()).item() for p in net.parameters()]
SEEN["l2ratio"] = (f"decay factor per tensor = wd \\u00d7 {min(ratios):.1f} \\u2026 {max(ratios):.0f} "
                   "on one batch, instead of a constant 2\\u03bb")
w = nn.Parameter(torch.ones(3)); w.grad = torch.zeros(3)  # a tensor whose gradient is zero
ArticleL2Regularization([w], lr=0.001, weight_decay=0.001).step()
SEEN["l2zero"] = f"a tensor with a zero gradient becomes {w.data.tolist()}"
''')

nb.code('''
net = article_net()  # 4.4: a trained model, then the Dropout "optimizer"
fit(net, digits, epochs=5, lr=0.05, seed=0, progress=False)
opt = ArticleDropoutOptimizer(net.parameters(), p=0.5)
n_weights = sum(p.numel() for p in net.parameters())
trace = []  # (share of weights that are exactly 0, test accuracy) before each step
for step in range(6):
    zeros = sum(int((p == 0).sum()) for p in net.parameters()) / n_weights
    trace.append((zeros, evaluate(net, *digits.test)[1]))
    if step < 5:
        opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
(_, acc0), (zero, acc5) = trace[0], trace[-1]
SEEN["dropopt"] = (f"trained model, test accuracy {acc0:.1%}; after 5 steps {zero:.1%} of the "
                   f"weights are 0 (1 \\u2212 0.5\\u2075 = {1 - 0.5 ** 5:.1%}) and accuracy is "
                   f"{acc5:.1%}")
''')

nb.code('''
fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
steps = range(len(trace))
ax.plot(steps, [z for z, _ in trace], marker="o", label="share of weights that are exactly 0")
ax.plot(steps, [1 - 0.5 ** k for k in steps], ls=":", color="0.5", label="1 \u2212 0.5^k")
ax.plot(steps, [a for _, a in trace], marker="s", label="test accuracy (digits)")
ax.set_xlabel("steps of the article's Dropout optimizer (p = 0.5) on a trained network")
ax.set_ylim(0, 1.05); ax.grid(alpha=0.3); ax.legend(fontsize=8); plt.show()
''')

nb.code('''
try:
    ArticleDropoutOptimizer(nn.Linear(2, 2).parameters(), train=False).step()
    SEEN["droptrain"] = "runs without error"
except Exception as exc:  # the article's code raises here; show it, not a traceback
    SEEN["droptrain"] = failure(exc)
sgd = "optim.SGD(model.parameters(), lr=0.001)"
plain = all(sgd in split_listing(name)[1] for name in ("4.3", "4.5"))
SEEN["sgd"] = f"both drivers build plain `{sgd}`" if plain else "the drivers differ from plain SGD"
same = split_listing("4.5")[0].replace("__init()", "__init__()") == split_listing("4.1")[0].split("# 定义一个权重")[0]
SEEN["conv_same"] = "its network is the 4.1 network, character for character" if same else "differs from 4.1"
''')

nb.code('''
CHAPTER = {"4.1": "weight_clipping", "4.2": "regularization", "4.3": "batch_norm", "4.4": "dropout",
           "4.5": "conv_optimization"}
FIX = {
    "`F` (torch.nn.functional) is never imported": "`import torch.nn.functional as F`",
    "`64 * 16 * 16` does not match 32x32 inputs after two 2x2 pools (64 * 8 * 8)":
        "`64 * 8 * 8`, or `torch.flatten(x, 1)` into a layer sized from the input",
    "`Optimizer.__init__` is called without its `defaults` argument":
        "`super().__init__(params, defaults)` with a dict of the hyper-parameters",
    "`torch.dot` only takes 1-D tensors, but conv and linear weights are not":
        "drop the line: `grad \\u00b7 w` added to the loss has no meaning",
    "`F.batch_norm2d` does not exist": "`nn.BatchNorm2d(channels)` modules (scale, shift, running statistics)",
    "`super().__init()` is a typo for `super().__init__()`": "`super().__init__()`",
}
''')

nb.code('''
code_rows = [["4.1\\u20134.5", "`model`, `inputs`, `labels` are used but never defined", SEEN["undefined"],
              "create the model and a batch of data", "every chapter"]]
code_rows += [[bug.listing, bug.what, SEEN[f"bug{i}"], FIX[bug.what], f"{{doc}}`{CHAPTER[bug.listing]}`"]
              for i, bug in enumerate(LISTING_BUGS[1:], start=1)]
code_rows.insert(3, ["4.1\\u20134.5", "`x.view(-1, 64 * 16 * 16)` on a batch of 4 32x32 images",
                     SEEN["flatten4"], "flatten per image: `torch.flatten(x, 1)`", "{doc}`weight_clipping`"])
''')

nb.code('''
code_rows += [
    ["4.1", "`WeightClip.step` clamps a tensor only if its *gradient* norm exceeds `max_norm`, and applies no gradient",
     SEEN["wclip"], "an optimizer step, then clamp every weight to [\\u2212r, r]; for exploding gradients, clip the gradient norm",
     "{doc}`weight_clipping`"],
    ["4.2", "the \\"L2 optimizer\\" subtracts `wd * ||w|| / ||g|| * w`", SEEN["l2ratio"],
     "add \\u03bb\\u2016w\\u2016\\u00b2 to the loss (gradient 2\\u03bbw), or SGD's `weight_decay`", "{doc}`regularization`"],
    ["4.2", "the same line divides by `||g||`", SEEN["l2zero"], "as above: no division", "{doc}`regularization`"],
    ["4.3, 4.5", "\\"创建一个批量归一化优化器\\" / \\"创建一个卷积层优化器\\" (a BN / convolution-layer optimizer)",
     SEEN["sgd"],
     "BN is a layer, not an optimizer; a faster convolution is a different layer or kernel",
     "{doc}`batch_norm`, {doc}`conv_optimization`"],
    ["4.5", "the \\"convolution-layer optimization\\" listing", SEEN["conv_same"],
     "depthwise-separable convolutions, im2col/GEMM, channels-last memory", "{doc}`conv_optimization`"],
]
''')

nb.code('''
code_rows += [
    ["4.4", "the \\"Dropout optimizer\\" sets `p.data = F.dropout(p.data)`", SEEN["dropopt"],
     "mask activations in training only (`nn.Dropout`), scaled by 1/(1\\u2212p)", "{doc}`dropout`"],
    ["4.4", "`step()` with `train=False`", SEEN["droptrain"], "(no such optimizer)", "{doc}`dropout`"],
]
display(Markdown(markdown_table(["section", "the article's code", "what happens when it is run",
                                 "the fix", "shown in"], code_rows)))
''')

nb.md(r'''
## The text

The prose errors are checked the same way, with a small computation each.
''')

nb.code('''
net = article_net()  # 2.1 / 3.1: clip every weight to the WGAN value r = 0.01
with torch.no_grad():
    std0 = net(x).std().item()
    clip_weights_(net, 0.01)
    std1 = net(x).std().item()
SEEN["clipvanish"] = (f"clipping every weight to \\u00b10.01 shrinks the output spread from "
                      f"{std0:.2f} to {std1:.2g}: signals vanish")
''')

nb.code('''
def step_ms(model, reps=10):  # the fastest of `reps` training steps (forward + backward, 256 images)
    xb, yb = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter(); F.cross_entropy(model(xb), yb).backward(); times.append(time.perf_counter() - t)
    return 1000 * min(times[1:])  # the first step warms up

plain, bn = (build_model((1, 28, 28), 10, width=16, batch_norm=b) for b in (False, True))
ratio = step_ms(bn) / step_ms(plain)
normalized = 16 * 28 * 28 + 32 * 14 * 14  # activations BN normalizes per image (after each conv)
SEEN["bncost"] = (f"+{count_params(bn) - count_params(plain)} parameters and {normalized:,} extra "
                  f"normalizations per image; a training step takes {ratio:.2f}\\u00d7 as long")
''')

nb.code('''
bn_layer = nn.BatchNorm2d(4)
keys = ", ".join(bn_layer.state_dict())
img = torch.randn(1, 4, 5, 5)
batches = [torch.cat([img, torch.randn(7, 4, 5, 5)]) for _ in range(2)]  # same image, other company
train_diff = (bn_layer(batches[0])[0] - bn_layer(batches[1])[0]).abs().max().item()
bn_layer.eval()
eval_diff = (bn_layer(batches[0])[0] - bn_layer(batches[1])[0]).abs().max().item()
SEEN["bnstate"] = (f"`nn.BatchNorm2d` holds {keys}; in training mode one image's output changes "
                   f"with its batch (by up to {train_diff:.2f}), in eval mode by {eval_diff:.0f}")
''')

nb.code('''
ones = torch.ones(100_000)
gen = torch.Generator().manual_seed(0)
mask = (torch.rand(100_000, generator=gen) >= 0.5).float()
SEEN["dropscale"] = (f"without the 1/(1\\u2212p) factor the expected activation falls to "
                     f"{float((ones * mask).mean()):.2f}; `F.dropout` keeps it at "
                     f"{float(F.dropout(ones, 0.5).mean()):.2f} and is the identity in eval mode: "
                     f"{bool(torch.equal(F.dropout(ones, 0.5, training=False), ones))}")
w = torch.tensor([3.0, 4.0])
SEEN["l2sq"] = f"for w = (3, 4): \\u2016w\\u2016\\u2082 = {float(w.norm()):.0f}, \\u2016w\\u2016\\u2082\\u00b2 = {float(w.norm() ** 2):.0f}"
''')

nb.code('''
conv = nn.Conv2d(32, 64, 3, padding=1)
flops = conv2d_flops(32, 64, 3, 16, 16)
SEEN["sharing"] = (f"a 3x3 convolution 32\\u219264 on 16x16 maps: {count_params(conv):,} parameters, "
                   f"{flops:,} FLOPs; a locally connected layer with the same connections: "
                   f"{count_params(conv) * 16 * 16:,} parameters, the same {flops:,} FLOPs")
''')

nb.code('''
text_rows = [
    ["2.1, 3.1", "weight clipping limits the weights to prevent vanishing or exploding gradients", SEEN["clipvanish"],
     "weight clipping enforces a Lipschitz bound (WGAN, r = 0.01); exploding gradients call for gradient-norm clipping",
     "{doc}`weight_clipping`"],
    ["3.2", "\\u2016w\\u2016\\u2082\\u00b2 \\"is the L2 norm\\"", SEEN["l2sq"], "it is the *squared* L2 norm", "{doc}`regularization`"],
    ["2.3, 3.3", "batch normalization \\"reduces the computation of the inner loop\\"", SEEN["bncost"],
     "BN adds operations and removes none; where it speeds training, it does so by allowing larger learning rates", "{doc}`batch_norm`, {doc}`choosing`"],
    ["2.3, 3.3", "BN normalizes each batch to mean 0 and variance 1 (nothing else)", SEEN["bnstate"],
     "learnable scale \\u03b3 and shift \\u03b2, running statistics, train/eval modes", "{doc}`batch_norm`"],
]
''')

nb.code('''
text_rows += [
    ["2.4, 3.4", "dropout: drop a fraction of neurons, then update the parameters", SEEN["dropscale"],
     "inverted dropout: scale survivors by 1/(1\\u2212p) in training, do nothing in eval mode", "{doc}`dropout`"],
    ["2.5, 3.5", "parameter sharing: \\"share filters of the same type\\" to save computation", SEEN["sharing"],
     "sharing one kernel across positions saves parameters, not FLOPs; separable convolutions save FLOPs",
     "{doc}`conv_optimization`"],
    ["2.3, 6.2", "choose batch normalization to speed up training; it also reduces overfitting",
     "measured per regime in the ablation", "check it in your regime", "{doc}`choosing`"],
    ["6.4", "data augmentation \\"such as random flips\\"", "measured on digits", "flips change a digit's meaning: use small shifts and rotations",
     "{doc}`evaluating`"],
    ["5.1", "CNNs will develop into recurrent networks and attention mechanisms", "(a forecast, not run)",
     "separate families; vision transformers and modernized CNNs compete", "{doc}`outlook`"],
]
display(Markdown(markdown_table(["section", "the article says", "what happens when it is run",
                                 "the fix", "shown in"], text_rows)))
''')

nb.code('''
glue("ae_n_code", str(len(code_rows)), display=False)
glue("ae_n_text", str(len(text_rows)), display=False)
''')

nb.md(r'''
That makes {glue:text}`ae_n_code` errors in the code and {glue:text}`ae_n_text` in the text. The
code errors fall into three kinds. Some make the listings crash at once (undefined names,
missing imports, typos, a wrong `Optimizer.__init__` call). One computes the wrong thing
silently (the flatten size, which for some batch sizes returns fewer predictions than images). The
rest run and train, and are only caught by measuring: the "optimizers" for weight clipping, L2 and
dropout, which do not learn, decay by the wrong amount, or destroy the model. That last kind is why
every chapter of this book checks its implementation against PyTorch and measures the effect over
several seeds, instead of trusting code that runs.
''')

nb.write(Path(__file__).resolve().parent.parent / "article_errors.ipynb")
