"""Build book/background.ipynb (without outputs).

    .venv/bin/python book/_src/make_background.py
"""

from pathlib import Path

from nbbuild import COLAB, SETUP, Notebook

nb = Notebook()
md, code = nb.md, nb.code

code(COLAB, ["remove-cell"])  # first cell: scripts/sync_colab_cells.py checks it

md(r'''
# Background (背景介绍)

The article this book is built from opens (section 1, 背景介绍) with three claims. Convolutional
neural networks are deep learning models used mainly for images and video. Their strength is that
they learn feature representations by themselves, which makes them accurate and efficient on hard
visual tasks. And as datasets and models grow, training them costs more, so making CNNs perform
better and train faster is an important research direction. It then promises a set of techniques
(weight clipping, regularization, batch normalization, dropout, and optimizing the convolution
layers) that "improve the model's performance while reducing training time and the use of
computing resources".

This book takes every one of those promises and **runs** it. Our promise in return:

- **Every claim is run.** Each page is a notebook executed when the book is built. Every number in
  the text is computed by a cell above it, not typed by hand.
- **Every result is measured over seeds.** A comparison is never one lucky run. It is several
  runs with a mean and a 95% confidence interval, and the text states the effect that was measured,
  also when it is small or absent.
- **Every technique is tested.** The code lives in a small package, `cnnlab`, whose functions are
  checked against PyTorch's own implementations by unit tests. Each chapter repeats one such check
  in a visible cell, and the test suite runs every chapter from top to bottom.

The article's formulas are mostly right, but most of its code does not run, and the parts that do
run do something other than what the text says. Each chapter runs the article's code too, and shows
what goes wrong.
''')

code(SETUP)

code('''
%matplotlib inline
import time
import numpy as np
import torch
from scipy import stats
from cnnlab.experiments import cache_dir, confidence_interval
from cnnlab.models import build_model
from cnnlab.plots import image_grid
from cnnlab.train import fit
def glue_text(**values):  # computed values for the prose (myst-nb glue; not displayed here)
    for key, value in values.items():
        glue(key, str(value), display=False)
''')

md(r'''
The two lines above are what every chapter prints first. They name the dataset the chapter's
numbers come from and the machine that computed them. On the published site that is the machine
that built the book.

## How to read this book

On the **static site** you need nothing but a browser. Every figure, table and number was computed
when the page was built. Where a chapter has a slider under a figure (a row of precomputed
frames, one per value of the chapter's parameter), it works without a kernel and without loading
anything from the internet. The chapters also have a **live panel**: a slider, a seed count and a
*Train* button that retrains and redraws. It needs a running kernel: on the static page its
controls show, but nothing trains. Use it when you run the notebook.

Each chapter follows the same order. First the article's claim and what is true, then the math,
then a from-scratch implementation checked against PyTorch, then the article's code, run or shown
failing. After that come a multi-seed comparison with the measured effect in one sentence, the live
panel and the static slider, and finally takeaways and exercises.

## How to run it

- **Locally**: clone the repository and run the two commands of its README. `make book` builds
  this site, executing every chapter, and prints where the HTML is. `make test` runs the unit
  tests, executes every chapter through `nbmake`, builds the book and opens it in a headless
  browser. Both commands create the virtual environment first. To read and change a chapter, open
  `book/*.ipynb` in Jupyter.
- **In Colab**: the launch button (the rocket at the top of each chapter page) opens the chapter
  in Google Colab. Its first cell, hidden on this site, installs `cnnlab` and keeps Colab's own
  PyTorch and ipywidgets. Colab has no copy of Fashion-MNIST, so a chapter there falls back to
  digits and says so at the top. To use Fashion-MNIST, run
  `cnnlab.data.load_dataset("fashion_mnist")` once (it downloads the files through torchvision)
  and run the notebook again.
- **CPU or GPU**: `cnnlab` trains on a GPU by itself when PyTorch sees one. The run time changes
  and the results do not, beyond floating-point noise. A GPU adds numbers in a different order
  than a CPU, so a single run's accuracy can differ a little, and the difference grows over
  training. It is another draw of the same run-to-run noise that the seeds already measure, so the
  means and their confidence intervals agree. Cached runs are stored per device, so a GPU never
  reuses a CPU's results.

How long does training take here? One epoch of the book's small CNN at width 16, on a training
subset of {glue:text}`bg_dataset`:
''')

code('''
full = load_dataset(DATASET, seed=0)  # the whole training split
subset = 5000 if DATASET == "fashion_mnist" else None  # digits: all of its few images
timing = load_dataset(DATASET, train_size=subset, seed=0)
net = build_model(timing.input_shape, timing.num_classes, seed=0, width=16)
hist = fit(net, timing, epochs=2, lr=0.05, seed=0, progress=False)
epoch_s = hist.epoch_time[-1]  # the second epoch: the first one also warms up
n, n_full = len(timing.train[1]), len(full.train[1])
print(f"one epoch over {n:,} images: {epoch_s:.2f} s ({1e3 * epoch_s / n:.2f} ms per image); "
      f"over all {n_full:,}: about {epoch_s * n_full / n:.0f} s")
glue_text(bg_dataset=DATASET.replace("_", "-"), bg_epoch_s=f"{epoch_s:.2f}", bg_timing_n=f"{n:,}",
          bg_full_n=f"{n_full:,}", bg_full_s=f"{epoch_s * n_full / n:.0f}")
''')

md(r'''
On this page's hardware, one epoch over {glue:text}`bg_timing_n` images took
{glue:text}`bg_epoch_s` s, so one over all {glue:text}`bg_full_n` training images would take about
{glue:text}`bg_full_s` s. That is why the chapters train on subsets. Each chapter must run from top
to bottom in two minutes on a two-core CPU, and it trains dozens of runs to get honest confidence
intervals. A small training set is also where regularization matters most.

## The datasets
''')

code('''
fashion = full if DATASET == "fashion_mnist" else None
digits = load_dataset("digits", seed=0)
for d in (fashion, digits):
    if d is not None:
        n = {k: len(getattr(d, k)[1]) for k in ("train", "val", "test")}
        c, h, w = d.input_shape
        print(f"{d.name}: {sum(n.values()):,} images of {h}x{w} pixels, {d.num_classes} classes;"
              f" train {n['train']:,}, validation {n['val']:,}, test {n['test']:,}")
        glue_text(**{f"bg_{d.name}_{k}": f"{v:,}" for k, v in n.items()},
                  **{f"bg_{d.name}_n": f"{sum(n.values()):,}", f"bg_{d.name}_hw": f"{h}x{w}"})
''')

code('''
if fashion is not None:
    fig = image_grid(fashion.test[0][:500], fashion.test[1][:500], fashion.classes, n=4)
    fig.suptitle("Fashion-MNIST: four test images per class", fontsize=10); plt.show()
''')

code('''
fig = image_grid(digits.test[0], digits.test[1], digits.classes, n=4)
fig.suptitle("scikit-learn's digits: four test images per class", fontsize=10); plt.show()
''')

code('''
DIGITS_EPOCHS = 10
h = fit(build_model(digits.input_shape, digits.num_classes, seed=0, width=8, batch_norm=True),
        digits, epochs=DIGITS_EPOCHS, lr=0.05, seed=0, progress=False)
print(f"digits: test accuracy {h.test_acc:.1%} after {h.train_time:.1f} s of training")
glue_text(bg_digits_acc=f"{h.test_acc:.1%}", bg_digits_s=f"{h.train_time:.1f}",
          bg_digits_epochs=DIGITS_EPOCHS)
''')

md(r'''
**Fashion-MNIST** (Xiao, Rasul and Vollgraf, 2017) is the book's main dataset:
{glue:text}`bg_fashion_mnist_n` grayscale product images of clothing from Zalando's catalog,
{glue:text}`bg_fashion_mnist_hw` pixels, in ten classes. The book uses the authors'
{glue:text}`bg_fashion_mnist_test` test images as its test set, and splits their training images
into {glue:text}`bg_fashion_mnist_train` for training and {glue:text}`bg_fashion_mnist_val` for
validation. It was made as a drop-in replacement for MNIST, with the same format and sizes, because
MNIST has become too easy: a small CNN gets almost every handwritten digit right, so differences
between techniques vanish in the last decimal. Shirts, T-shirts, pullovers and coats look alike, so
Fashion-MNIST leaves room for a technique to help or hurt. It is also the dataset that *Dive into
Deep Learning* (d2l) uses for its CNN chapters, so its numbers can be compared with a well-known
reference. It is real data, large enough that each seed draws a genuinely different training
subset.

**Digits** is scikit-learn's bundled set of {glue:text}`bg_digits_n` handwritten digits at
{glue:text}`bg_digits_hw` pixels. It is tiny and lives inside the scikit-learn package, so it needs
no download and works offline. The book's CNN (with batch norm) reaches {glue:text}`bg_digits_acc`
test accuracy on it in {glue:text}`bg_digits_s` s of training (seed 0, all
{glue:text}`bg_digits_train` training digits, {glue:text}`bg_digits_epochs` epochs). The unit tests
use it, and every chapter falls back to it, with a visible note at the top, where Fashion-MNIST is
not available. Its numbers then differ from the published ones.

Both are loaded by `cnnlab.data.load_dataset` as tensors held in memory, normalized with the
training split's mean and standard deviation. Training straight from tensors is much cheaper per
epoch on a small CPU than going through a `DataLoader` (`make bench` measures by how much).

## How every result is measured

**Seeds.** A run's seed fixes everything random in it: which training images are drawn for the
subset, the initial weights, the order of the mini-batches, and every random operation during
training such as dropout masks. The same configuration with the same seed gives the same run;
another seed gives another, equally legitimate run. Each comparison in this book trains every
configuration with several seeds, usually five.

**Confidence intervals.** From the $n$ results $x_1, \dots, x_n$ of one configuration, the book
reports the mean and a 95% confidence interval for it, from Student's $t$ distribution
(`cnnlab.experiments.confidence_interval`):

$$
\bar{x} = \frac{1}{n} \sum_{i=1}^{n} x_i, \qquad
s = \sqrt{\frac{1}{n-1} \sum_{i=1}^{n} (x_i - \bar{x})^2}, \qquad
\bar{x} \pm t_{0.975,\, n-1} \, \frac{s}{\sqrt{n}}.
$$

With five seeds, $t_{0.975,\,4}$ = {glue:text}`bg_t4`. The interval is wide when the runs
disagree and narrow when they agree. When the intervals of two configurations do not overlap, the
difference is larger than the seed-to-seed noise; when they do overlap, the text says so.

**Why one run misleads.** Here are two learning rates for the same small network, each over five
seeds ({glue:text}`bg_train_size` training images, {glue:text}`bg_epochs` epochs):
''')

code('''
BASE = RunConfig(DATASET, train_size=1000, val_size=small_val_size(DATASET),
                 width=8, epochs=6, lr=0.05, batch_size=64)
LRS, SEEDS = [0.05, 0.1], 5
start = time.perf_counter()
result = sweep(BASE, "lr", LRS, seeds=SEEDS)
first_s = time.perf_counter() - start
acc = {lr: [r["test_acc"] for r in sorted(result.rows, key=lambda r: r["seed"]) if r["lr"] == lr]
       for lr in LRS}
for s in result.summary:
    print(describe(s, "lr"))
glue_text(bg_train_size=f"{BASE.train_size:,}", bg_epochs=BASE.epochs,
          bg_t4=f"{stats.t.ppf(0.975, SEEDS - 1):.3f}")
''')

code('''
fig, ax = plt.subplots(figsize=(5, 3.4), layout="constrained")
for i, lr in enumerate(LRS):
    mean, low, high = confidence_interval(acc[lr])
    ax.plot(np.full(SEEDS, i) + np.linspace(-0.12, 0.12, SEEDS), acc[lr], "o", alpha=0.7,
            label="one seed each" if i == 0 else None)
    ax.errorbar(i + 0.3, mean, yerr=[[mean - low], [high - mean]], fmt="s", color="k",
                capsize=4, label="mean, 95% CI" if i == 0 else None)
ax.set_xticks(range(len(LRS)), [f"lr = {lr}" for lr in LRS]); ax.set_xlim(-0.5, len(LRS) - 0.3)
ax.set_ylabel("test accuracy"); ax.set_title(f"{SEEDS} seeds per learning rate", fontsize=9)
ax.grid(alpha=0.3, axis="y"); ax.legend(fontsize=8); plt.show()
''')

code('''
diff = [b - a for a, b in zip(acc[LRS[0]], acc[LRS[1]])]  # per seed: lr 2 minus lr 1
print("per-seed difference, in points:", ", ".join(f"{100 * d:+.1f}" for d in diff))
glue_text(bg_lr0=LRS[0], bg_lr1=LRS[1], bg_wins=sum(d > 0 for d in diff),
          bg_losses=sum(d < 0 for d in diff), bg_diff_min=f"{100 * min(diff):+.1f}",
          bg_diff_max=f"{100 * max(diff):+.1f}")
''')

code('''
(m0, lo0, hi0), (m1, lo1, hi1) = (confidence_interval(acc[lr]) for lr in LRS)
overlap = lo1 <= hi0 and lo0 <= hi1
spread = {lr: f"{100 * (max(acc[lr]) - min(acc[lr])):.1f}" for lr in LRS}  # in points
glue_text(bg_spread0=spread[LRS[0]], bg_spread1=spread[LRS[1]],
          bg_ci0=f"{m0:.1%} ({lo0:.1%} to {hi0:.1%})", bg_ci1=f"{m1:.1%} ({lo1:.1%} to {hi1:.1%})",
          bg_overlap="overlap" if overlap else "do not overlap")
''')

md(r'''
Compare the two rates seed by seed, each pair sharing its subset, initial weights and batch
order. Learning rate {glue:text}`bg_lr1` beats {glue:text}`bg_lr0` in {glue:text}`bg_wins` of the
five pairs and loses in {glue:text}`bg_losses`; the per-seed differences range from
{glue:text}`bg_diff_min` to {glue:text}`bg_diff_max` points. A single pair of runs would have
reported one of these numbers as *the* effect. Within one learning rate, the five seeds span
{glue:text}`bg_spread0` points of test accuracy at {glue:text}`bg_lr0` and
{glue:text}`bg_spread1` points at {glue:text}`bg_lr1`. The means, with 95% confidence intervals,
are {glue:text}`bg_ci0` and {glue:text}`bg_ci1`, and the two intervals {glue:text}`bg_overlap`.
Overlapping intervals mean that the difference between the means is within the seed-to-seed noise
of five runs; separate intervals mean that it is larger.

**Cached runs.** Training the same configuration twice wastes time, so `cnnlab.experiments`
stores every finished run as one small JSON file. Its name is a hash of the full configuration,
the seed, the device and a cache version. A rebuilt book, a re-run notebook or an interrupted sweep
trains only the runs that are missing:
''')

code('''
start = time.perf_counter()
again = sweep(BASE, "lr", LRS, seeds=SEEDS)
second_s = time.perf_counter() - start
assert again.rows == result.rows  # the same runs, read back from disk
print(f"cache folder: {cache_dir()}")
print(f"first call: {first_s:.1f} s, second call: {second_s:.2f} s")
glue_text(bg_first_s=f"{first_s:.1f}", bg_second_s=f"{second_s:.2f}")
''')

md(r'''
This time the first call took {glue:text}`bg_first_s` s (it trained whatever the cache lacked; on
a rebuild with a warm cache, that is nothing), and the second {glue:text}`bg_second_s` s. The
cache folder is `$CNNLAB_CACHE`, or `~/.cache/cnnlab/runs` when that variable is not set; the
Makefile sets it to `.cache/runs` inside the repository. To start over, delete the folder
(`make clean` deletes `.cache`). To train without reading or writing the cache, pass
`use_cache=False` to `sweep`, or `--no-cache` to `python -m cnnlab sweep`. A corrupt file is
trained again, never trusted.

## A map of the chapters

| Chapter | Article section | What it measures |
|---|---|---|
| {doc}`background` | 1 背景介绍 Background | how results are measured (seeds, confidence intervals, the cache); the datasets |
| {doc}`weight_clipping` | 2.1, 3.1, 4.1 权重裁剪 Weight clipping | test accuracy against the clamp range $r$; weight histograms; the gradient norm per step with and without gradient-norm clipping; the article's `WeightClip` |
| {doc}`regularization` | 2.2, 3.2, 4.2 正则化 Regularization | the train–test gap against $\lambda$ for L1 and L2; L1's sparsity against L2's shrinkage; weight decay against L2 under SGD and Adam (AdamW); the article's L2 optimizer |
| {doc}`batch_norm` | 2.3, 3.3, 4.3 批量归一化 Batch normalization | per-layer activation statistics; accuracy against the learning rate with and without BN; train and eval mode; the time per epoch |
| {doc}`dropout` | 2.4, 3.4, 4.4 Dropout | the train–test gap against the rate $p$; inverted scaling; eval mode; the article's "Dropout optimizer" |
| {doc}`conv_optimization` | 2.5, 3.5, 4.5 卷积层的优化 Convolution-layer optimization | parameters and FLOPs of convolutions and dense layers; im2col against PyTorch's convolution, against the machine's peak; depthwise-separable convolutions; memory format and precision; data-parallel scaling |
| {doc}`evaluating` | 6.3 如何评估模型性能？ How to evaluate a model; 6.4 如何避免过拟合？ How to avoid overfitting | training, validation and test sets; per-class recall and the confusion matrix; the spread over seeds; k-fold cross-validation; early stopping and data augmentation |
| {doc}`choosing` | 6.2 如何选择合适的优化技术？ How to choose a technique | an ablation over batch norm, dropout, weight decay, augmentation and early stopping, with training times; the article's advice checked against it; the best configuration beside the published Fashion-MNIST benchmark |
| {doc}`outlook` | 5 未来发展与挑战 Future development and challenges | what replaced or extended these techniques, with references |
| {doc}`article_errors` | 4 具体代码实例和详细解释说明 Code examples and explanations (all five listings) | every error in the article's text and code: what it says, what happens when it runs, the fix |

## Exercises

1. **How many seeds?** Rerun the comparison above with `seeds=10` and with `seeds=3`. How does
   the width of the confidence intervals change? The formula predicts roughly
   $t_{0.975,\,n-1}/\sqrt{n}$; check it.
2. **A faster machine.** If you have a GPU (Colab offers one), time one epoch as above and compare
   it with {glue:text}`bg_epoch_s` s. Then rerun the five-seed comparison there. Do the means
   fall inside the intervals measured here?
3. **The cache at work.** Find the JSON file of one run in the cache folder, read it with `json`,
   and plot its `history` (`cnnlab.plots.plot_histories` takes it as it is).
''')

nb.write(Path(__file__).resolve().parents[1] / "background.ipynb")
