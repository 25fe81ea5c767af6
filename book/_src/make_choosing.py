"""Build book/choosing.ipynb (without outputs): `.venv/bin/python book/_src/make_choosing.py`."""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
nb.code(COLAB, ["remove-cell"])

nb.md(r'''
# Choosing and combining techniques (如何选择合适的优化技术)

The article's answer to "how do I choose a suitable technique?" (section 6.2) is a lookup table:
choose *regularization* to reduce overfitting, *batch normalization* to speed up training, and
*convolution-layer optimization* to save compute. Elsewhere it adds that batch normalization also
reduces overfitting (2.3), that dropout makes a model more stable and less overfitted (2.4), and,
for overfitting (6.4), early stopping and data augmentation.

What is true is less tidy: whether a technique helps depends on the regime, chiefly how much data
there is for the model's size and how long it trains, and the only way to know is to measure. The
standard tool is an **ablation**: start from a baseline, add one technique at a time, then all
together, train each configuration over several seeds, and compare means with their confidence
intervals, along with what each costs in training time. This chapter runs that ablation twice, on
a small training set and on the whole Fashion-MNIST training split, then checks the article's
advice against the table, claim by claim. The convolution-layer claim is measured in
{doc}`conv_optimization`.
''')

nb.code(SETUP + START_WORKERS)

nb.code('''
%matplotlib inline
import json, re
from pathlib import Path
import numpy as np, torch
from scipy import stats
from IPython.display import Markdown
from cnnlab.evaluation import (BENCHMARK_README, ablation_configs, ci_compare, ci_text,
                               compare_configs, markdown_table, published_benchmarks)
from cnnlab.experiments import SweepResult, confidence_interval, summarize
from cnnlab.models import build_model
from cnnlab.techniques import count_params
''')

nb.md(r'''
## The ablation

Every configuration is the article's two-convolution network at width 8 (8 and 16 channels, a
128-unit hidden layer), trained with SGD (learning rate 0.05, momentum 0.9, batches of 64) for a
fixed budget of epochs. Each technique is added at a common setting: batch normalization after
each convolution, dropout 0.5 before the fully connected layers, weight decay $5\cdot10^{-4}$,
augmentation by random shifts of up to 10% of the image side and rotations of up to 10°
({doc}`evaluating`), and early stopping with a patience of 3 epochs on the validation loss
(restoring the best epoch's weights). The cell below prints what each configuration changes.
''')

nb.code('''
TRAIN_SIZE, SEEDS = 1_000, 5  # the small-data regime; seeds per configuration, as in every chapter
SMALL = RunConfig(DATASET, train_size=TRAIN_SIZE, val_size=small_val_size(DATASET),
                  width=8, epochs=12, lr=0.05, batch_size=64)
CONFIGS = ablation_configs(SMALL, dropout=0.5, weight_decay=5e-4, patience=3)
base = SMALL.to_dict()
for name, config in CONFIGS.items():
    print(f"{name:16s}", {k: v for k, v in config.to_dict().items() if v != base[k]} or "-")
glue("ch_train_size", f"{TRAIN_SIZE:,}", display=False)
glue("ch_seeds", str(SEEDS), display=False)
glue("ch_small_val", f"{len(load_for(SMALL, 0).val[1]):,}", display=False)
glue("ch_epochs", str(SMALL.epochs), display=False)
''')

nb.md(r'''
For each configuration we report the mean test accuracy $\bar a$ over $n$ seeds (each seed draws
its own training subset, initial weights and batch order) with a 95% confidence interval from
Student's $t$ distribution:

$$
\bar a \pm t_{0.975,\,n-1}\,\frac{s}{\sqrt{n}}, \qquad
s^2 = \frac{1}{n-1}\sum_{i=1}^{n}(a_i-\bar a)^2 .
$$

A technique is said to change a metric only when its interval and the baseline's do not overlap.
That rule is conservative (intervals that overlap a little can still differ at the 5% level), so
"not established" means the data do not show a difference, not that there is none. The interval
comes from `cnnlab.experiments.confidence_interval`; here it is checked against SciPy:
''')

nb.code('''
xs = [0.81, 0.84, 0.79, 0.86, 0.83]
mean, low, high = confidence_interval(xs)
ref = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
torch.testing.assert_close(torch.tensor([low, high], dtype=torch.float64), torch.tensor(ref))
print(f"mean {mean:.4f}, 95% CI ({low:.4f}, {high:.4f}) = SciPy's ({ref[0]:.4f}, {ref[1]:.4f})")
''')

nb.md(r'''
Section 6.2 has no code of its own; the article's listings for the techniques, and what they do
when run, are collected in {doc}`article_errors`.

## Small data: {glue:text}`ch_train_size` training images

{glue:text}`ch_seeds` seeds per configuration, {glue:text}`ch_epochs` epochs each (early stopping
may stop sooner). Besides test accuracy the table shows the gap between training and test accuracy
(the training accuracy is measured on the batches as trained, so with dropout or augmentation it
is measured on harder inputs and the gap looks smaller than it is), the epochs actually trained,
and the training time, per run and per epoch, on the hardware printed above.
''')

nb.code('''
rows_small, _ = compare_configs(CONFIGS, SEEDS)
METRICS = ("test_acc", "gap", "epochs_run", "epoch_time", "train_time", "val_acc_2")

def with_history_metrics(row):  # per run: epochs trained, seconds per epoch, val. acc. after 2
    h = row["history"]
    return {**row, "epochs_run": len(h["val_loss"]),
            "epoch_time": row["train_time"] / len(h["val_loss"]), "val_acc_2": h["val_acc"][1]}

small = summarize([with_history_metrics(r) for r in rows_small], "name", METRICS)
''')

nb.code('''
def ablation_table(summary, trained_on=None):  # trained_on: name -> hardware, for stored runs
    extra = ["trained on"] if trained_on else []
    return Markdown(markdown_table(
        ["configuration", "test accuracy (95% CI)", "gap train-test", "epochs", "s per run",
         "s per epoch"] + extra,
        [[s["name"], ci_text(s), f"{100 * s['gap']:+.1f} pts", f"{s['epochs_run']:.1f}",
          f"{s['train_time']:.1f}", f"{s['epoch_time']:.2f}"]
         + ([trained_on[s["name"]]] if trained_on else []) for s in summary]))

display(ablation_table(small))
''')

nb.md(r'''
## All the data: the whole training split

On the whole training split ({glue:text}`ch_full_size` images: everything but the validation
hold-out) each run takes minutes, too long for this page's time limit on a small CPU. These rows were therefore trained
once by a script and stored with the book as data, in `book/data/ablation_full.json` and
`book/data/ablation_full_aug.json`. The cell below prints, for each file, the exact command that
regenerates it and the hardware that produced it. The recipe is the one above; only the training
set and the validation hold-out differ (the stored runs held out `load_dataset`'s default, 10% of
the training files up to 2,000 images; the runs above held out {glue:text}`ch_small_val`). The two
files ran on different hardware, so their training times cannot be compared with each other, and
the runs in the first file shared one GPU, {glue:text}`ch_gpu_workers` runs at a time, so its times
include that sharing. Accuracy and epochs depend on the hardware only within the run-to-run noise
that the seeds measure (a GPU's kernels round differently).
''')

nb.code('''
def load_stored(name):  # book/data/NAME; on Colab (no checkout) from the repository
    path = Path("data") / name
    if path.exists():
        return json.loads(path.read_text())
    import urllib.request
    url = f"https://raw.githubusercontent.com/cnnlab/cnnlab/main/book/data/{name}"
    return json.loads(urllib.request.urlopen(url, timeout=30).read())

stored = [load_stored(n) for n in ("ablation_full.json", "ablation_full_aug.json")]
for s in stored:
    print(f"{s['meta']['command']}\\n  on: {s['meta']['hardware']}; {len(s['rows'])} runs")
rows_full = [r for s in stored for r in s["rows"]]
trained_on = {r["name"]: s["meta"]["hardware"].split("; ")[1].replace("no GPU", "CPU only")
              for s in stored for r in s["rows"]}
''')

nb.code('''
order = {name: i for i, name in enumerate(CONFIGS)}
full = sorted(summarize([with_history_metrics(r) for r in rows_full], "name", METRICS),
              key=lambda s: order[s["name"]])
display(ablation_table(full, trained_on))
n_full = stored[0]["meta"]["train_images"]  # the training split's size, written by the script
glue("ch_full_size", f"{n_full:,}", display=False)
glue("ch_gpu_workers", str(stored[0]["meta"]["workers"]), display=False)
''')

nb.md(r'''
The same comparison as a figure: the mean test accuracy of each configuration with its 95%
interval, in both regimes ({glue:text}`ch_train_size` and {glue:text}`ch_full_size` training
images).
''')

nb.code('''
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
for ax, summary, label in ((axes[0], small, f"{TRAIN_SIZE:,} images"),
                           (axes[1], full, f"{n_full:,} images")):
    plot_sweep(summary, "test_acc", param="name", ax=ax, label=label)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_xlabel("")
plt.show()
''')

nb.md(r'''
## The article's advice, checked row by row

Each claim is turned into a measurement that the tables above hold, compared with the baseline of
the same regime. The verdict is computed from the confidence intervals: **confirmed** when the
technique's interval lies entirely on the side the article predicts, **contradicted** when it lies
entirely on the other side, and **not established** when the intervals overlap.
''')

nb.code('''
CLAIMS = [  # (article section, claim as measured, configuration, metric, predicted direction)
    ("6.2", "regularization: higher test accuracy", "+weight decay", "test_acc", +1),
    ("6.2", "regularization: smaller train-test gap", "+weight decay", "gap", -1),
    ("6.2", "BN speeds up training: higher val. accuracy after 2 epochs", "+BN", "val_acc_2", +1),
    ("2.3", "BN reduces computation: less time per epoch", "+BN", "epoch_time", -1),
    ("2.3", "BN reduces overfitting: higher test accuracy", "+BN", "test_acc", +1),
    ("2.4, 6.4", "dropout: higher test accuracy", "+dropout", "test_acc", +1),
    ("6.4", "early stopping: higher test accuracy", "+early stopping", "test_acc", +1),
    ("6.4", "early stopping: fewer epochs trained", "+early stopping", "epochs_run", -1),
    ("6.4", "data augmentation: higher test accuracy", "+augmentation", "test_acc", +1),
]
WORD = {1: "confirmed", -1: "contradicted", 0: "not established"}
''')

nb.code('''
def fmt(row, metric):  # a mean, in the unit of its metric
    if metric == "gap":
        return f"{100 * row[metric]:+.1f} pts"
    if metric in ("test_acc", "val_acc_2"):
        return f"{100 * row[metric]:.1f}%"
    return f"{row[metric]:.2f} s" if metric == "epoch_time" else f"{row[metric]:.1f} epochs"

def verdict(summary, name, metric, direction):
    by = {s["name"]: s for s in summary}
    word = WORD[direction * ci_compare(by[name], by["baseline"], metric)]
    return word, f"**{word}**: {fmt(by[name], metric)} vs {fmt(by['baseline'], metric)}"
''')

nb.code('''
table, words = [], {"small": [], "full": []}
for section, claim, name, metric, direction in CLAIMS:
    (w_s, small_cell), (w_f, full_cell) = (verdict(small, name, metric, direction),
                                           verdict(full, name, metric, direction))
    words["small"].append(w_s); words["full"].append(w_f)
    table.append([section, claim, small_cell, full_cell])
display(Markdown(markdown_table(
    ["section", "the article's claim, as measured", f"{TRAIN_SIZE:,} images", f"{n_full:,} images"],
    table)))
''')

nb.code('''
def count(regime, word):
    return str(words[regime].count(word))

for regime in ("small", "full"):
    for w in WORD.values():
        glue(f"ch_{regime}_{w.replace(' ', '_')}", count(regime, w), display=False)
glue("ch_n_claims", str(len(CLAIMS)), display=False)
for regime, summary in (("small", small), ("full", full)):  # whose test accuracy is lower (CIs)
    by = {s["name"]: s for s in summary}
    lower = [n for n in by if n != "baseline" and ci_compare(by[n], by["baseline"]) < 0]
    glue(f"ch_{regime}_lower", ", ".join(lower) or "none of them", display=False)
''')

nb.md(r'''
Of the {glue:text}`ch_n_claims` measurable claims, with {glue:text}`ch_train_size` training
images {glue:text}`ch_small_confirmed` are confirmed, {glue:text}`ch_small_contradicted`
contradicted and {glue:text}`ch_small_not_established` not established; on the whole training set
the counts are {glue:text}`ch_full_confirmed`, {glue:text}`ch_full_contradicted` and
{glue:text}`ch_full_not_established`. Where a claim holds in one regime and not in the other, that
is the chapter's main point: "use X to get Y" is not a property of X alone. Batch normalization
cannot reduce computation, since it adds a normalization after every convolution; when it pays off,
it does so by making each epoch count for more, or by allowing larger learning rates
({doc}`batch_norm`). Each technique was added at one common setting. A configuration whose test
accuracy is lower than the baseline's, with intervals that do not overlap (with
{glue:text}`ch_train_size` images: {glue:text}`ch_small_lower`; on the whole training set:
{glue:text}`ch_full_lower`), may be too strong for this model and budget rather than useless:
dropout at 0.5 before both fully connected layers of a network this narrow, or augmentation within
{glue:text}`ch_epochs` epochs, asks a lot. {doc}`dropout` and {doc}`regularization` sweep the strengths.
''')

nb.md(r'''
## Does combining help?

The article presents the techniques as a menu to pick from; in practice they are combined, and
their effects do not simply add up. Augmentation and dropout make each training step harder,
early stopping cuts training short, and with a fixed budget of epochs the combination can underfit.
The cell compares "all together" with the best single technique of each regime.
''')

nb.code('''
for regime, summary in (("small", small), ("full", full)):
    singles = [s for s in summary if s["name"] not in ("baseline", "all together")]
    best = max(singles, key=lambda s: s["test_acc"])
    together = next(s for s in summary if s["name"] == "all together")
    cmp = ci_compare(together, best)
    word = {1: "better than", -1: "worse than", 0: "not distinguishable from"}[cmp]
    glue(f"ch_{regime}_together", f"{word} the best single technique ({best['name']}: "
         f"{ci_text(best)}), at {ci_text(together)}", display=False)
    print(regime, "| all together:", ci_text(together), "|", word, best["name"], ci_text(best))
''')

nb.md(r'''
With {glue:text}`ch_train_size` images, all techniques together are
{glue:text}`ch_small_together`; on the whole training set they are
{glue:text}`ch_full_together`.
''')

nb.md(r'''
## Against the published benchmark

Fashion-MNIST's authors keep a table of results that readers submitted (they note that they have
not verified them). Debian's package `dataset-fashion-mnist` ships it inside the dataset's README;
the package's `benchmark/baselines.json` holds only the parameter grid of the authors' own
scikit-learn benchmark, which has no neural network at all (checked below). Here the best
configuration on the whole training set is placed among the submitted convolutional networks with
two or three convolutions, and human performance.
''')

nb.code('''
BASELINES = Path("/usr/share/doc/dataset-fashion-mnist/benchmark/baselines.json")
if BASELINES.exists():
    grid = json.loads(BASELINES.read_text())["classifiers"]
    print(f"baselines.json: {len(grid)} scikit-learn classifiers:", ", ".join(sorted(grid)))
else:
    print(f"{BASELINES} is not on this machine (Debian package dataset-fashion-mnist).")
bench = published_benchmarks() if BENCHMARK_README.exists() else []
print(f"{BENCHMARK_README}: " + (f"{len(bench)} submitted results" if bench else "not on this machine"))
''')

nb.code('''
best = max(full, key=lambda s: s["test_acc"])
cfg = CONFIGS[best["name"]]
params = count_params(build_model((1, 28, 28), 10, width=cfg.width, batch_norm=cfg.batch_norm))
prep = "standardization" + (", random shifts and rotations" if cfg.augment else "")
ours = (best["test_acc"], [f"**this book: {best['name']}** ({params:,} parameters)", prep,
                           f"**{ci_text(best)}**", "-"])
small_cnns = [b for b in bench if re.match(r"[23] Conv|Human", b["classifier"])]
theirs = [(b["fashion_acc"], [b["classifier"], b["preprocessing"],
                              f"{100 * b['fashion_acc']:.1f}%", b["submitter"]]) for b in small_cnns]
listed = [row for _, row in sorted(theirs + [ours], key=lambda t: -t[0])]
display(Markdown(markdown_table(["classifier", "preprocessing", "Fashion-MNIST test accuracy",
                                 "submitter"], listed)))
''')

nb.code('''
entries = [b["fashion_acc"] for b in small_cnns if not b["classifier"].startswith("Human")]
above = sum(best["test_acc"] > a for a in entries)
glue("ch_best_name", best["name"], display=False)
glue("ch_best_acc", f"{100 * best['test_acc']:.1f}%", display=False)
glue("ch_bench_rank", f"{above} of the {len(entries)}" if entries else "none of the (absent)", display=False)
glue("ch_params", f"{params:,}", display=False)
''')

nb.md(r'''
The best configuration on the whole training set, {glue:text}`ch_best_name` at
{glue:text}`ch_best_acc` with {glue:text}`ch_params` parameters, scores above
{glue:text}`ch_bench_rank` submitted small CNNs listed. The entries differ in width, epochs,
optimizer and preprocessing, most report a single run, and none states a confidence interval, so
the ranking says where a small, briefly trained network lands, not which recipe is better.
''')

nb.md(r'''
## Explore

With a kernel (locally or on Colab), the panel below trains the "all together" configuration for
any training-set size and adds it to the figure, so you can see where the combination starts to
pay off. Each click trains the chosen number of seeds (runs already trained come from the cache).
''')

nb.code('''
display(sweep_panel(CONFIGS["all together"], "train_size", [250, 500, 1_000, 2_000, 4_000],
                    metric="test_acc", seeds=3, value=1_000))
''')

nb.md(r'''
On the static page, the slider below steps through the small-data configurations: the learning
curves of each (mean over seeds, band from the lowest to the highest run) beside the whole
comparison.
''')

nb.code('''
result = SweepResult("name", list(CONFIGS), rows_small, small)
HTML(sweep_slider(result, "test_acc"))
''')

nb.md(r'''
## Takeaways

- "Use X to get Y" depends on the regime. Measure it: a baseline, one technique at a time, all
  together, several seeds, confidence intervals, and the time each costs.
- Batch normalization adds computation per epoch. When it speeds training up, it does so by
  getting further per epoch or by allowing larger learning rates.
- Regularizers trade fitting for generalization. With a fixed budget of epochs and a small network,
  strong dropout or stacked regularizers can underfit, so each setting needs its own sweep.
- A single number from a benchmark table is one run of one recipe. Compare intervals, not
  leaderboard positions.

## Exercises

1. Give the "all together" configuration twice the epochs (`replace(CONFIGS["all together"],
   epochs=24)`) and rerun its row. Does it overtake the best single technique now?
2. Replace dropout 0.5 by 0.2 in `ablation_configs` and rerun the small-data table. Which verdicts
   change?
3. Add a row "+BN, lr 0.2" (`replace(CONFIGS["+BN"], lr=0.2)`) to test the claim that batch
   normalization allows larger learning rates. Compare it with the baseline at the same larger
   learning rate.
''')

nb.write(Path(__file__).resolve().parent.parent / "choosing.ipynb")
