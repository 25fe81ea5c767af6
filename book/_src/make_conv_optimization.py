"""Build book/conv_optimization.ipynb (without outputs):
`.venv/bin/python book/_src/make_conv_optimization.py`."""

from pathlib import Path

from nbbuild import COLAB, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md(r'''
# Convolution-layer optimization (卷积层的优化)

The article (sections 2.5 and 3.5) says that convolution layers are optimized by "parameter
sharing" ("share filters of the same type, which reduces the computing resources used") and by
"parallelization" ("split the convolution into independent computations and run them in
parallel"), and that both "raise training speed". Its code for section 4.5 is the article's CNN with
a "convolution-layer optimizer" that is plain `optim.SGD`: nothing in it shares, splits or
parallelizes anything.

What is true is more specific. Parameter sharing is what makes a layer a convolution: one small
filter is applied at every position. It cuts the **parameters** by orders of magnitude, and with
locality (each output sees only a $k \times k$ patch) it also cuts the **FLOPs**. It buys
translation equivariance too: shift the image and the feature map shifts with it. Speed is a
separate matter. It depends on how the convolution is computed (loops, im2col plus a matrix
product, or a tuned library), on the memory layout, on the precision, on threads, and on how many
processes share the work. This chapter measures each of these on the machine that built the page,
against that machine's own measured limit:

* a convolution against a fully connected layer of the same input and output size (parameters,
  FLOPs, accuracy, translation equivariance);
* three ways to compute a convolution, with the same outputs and very different GFLOP/s;
* the measured peak of this machine, and how close `F.conv2d` gets to it in each memory layout;
* depthwise-separable convolutions, whose FLOP savings do not turn into equal time savings;
* channels_last, bf16 autocast and `torch.compile` on a full training step;
* intra-op threads, and data-parallel training with `torch.distributed` launched by torchrun.
''')

code('''
import matplotlib.pyplot as plt
from IPython.display import HTML, display
from myst_nb import glue
from cnnlab.data import load_dataset
from cnnlab.experiments import RunConfig, confidence_interval, start_workers, sweep
from cnnlab.perf import hardware_summary
from cnnlab.plots import plot_sweep, sweep_slider
from cnnlab.widgets import sweep_panel, describe
DATASET = "digits"   # ships with scikit-learn: real 8x8 digits, always available
print(f"Dataset: {DATASET}"); print("Hardware:", hardware_summary())
start_workers(DATASET);   # sweeps train in worker processes: start them now, in the background
''')

code('''
%matplotlib inline
import os
from dataclasses import replace
import torch, torch.nn.functional as F
from matplotlib.ticker import NullFormatter
from torch.testing import assert_close
from cnnlab import bench
from cnnlab.bench import STEP_CL, BenchConfig, format_table
from cnnlab.experiments import run
from cnnlab.models import build_model
from cnnlab.perf import load_average, model_flops
from cnnlab.techniques import conv2d, conv2d_naive
''')

code('''
data = load_dataset(DATASET, seed=0)
BASE = RunConfig(DATASET, epochs=8, lr=0.05, batch_size=64)
SEEDS = 5
CFG = BenchConfig(repeats=5)   # the sizes of `python -m cnnlab bench`, fewer repeats
def pct(s, m="test_acc"):
    return f"{s[m]:.1%} (95% CI {s[m + '_low']:.1%}-{s[m + '_high']:.1%})"
def overlap(a, b, m="test_acc"):
    return a[m + "_low"] <= b[m + "_high"] and b[m + "_low"] <= a[m + "_high"]
''')

code('''
glue("co_train", f"{len(data.train[1]):,}", display=False)
glue("co_test", f"{len(data.test[1]):,}", display=False)
glue("co_val", f"{len(data.val[1]):,}", display=False)
glue("co_cores", os.cpu_count(), display=False)
glue("co_epochs", BASE.epochs, display=False)
''')

md(r'''
The accuracy comparisons train on scikit-learn's digits: {glue:text}`co_train` real 8x8
handwritten digits for training (a new split per seed), {glue:text}`co_val` for validation and
{glue:text}`co_test` for the test, {glue:text}`co_epochs` epochs of SGD with momentum. The timings
use random tensors with the shapes of Fashion-MNIST batches, and the data-parallel benchmark trains
on Fashion-MNIST where it is installed. Every figure on this page comes from the run that built it,
on the hardware printed above. That machine has {glue:text}`co_cores` cores shared with other
jobs, so every time is
the **median of interleaved repeats**: the variants in one table are timed round-robin in the same
run, so a background job slows them all alike, and the ratios are more stable than the absolute
times. Rerun the page, or `python -m cnnlab bench` (the same functions at the same sizes, plus
`--json` to save the figures), and your numbers will differ.
''')

md(r'''
## The math

A convolution with $C_{in}$ input channels, $C_{out}$ filters of size $k \times k$, stride $s$ and
padding $p$ maps an $H \times W$ input to

$$
H_{out} = \left\lfloor \frac{H + 2p - k}{s} \right\rfloor + 1, \qquad
y[o, i, j] = b_o + \sum_{c=1}^{C_{in}} \sum_{u, v = 0}^{k-1} w[o, c, u, v]\,
x[c, s i + u, s j + v].
$$

The same $w[o, \cdot]$ is used at every position $(i, j)$: that is parameter sharing. Counting a
multiply-add as 2 FLOPs, and setting it against a fully connected layer with the same input
($C_{in} H W$ values) and output ($C_{out} H_{out} W_{out}$ values):

$$
\begin{aligned}
\text{params}_{conv} &= C_{out} C_{in} k^2 + C_{out}, &
\text{FLOPs}_{conv} &= 2\, C_{out} H_{out} W_{out} \cdot C_{in} k^2, \\
\text{params}_{dense} &= C_{in} H W \cdot C_{out} H_{out} W_{out} + C_{out} H_{out} W_{out}, &
\text{FLOPs}_{dense} &= 2\, C_{in} H W \cdot C_{out} H_{out} W_{out}.
\end{aligned}
$$

With same padding, locality alone divides the FLOPs by $HW / k^2$. Sharing then divides the
parameters by another factor $H_{out} W_{out}$.

**im2col.** Copy every $k \times k \times C_{in}$ patch into a column of a matrix
$X_{col} \in \mathbb{R}^{C_{in} k^2 \times H_{out} W_{out}}$. The convolution is then one matrix
product $Y = W_{mat} X_{col}$ with $W_{mat} \in \mathbb{R}^{C_{out} \times C_{in} k^2}$. Each input
pixel is copied into up to $k^2$ columns, so at stride 1 the matrix is $k^2$ times the input:
9 times for $3 \times 3$ filters.

**Depthwise-separable.** A per-channel $k \times k$ filter followed by a $1 \times 1$ mix costs

$$
\frac{\text{FLOPs}_{sep}}{\text{FLOPs}_{conv}} =
\frac{C_{in} k^2 + C_{in} C_{out}}{C_{in} C_{out} k^2} = \frac{1}{C_{out}} + \frac{1}{k^2}.
$$

**Throughput and speed-up.** A kernel that does $F$ FLOPs in $t$ seconds runs at $F / t$ FLOP/s.
Its fraction of the machine's measured peak $P$ is $F / (t P)$. Splitting the work over $N$
processes gives the speed-up $S_N = T_1 / T_N$, at most $N$.
''')

md(r'''
## Parameter sharing: a convolution against a fully connected layer

One $3 \times 3$ convolution with same padding maps a $1 \times 8 \times 8$ digit to
$C \times 8 \times 8$ feature maps. The fully connected layer with the same input and output sizes
is a $64 \to 64C$ matrix. Each is followed by a ReLU and the same linear classifier
(`bench.conv_layer_model` and `bench.dense_layer_model`).
''')

code('''
WIDTHS = [2, 4, 8, 16, 32]
for c in WIDTHS:
    k = bench.layer_costs(data.input_shape, c)
    print(f"C={c:>2}: conv {k['conv_params']:>6,} params {k['conv_flops']:>7,} FLOPs | "
          f"dense {k['dense_params']:>7,} params {k['dense_flops']:>9,} FLOPs")
k8 = bench.layer_costs(data.input_shape, 8)
glue("co_sh_params", f"{k8['dense_params'] / k8['conv_params']:,.0f}", display=False)
glue("co_sh_flops", f"{k8['dense_flops'] / k8['conv_flops']:.1f}", display=False)
''')

md(r'''
At $C = 8$ the dense layer has {glue:text}`co_sh_params` times the parameters of the convolution
and needs {glue:text}`co_sh_flops` times the FLOPs ($HW / k^2 = 64 / 9$). What sharing buys beyond
size is **translation equivariance**: move the digit by one pixel and the convolution's feature
maps move by one pixel, nothing else changes. A fully connected layer has a separate weight for
every position, so its output changes arbitrarily.
''')

code('''
x = data.test[0][:32]
conv_layer = bench.conv_layer_model(data.input_shape, 10, 8)[0]
dense_layer = bench.dense_layer_model(data.input_shape, 10, 8)[1]
err_conv = bench.translation_error(conv_layer, x)
err_dense = bench.translation_error(lambda t: dense_layer(t.flatten(1)), x,
                                    out_shape=(8, 8, 8))
print(f"max |f(shift x) - shift f(x)| / max |f(x)|, inner pixels: "
      f"conv {err_conv:.1e}, dense {err_dense:.2f}")
glue("co_eq_conv", f"{err_conv:.0e}", display=False)
glue("co_eq_dense", f"{err_dense:.0%}", display=False)
''')

md(r'''
The convolution's error is {glue:text}`co_eq_conv`, zero up to rounding. The dense layer's is
{glue:text}`co_eq_dense` of its largest output. Does this matter for accuracy? We train both
models over five widths and five seeds. We score them on the test set and on the test set shifted
one pixel to the right (`shift_acc`).
''')

code('''
sh_conv = sweep(BASE, "width", WIDTHS, SEEDS, runner=bench.run_conv_layer,
                metrics=("test_acc", "shift_acc"))
sh_dense = sweep(BASE, "width", WIDTHS, SEEDS, runner=bench.run_dense_layer,
                 metrics=("test_acc", "shift_acc"))
''')

code('''
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
for ax, metric in zip(axes, ("test_acc", "shift_acc")):
    plot_sweep(sh_conv, metric, ax=ax, label="one conv layer", logx=True)
    plot_sweep(sh_dense, metric, ax=ax, label="one dense layer", logx=True)
    ax.set_xlabel("width C (output maps)")
    ax.xaxis.set_minor_formatter(NullFormatter())  # label only the swept widths
axes[0].set_title("test accuracy", fontsize=9)
axes[1].set_title("test images shifted 1 px", fontsize=9)
plt.show()
''')

code('''
c8 = sh_conv.summary[WIDTHS.index(8)]; d8 = sh_dense.summary[WIDTHS.index(8)]
glue("co_sh_conv", pct(c8), display=False); glue("co_sh_dense", pct(d8), display=False)
glue("co_sh_conv_shift", pct(c8, "shift_acc"), display=False)
glue("co_sh_dense_shift", pct(d8, "shift_acc"), display=False)
glue("co_sh_verdict", "no detectable difference (the intervals overlap)" if overlap(c8, d8)
     else ("the convolution is better" if c8["test_acc"] > d8["test_acc"]
           else "the dense layer is better"), display=False)
drop = {name: confidence_interval([r["test_acc"] - r["shift_acc"] for r in res.rows if r["width"] == 8])
        for name, res in (("conv", sh_conv), ("dense", sh_dense))}   # accuracy lost to the shift
(c_mean, c_low, c_high), (d_mean, d_low, d_high) = drop["conv"], drop["dense"]
glue("co_sh_shift_verdict",
     "keeps more of its accuracy (the 95% intervals of the loss do not overlap)" if c_high < d_low
     else "loses more of its accuracy (the 95% intervals of the loss do not overlap)" if d_high < c_low
     else "loses about as much: the 95% intervals of the accuracy lost overlap "
          f"({100 * c_mean:.1f} against {100 * d_mean:.1f} points)", display=False)
''')

md(r'''
**Measured effect.** At width 8 the one-convolution model reaches {glue:text}`co_sh_conv` and the
dense model {glue:text}`co_sh_dense`: {glue:text}`co_sh_verdict`, with
{glue:text}`co_sh_params` times fewer parameters in the convolution. On the shifted test images
the convolution reaches {glue:text}`co_sh_conv_shift` and the dense model
{glue:text}`co_sh_dense_shift`, so the convolution {glue:text}`co_sh_shift_verdict`. Only the
feature layer is equivariant here: the classifier on top is fully connected, so a shift still moves
the evidence to other classifier weights. The scikit-learn digits are centred, so the unshifted
test set hardly rewards equivariance. Data with objects anywhere in the frame does.
''')

md(r'''
## How a convolution is computed

Three implementations of the same formula, from `cnnlab.techniques`: explicit loops over samples,
filters and positions (`conv2d_naive`, the definition), im2col plus one matrix product (`conv2d`,
built on `F.unfold`), and PyTorch's `F.conv2d` (oneDNN on a CPU, cuDNN on a GPU). First, the three
give the same output.
''')

code('''
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 3, 8, 8, generator=g)
w = torch.randn(4, 3, 3, 3, generator=g); b = torch.randn(4, generator=g)
ref = F.conv2d(x, w, b, stride=1, padding=1)
assert_close(conv2d_naive(x, w, b, padding=1), ref)
assert_close(conv2d(x, w, b, padding=1), ref)
assert_close(conv2d(x, w, b, stride=2, padding=1), F.conv2d(x, w, b, stride=2, padding=1))
print("naive loops, im2col + matmul and F.conv2d agree:", tuple(ref.shape))
''')

md(r'''
Then their speed. On a tiny input (one 3x8x8 image, 4 filters) the loops can still be timed:
''')

code('''
naive = bench.bench_naive(CFG)
print(bench.format_part("naive", naive))
slow = naive["slowdown_naive"]
glue("co_naive_slow", f"{slow:,.0f}" if slow >= 10 else f"{slow:.1f}", display=False)
''')

md(r'''
The loops take {glue:text}`co_naive_slow` times as long as `F.conv2d` even at this size (all
three on one thread). Every output pixel costs a Python iteration and a few tiny tensor
operations. On a realistic layer
(32 to 64 channels on a batch of 32 images of 28x28) only the other two are worth timing:
''')

code('''
print(f"load average (1 min) before timing: {load_average():.1f} on {os.cpu_count()} cores")
conv = bench.bench_conv(CFG)
print(bench.format_part("conv", conv))
v = conv["variants"]
for key, name in (("im2col", "im2col conv2d"), ("nchw", "F.conv2d (NCHW)"),
                  ("cl", "F.conv2d (channels_last)")):
    glue(f"co_gf_{key}", f"{v[name]['gflops']:.1f}", display=False)
glue("co_im2col_ratio", f"{conv['ratio_im2col']:.1f}", display=False)
glue("co_im2col_blowup", f"{conv['im2col_ratio']:.0f}", display=False)
glue("co_im2col_mib", f"{conv['im2col_bytes'] / 2**20:.0f}", display=False)
''')

code('''
met = conv["ratio_im2col"] <= 3
glue("co_goal_im2col", "meets" if met else "misses", display=False)
glue("co_im2col_why", "" if met else (" The gap is the copy: `F.unfold` writes "
     "the whole column matrix to memory and the matrix product reads it back, a memory-bound "
     "pass that `F.conv2d` avoids by working on blocks of the input that stay in cache."),
     display=False)
''')

md(r'''
im2col runs at {glue:text}`co_gf_im2col` GFLOP/s against {glue:text}`co_gf_nchw` for `F.conv2d`
on the same NCHW tensors: {glue:text}`co_im2col_ratio` times slower, which
{glue:text}`co_goal_im2col` this book's goal of "within 3x".{glue:text}`co_im2col_why` The column
matrix takes {glue:text}`co_im2col_mib` MiB, {glue:text}`co_im2col_blowup` times the input
($k^2$): im2col trades memory for one large, efficient matrix product. That is why libraries
prefer implicit GEMM or direct convolution kernels that never build the matrix. `F.conv2d` on
channels_last tensors runs at {glue:text}`co_gf_cl` GFLOP/s.
''')

md(r'''
### The article's code

The listing of section 4.5 first fails on an undefined name. Given the names, it fails on the
`super().__init()` typo:
''')

code('''
from cnnlab.article import listing_failures, split_listing
for what, exc in listing_failures("4.5"):   # as printed, then each bug a fix uncovers
    print(f"{what}: {type(exc).__name__}: {exc}")
print("its 'convolution-layer optimizer':", split_listing("4.5")[1].splitlines()[1])
''')

md(r'''
Fixed, the listing trains the article's CNN with `optim.SGD(model.parameters(), lr=0.001)`: the
same optimizer as every other chapter, with no parameter sharing or parallelization added (the
network's `nn.Conv2d` layers already share their filters). The rest of this chapter measures what
does make a convolution layer cheaper or faster.
''')

md(r'''
## The limit: this machine's measured peak

A vendor's peak (cores x clock x FLOPs per cycle) is hard to know inside a virtual machine and
rarely reached. The honest limit is what a tuned library reaches here: a large fp32 matrix product
or the best convolution above, whichever is faster.
''')

code('''
peak = bench.bench_peak(CFG, conv)
print(bench.format_part("peak", peak))
glue("co_peak", f"{peak['peak_gflops']:.1f}", display=False)
n = peak["matmul_size"]
glue("co_peak_src", f"a {n}x{n} fp32 matrix product" if peak["peak_source"] == "matmul"
     else peak["peak_source"], display=False)
glue("co_frac_nchw", f"{peak['fraction']['F.conv2d (NCHW)']:.0%}", display=False)
glue("co_frac_cl", f"{peak['fraction']['F.conv2d (channels_last)']:.0%}", display=False)
glue("co_goal_peak", "meets" if peak["fraction"]["F.conv2d (channels_last)"] >= 0.6
     else "misses", display=False)
glue("co_cl_speedup", f"{conv['speedup_cl']:.2f}", display=False)
''')

md(r'''
The measured peak is {glue:text}`co_peak` GFLOP/s, set by {glue:text}`co_peak_src`. `F.conv2d`
reaches {glue:text}`co_frac_nchw` of it in the default NCHW layout and {glue:text}`co_frac_cl` in
channels_last ({glue:text}`co_cl_speedup`x the NCHW speed), which {glue:text}`co_goal_peak` the
goal of 60%. In NCHW the $C_{in}$ values that one output needs lie $HW$ floats apart. In
channels_last (NHWC) they are adjacent, so a vector instruction loads 16 of them at once. oneDNN's
CPU kernels work in this blocked-channel layout, so NCHW inputs cost a reorder first.
''')

md(r'''
## Depthwise-separable convolutions: FLOPs saved against time saved

The same layer as above, standard against depthwise-separable (depthwise 3x3 plus pointwise 1x1),
forward and backward, channels_last:
''')

code('''
sep = bench.bench_separable(CFG)
print(bench.format_part("separable", sep))
glue("co_sep_flops", f"{sep['flop_ratio']:.2f}", display=False)
glue("co_sep_time", f"{sep['time_ratio']:.2f}", display=False)
glue("co_sep_gf", f"{sep['variants']['separable']['gflops']:.1f}", display=False)
glue("co_std_gf", f"{sep['variants']['standard']['gflops']:.1f}", display=False)
glue("co_sep_saves", "saves less time than FLOPs" if sep["time_ratio"] > sep["flop_ratio"]
     else "saves as much time as FLOPs", display=False)
''')

md(r'''
The separable layer needs {glue:text}`co_sep_flops` times the FLOPs of the standard one
($1/C_{out} + 1/k^2$) and takes {glue:text}`co_sep_time` times its time, so it
{glue:text}`co_sep_saves`. It runs at {glue:text}`co_sep_gf` GFLOP/s against
{glue:text}`co_std_gf` for the standard layer. A depthwise convolution does only $k^2$
multiply-adds per value it loads, too few to keep the vector units busy, so memory traffic rather
than arithmetic limits it. FLOPs are a poor proxy for time.

Accuracy at similar cost: `SmallCNN(separable=True)` makes its second convolution separable. We
sweep the width of both networks over five values and five seeds and plot accuracy against the
FLOPs of one forward pass per image.
''')

code('''
SEP_WIDTHS = [4, 8, 16, 24, 32]
std_res = sweep(BASE, "width", SEP_WIDTHS, SEEDS)
sep_res = sweep(BASE, "width", SEP_WIDTHS, SEEDS, runner=bench.run_separable)
def kflops(width, separable):
    m = build_model(data.input_shape, data.num_classes, width=width, separable=separable)
    return model_flops(m, torch.zeros(1, *data.input_shape)) / 1e3
for res, separable in ((std_res, False), (sep_res, True)):
    for s in res.summary:
        s["kFLOPs per image"] = round(kflops(s["width"], separable), 1)
''')

code('''
fig, ax = plt.subplots(figsize=(6, 3.5), layout="constrained")
for res, label in ((std_res, "standard second conv"), (sep_res, "depthwise-separable")):
    plot_sweep(res.summary, "test_acc", param="kFLOPs per image", ax=ax, label=label)
ax.set_xscale("log"); ax.xaxis.set_minor_formatter(NullFormatter())
ax.set_xticks([20, 50, 100, 200, 500], ["20", "50", "100", "200", "500"])
plt.show()
for a, b in zip(std_res.summary, sep_res.summary):
    print(f"width {a['width']:>2}: standard {a['kFLOPs per image']:>6} kFLOPs {pct(a)} | "
          f"separable {b['kFLOPs per image']:>6} kFLOPs {pct(b)}")
''')

code('''
a = std_res.summary[SEP_WIDTHS.index(8)]
b = min(sep_res.summary, key=lambda s: abs(s["kFLOPs per image"] - a["kFLOPs per image"]))
glue("co_sep_std", f"width 8 ({a['kFLOPs per image']:.0f} kFLOPs): {pct(a)}", display=False)
glue("co_sep_sep", f"width {b['width']} ({b['kFLOPs per image']:.0f} kFLOPs): {pct(b)}",
     display=False)
glue("co_sep_verdict", "no detectable difference (the intervals overlap)" if overlap(a, b)
     else ("the separable network is better" if b["test_acc"] > a["test_acc"]
           else "the standard network is better"), display=False)
''')

md(r'''
**Measured effect.** At similar cost, the standard network at {glue:text}`co_sep_std` and the
separable one at {glue:text}`co_sep_sep` show {glue:text}`co_sep_verdict`. Only the second
convolution is separable; the first convolution and the fully connected layers cost the same in
both. So the network as a whole saves much less than the layer's factor above, and the saving buys
a wider separable network for the same total. Try a width in the live panel (it needs a running kernel: locally or
in Colab). The static slider below shows the precomputed separable sweep.
''')

code('''
display(sweep_panel(BASE, "width", SEP_WIDTHS, runner=bench.run_separable, seeds=3))
''')

code('''
HTML(sweep_slider(sep_res, "test_acc"))
''')

md(r'''
## Memory format and precision on a full training step

One SGD step of the book's SmallCNN (width 16, a batch of 64 Fashion-MNIST-sized images):
forward, cross-entropy, backward and the update, on one thread, the way the book's sweeps train
(one single-threaded process per core). The variants are the default NCHW layout,
channels_last (what `cnnlab.train.fit` uses), bf16 autocast on top of channels_last, and
`torch.compile` of the channels_last model. bf16 runs only where the hardware has native bf16
(`cnnlab.perf.bf16_support` prints why or why not). Emulated bf16 would only be slower.
''')

code('''
step = bench.bench_train_step(CFG)
print(bench.format_part("step", step))
print("bf16:", step["bf16_reason"])
''')

code('''
sv = step["variants"]
for key, name in (("cl", "fp32 channels_last"), ("bf16", "bf16 autocast (channels_last)"),
                  ("comp", "torch.compile (channels_last)")):
    glue(f"co_step_{key}", f"{sv[name]['speedup']:.2f}x" if name in sv else
         f"not measured ({step['skipped_variants'][name]})", display=False)
''')

code('''
if "compile_seconds" in step:
    c_s, hits, miss = (step[k] for k in ("compile_seconds", "compile_cache_hits",
                                         "compile_cache_misses"))
    cache = (f"; {hits} of {hits + miss} compiled graphs came from PyTorch's on-disk cache of "
             "an earlier run" if hits else "")
    glue("co_compile", f"Compiling took {c_s:.1f} s before the first step, as long as "
         f"{c_s / sv[STEP_CL]['seconds']:,.0f} eager steps{cache}. PyTorch caches compiled code "
         "on disk, so the first compile on a fresh machine takes longer", display=False)
else:
    glue("co_compile", "torch.compile could not run here: "
         + step["skipped_variants"]["torch.compile (channels_last)"], display=False)
''')

code('''
comp = sv.get("torch.compile (channels_last)")
glue("co_compile_repaid", "not measured here" if comp is None else
     "worth paying only when the faster steps repay it"
     if comp["speedup"] > sv[STEP_CL]["speedup"] else
     "and here the compiled step was not faster than eager channels_last, so nothing repays it",
     display=False)
''')

code('''
W16 = replace(BASE, width=16)
acc = {name: sweep(W16, "width", [16], SEEDS, runner=runner).summary[0]
       for name, runner in (("fp32 channels_last", run),
                            ("fp32 NCHW", bench.run_nchw), ("bf16 autocast", bench.run_bf16))}
for name, s in acc.items():
    print(f"{name:>18}: test accuracy {pct(s)}")
base_acc = acc["fp32 channels_last"]
glue("co_prec_acc", "; ".join(f"{n} {pct(s)}" for n, s in acc.items()), display=False)
glue("co_prec_verdict", "none of them differs detectably (the intervals overlap)"
     if all(overlap(base_acc, s) for s in acc.values()) else "they differ", display=False)
glue("co_compile_diff", f"{step.get('compile_max_param_diff', float('nan')):.0e}", display=False)
''')

md(r'''
Against NCHW, channels_last makes the step {glue:text}`co_step_cl` as fast, bf16 autocast
{glue:text}`co_step_bf16`, and `torch.compile` {glue:text}`co_step_comp`. {glue:text}`co_compile`. That is a fixed cost,
{glue:text}`co_compile_repaid`. The compiled step gives
the same parameters as eager execution up to {glue:text}`co_compile_diff` after three steps (the
same math, reordered), so it cannot change accuracy.

**Effect on accuracy** (five seeds each, width 16 on digits): {glue:text}`co_prec_acc`.
Statistically, {glue:text}`co_prec_verdict`. The memory layout changes only the order of the
additions. bf16 keeps fp32's exponent range with an 8-bit mantissa, and autocast keeps the
weights, the loss and the reductions in fp32, so small CNNs lose nothing measurable.
''')

md(r'''
## Parallelization: threads and processes

**Intra-op threads** split one operation (one convolution, one matrix product) over cores. On
small tensors the threads must synchronize after every operation:
''')

code('''
thr = bench.bench_threads(CFG)
print(bench.format_part("threads", thr))
glue("co_thr", (f"Two threads make the step {thr['speedup']:.2f} times as fast as one"
     if thr["speedup"] >= 1 else f"Two threads made the step slower than one thread "
     f"({thr['speedup']:.2f}x)"), display=False)
''')

md(r'''
{glue:text}`co_thr`. On a machine whose other core is busy with another job, a thread that waits
for its partner at every barrier can be much slower than one thread. This is why the book's sweeps run two single-threaded processes
instead.

**Data parallelism** splits the *batch* instead. Every process holds the whole model. Each
computes the gradient of its shard of every global mini-batch, and an all-reduce averages the
gradients during `backward()`, so all copies take the same step. `cnnlab.parallel` does this with
PyTorch's own `DistributedDataParallel`, launched by torchrun: the gloo backend on CPUs, NCCL on
GPUs.
''')

code('''
DDP_CFG = replace(CFG, ddp_train_size=1024, ddp_rounds=3)
ddp = bench.bench_ddp(DDP_CFG)
print(bench.format_part("ddp", ddp))
print("command:", ddp["command"])
glue("co_ddp_speedup", f"{ddp['bench']['speedup']:.2f}", display=False)
load = ddp["load_average"][0]
glue("co_ddp_load", f"{load:.1f}" if load is not None else "unknown", display=False)
glue("co_ddp_goal", "meets" if ddp["bench"]["speedup"] >= 1.4 else "misses", display=False)
glue("co_ddp_diff", f"{ddp['max_param_diff']:.0e}", display=False)
glue("co_ddp_launch", f"{ddp['launch_seconds']:.0f}", display=False)
glue("co_ddp_data", ddp["dataset"].replace("_", "-"), display=False)
''')

md(r'''
On {glue:text}`co_ddp_data`, two processes of one thread each train an epoch
{glue:text}`co_ddp_speedup` times as fast as one process of one thread. That
{glue:text}`co_ddp_goal` this book's goal of 1.4x. At most 2x is possible: the all-reduce and the
shared memory bandwidth take part of it, and two processes need two idle cores. When the launch
started, the load average (processes wanting a core, averaged over the last minute) was
{glue:text}`co_ddp_load` on these {glue:text}`co_cores` cores. The whole launch, with Python and
PyTorch started three times (the launcher and two workers), took {glue:text}`co_ddp_launch` s. Data parallelism
pays off when an epoch is long, not for a few seconds of work. `--check` trained one process on
the same global batches from the same initial weights: the parameters differ by at most
{glue:text}`co_ddp_diff`, the rounding of adding the gradients in a different order. The loss of
each shard is the *sum* over its images times $N / |\text{global batch}|$, so the averaged gradient
is exactly the global batch's mean gradient, even when the shards differ in size. A worker that
raises makes torchrun stop the others. One that hangs makes the others fail after `--timeout`
seconds instead of waiting forever.

The same command runs on a cluster. Start it on every machine with torchrun's rendezvous options.
The `c10d` rendezvous needs only one reachable host and port:

```bash
# on each of 2 machines with 8 GPUs each (NCCL); HOST is one of them
python -m torch.distributed.run --nnodes=2 --nproc_per_node=8 \
    --rdzv-backend=c10d --rdzv-endpoint=HOST:29400 --rdzv-id=cnnlab-1 \
    -m cnnlab.parallel --dataset fashion_mnist --epochs 5 --batch-size 1024
# one machine, CPU cores as workers (gloo), as measured above
python -m torch.distributed.run --standalone --nproc_per_node=2 \
    -m cnnlab.parallel --dataset digits --epochs 1 --check
```

`--nnodes=1:4` lets machines join and leave (elastic training), and `--max-restarts` restarts
failed workers. Across machines the all-reduce crosses the network, so the gradient size against
the time of one step decides how well it scales.
''')

md(r'''
## On a GPU

The same benchmark with `--device cuda` synchronizes the GPU around every timing, since CUDA calls
return before the kernels finish. It runs in true fp32 unless `--tf32` is given. Figures recorded
on a GPU machine live in `book/data/bench_cuda.json`:
''')

code('''
from pathlib import Path
gpu = bench.load_results(Path("data") / "bench_cuda.json")
if gpu is None:
    print("No GPU figures were recorded: book/data/bench_cuda.json does not exist.")
    gpu_text = "No GPU figures were recorded for this page."
else:
    print(format_table(gpu, ["conv", "peak", "separable", "step", "ddp"]))
''')

code('''
if gpu is not None:
    gp, gs = gpu["peak"], gpu["separable"]
    hw, frac = gpu["hardware"], gp["fraction"]
    gpu_text = (f"On the {hw['device_name']} (PyTorch {hw['torch']}), channels_last F.conv2d "
                f"reached {frac['F.conv2d (channels_last)']:.0%} and NCHW "
                f"{frac['F.conv2d (NCHW)']:.0%} of a measured fp32 peak of "
                f"{gp['peak_gflops'] / 1e3:.1f} TFLOP/s; the separable layer took "
                f"{gs['time_ratio']:.2f} times the standard layer's time for "
                f"{gs['flop_ratio']:.2f} times its FLOPs. Training-step speed against fp32 NCHW: "
                + ", ".join(f"{n} {v['speedup']:.2f}x" for n, v in gpu["step"]["variants"].items()
                            if n != "fp32 NCHW") + ".")
''')

code('''
tf = bench.load_results(Path("data") / "bench_cuda_tf32.json")
if gpu is not None and tf is not None:
    print(bench.format_part("conv", tf["conv"]))   # the same layer with TF32 allowed
    v32, vtf = gpu["conv"]["variants"], tf["conv"]["variants"]
    gpu_text += (" With TF32 allowed (`--tf32`), channels_last F.conv2d ran at "
                 f"{vtf['F.conv2d (channels_last)']['gflops'] / 1e3:.0f} TFLOP/s instead of "
                 f"{v32['F.conv2d (channels_last)']['gflops'] / 1e3:.0f}.")
glue("co_gpu", gpu_text, display=False)
''')

md(r'''
{glue:text}`co_gpu` Those figures come from one run on that machine, not from this page's
build. The layouts and precisions that help on this CPU need not help on a GPU: measure on the
hardware you train on.
''')

md(r'''
## What this page measured against the goals

The book set three goals for this machine. The table repeats them with this run's figures.
''')

code('''
page = {"conv": conv, "peak": peak, "ddp": ddp}
for text, value, met in bench.goals(page):
    shown = f"{value:.0%}" if "peak" in text else f"{value:.2f}x"
    print(f"{'met   ' if met else 'missed'}  {text}: {shown}")
''')

md(r'''
## Takeaways

* **Parameter sharing** is what a convolution is. It cuts parameters by the number of positions,
  and locality cuts FLOPs by $HW/k^2$. It makes the features translation-equivariant. It does
  not by itself make a layer fast.
* **How** the convolution is computed decides the speed. Loops are hopeless, im2col pays a
  $k^2$-fold copy, and a tuned library in the right memory layout (channels_last on CPUs) gets
  close to the machine's measured peak.
* **FLOPs are not time.** Depthwise-separable convolutions save most of the FLOPs, but they run
  at a far lower GFLOP/s because they are memory-bound.
* **Precision and compilation** change speed, not accuracy, in these measurements. Compilation
  has a fixed cost, {glue:text}`co_compile_repaid`.
* **Parallelism**: threads split operations, processes split batches. Data-parallel training
  with DDP is exact (the same steps as one process) and scales as far as the all-reduce allows.
  torchrun runs the same command on one machine or many.

## Exercises

1. **Where im2col loses.** Run `bench.bench_conv(replace(CFG, batch=b))` for $b$ in 1, 8, 32 and
   128, and `replace(CFG, kernel=5)`. How do the im2col/F.conv2d ratio and the column matrix's
   size change? Rewrite the copy with `x.as_strided` (a view of the padded input with the patch
   dimensions as extra strides), followed by a single `reshape`. Is it faster than `F.unfold`?
2. **Separable on larger images.** On Fashion-MNIST (28x28), the convolutions carry far more of
   the FLOPs. Rerun the separable sweep with `replace(BASE, dataset="fashion_mnist",
   train_size=2000)`. Does the accuracy-at-equal-FLOPs comparison change?
3. **Scaling.** Run `python -m torch.distributed.run --standalone --nproc_per_node=2 -m
   cnnlab.parallel --dataset fashion_mnist --train-size 8192 --bench 3` with `--batch-size` 16,
   64 and 256. More images per all-reduce: how does the speed-up change, and why?
''')

nb.write(Path(__file__).resolve().parents[1] / "conv_optimization.ipynb")
