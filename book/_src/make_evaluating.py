"""Build book/evaluating.ipynb (without outputs): `.venv/bin/python book/_src/make_evaluating.py`."""

from pathlib import Path

from nbbuild import COLAB, SETUP, START_WORKERS, Notebook

nb = Notebook()
nb.code(COLAB, ["remove-cell"])

nb.md(r'''
# Evaluating honestly and avoiding overfitting (如何评估模型性能 / 如何避免过拟合)

The article answers two questions in a few lines each. *How do I evaluate a model?* (6.3): compute
accuracy, recall and similar metrics on a validation or test set, use cross-validation and average
the results, and look at model complexity and training time. *How do I avoid overfitting?* (6.4):
L1/L2 regularization, dropout, early stopping on the validation set, and data augmentation "such
as random flips and crops".

The list is right, but it leaves out the parts that make evaluation honest. Each data split has one
job, and the test set loses its value once it is used to choose anything. Accuracy hides which
classes fail. One training run is one draw from a distribution, and the spread of that distribution
is often larger than the effect being claimed. An augmentation must keep the label true: for
handwritten digits, flips break that rule. This chapter measures each point. It also builds the two
remaining tools, early stopping and augmentation, as `fit` hooks in
`cnnlab.techniques.overfitting`, and tests them.
''')

nb.code(SETUP + START_WORKERS)

nb.code('''
%matplotlib inline
from dataclasses import replace
import torch
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix as sk_confusion_matrix
from cnnlab.evaluation import (accuracy, ci_compare, ci_text, confusion_matrix, cross_validate,
                               markdown_table, per_class_recall, predict)
from cnnlab.experiments import confidence_interval
from cnnlab.models import build_model
from cnnlab.plots import image_grid, plot_histories
from cnnlab.techniques.overfitting import Augmentation, EarlyStopping, random_affine
from cnnlab.train import evaluate, fit
from IPython.display import Markdown
torch.set_num_threads(1)  # the fits in this kernel are tiny: one thread is faster on 2 shared cores
''')

nb.md(r'''
## Three splits, three jobs

`load_dataset` returns three disjoint splits. The **training** split fits the weights. The
**validation** split, held out of the training files, chooses everything else: the learning rate,
the regularization strength, and the epoch at which to stop. The **test** split (the dataset's
official test set) is used once, at the end, to report. Once a choice is made by looking at
test accuracy, that accuracy is no longer an estimate for new data: it has been optimized. Every
number in this book follows that rule: `fit` reports validation accuracy each epoch and test
accuracy only at the end, and early stopping below watches the validation loss.
''')

nb.code('''
TRAIN_SIZE = 1_000  # the small-data regime, where overfitting shows
BASE = RunConfig(DATASET, train_size=TRAIN_SIZE, val_size=small_val_size(DATASET),
                 width=8, epochs=8, lr=0.05, batch_size=64)
data = load_for(BASE, seed=0)  # the splits of the runs below with seed 0
sizes = {split: len(getattr(data, split)[1]) for split in ("train", "val", "test")}
print(sizes)
for split, n in sizes.items():
    glue(f"ev_{split}_size", f"{n:,}", display=False)
glue("ev_dataset", DATASET.replace("_", "-"), display=False)
for split in ("val", "test"):  # the standard error of an 80% accuracy measured on that split
    glue(f"ev_{split}_se", f"{100 * (0.8 * 0.2 / sizes[split]) ** 0.5:.1f}", display=False)
''')

nb.md(r'''
The page runs on {glue:text}`ev_dataset`, with {glue:text}`ev_train_size` training images (a
stratified random subset), {glue:text}`ev_val_size` validation and {glue:text}`ev_test_size` test
images, on the hardware printed above. The validation split is kept small on purpose: it is scored
after every epoch of every run, so its size is paid for many times over, while the test set is
scored once per run. An accuracy $a$ measured on $n$ images has a standard error of
$\sqrt{a(1-a)/n}$: at $a = 80\%$ that is {glue:text}`ev_val_se` points on these validation
images and {glue:text}`ev_test_se` on the test images. That is enough to see where a validation
curve turns (early stopping, below), but two settings whose validation accuracies differ by less
than about twice that standard error are not told apart by one run; comparisons in this book are
therefore made over several seeds.

## Accuracy, per-class recall and the confusion matrix

For $K$ classes, the confusion matrix counts how often an image of true class $i$ was predicted as
$j$:

$$
C_{ij} = \#\{n : y_n = i,\ \hat y_n = j\}, \qquad
\text{accuracy} = \frac{\sum_i C_{ii}}{\sum_{i,j} C_{ij}}, \qquad
\text{recall}_i = \frac{C_{ii}}{\sum_j C_{ij}}, \qquad
\text{precision}_j = \frac{C_{jj}}{\sum_i C_{ij}} .
$$

Recall of class $i$ is the accuracy on the images of class $i$. `cnnlab.evaluation` computes the
matrix with one `bincount`. The cell trains one model and checks the matrix against scikit-learn's,
and its accuracy against the accuracy that `cnnlab.train.evaluate` computes with PyTorch:
''')

nb.code('''
model = build_model(data.input_shape, data.num_classes, seed=0, width=8)
hist = fit(model, data, epochs=BASE.epochs, lr=BASE.lr, seed=0, progress=False)
x_test, y_test = data.test
pred = predict(model, x_test)
cm = confusion_matrix(y_test, pred, data.num_classes)
torch.testing.assert_close(cm, torch.as_tensor(sk_confusion_matrix(y_test, pred)))
torch.testing.assert_close(accuracy(cm), evaluate(model, x_test, y_test)[1])
print(f"test accuracy {accuracy(cm):.2%} (= fit's {hist.test_acc:.2%})")
''')

nb.code('''
fig, ax = plt.subplots(figsize=(6.2, 5.4), layout="constrained")
ConfusionMatrixDisplay(cm.numpy(), display_labels=data.classes).plot(
    ax=ax, cmap="Blues", colorbar=False, xticks_rotation=45, values_format="d")
ax.set_title("test set, one model (rows: true class, columns: predicted)", fontsize=9)
plt.show()
''')

nb.code('''
recall = per_class_recall(cm)
order = recall.argsort()
display(Markdown(markdown_table(["class", "recall", "images"],
        [[data.classes[i], f"{recall[i]:.1%}", int(cm[i].sum())] for i in order.tolist()])))
off = cm.clone().fill_diagonal_(0)
i, j = divmod(int(off.argmax()), data.num_classes)
glue("ev_worst_class", data.classes[int(order[0])], display=False)
glue("ev_worst_recall", f"{recall[order[0]]:.1%}", display=False)
glue("ev_best_class", data.classes[int(order[-1])], display=False)
glue("ev_best_recall", f"{recall[order[-1]]:.1%}", display=False)
glue("ev_confused", f"{data.classes[i]} taken for {data.classes[j]} ({int(off[i, j])} times)", display=False)
glue("ev_acc", f"{accuracy(cm):.1%}", display=False)
''')

nb.md(r'''
The overall accuracy of {glue:text}`ev_acc` averages classes that behave very differently:
{glue:text}`ev_best_class` is recognized {glue:text}`ev_best_recall` of the time,
{glue:text}`ev_worst_class` only {glue:text}`ev_worst_recall`. The most frequent single mistake
is {glue:text}`ev_confused`. A model that is "good on average" can be unusable for one class; the
confusion matrix shows which classes fail, and what they are taken for.

## One run misleads

A training run depends on its seed: the seed draws the training subset, the initial weights and the
order of the batches. Below, one fixed configuration is trained with ten seeds. Nothing else
changes.
''')

nb.code('''
spread = sweep(BASE, "epochs", [BASE.epochs], seeds=10)  # one configuration, ten seeds
accs = [r["test_acc"] for r in spread.rows]
mean, low, high = confidence_interval(accs)
fig, ax = plt.subplots(figsize=(6, 1.9), layout="constrained")
ax.axvspan(low, high, color="C0", alpha=0.2, label="95% CI of the mean")
ax.plot(accs, [0] * len(accs), "o", color="C1", alpha=0.8, label="one run each")
ax.axvline(mean, color="C0", label="mean")
ax.set_yticks([]); ax.set_xlabel("test accuracy"); ax.legend(fontsize=7, loc="upper left")
plt.show()
''')

nb.code('''
glue("ev_spread_min", f"{min(accs):.1%}", display=False)
glue("ev_spread_max", f"{max(accs):.1%}", display=False)
glue("ev_spread_range", f"{100 * (max(accs) - min(accs)):.1f}", display=False)
glue("ev_spread_ci", f"{mean:.1%} ({low:.1%}\\u2013{high:.1%})", display=False)
glue("ev_spread_n", str(len(accs)), display=False)
''')

nb.md(r'''
The same configuration scores anywhere from {glue:text}`ev_spread_min` to
{glue:text}`ev_spread_max` over {glue:text}`ev_spread_n` seeds, a range of
{glue:text}`ev_spread_range` percentage points. Its mean with a 95% confidence interval is
{glue:text}`ev_spread_ci`. Two single runs that differ by a point or two therefore say nothing
about which setting is better, and that is the size of most effects in {doc}`choosing`. This is
why every comparison in this book is a mean over at least five seeds with its interval.

## k-fold cross-validation

The article's second suggestion is cross-validation: split the training set into $k$ folds, train
$k$ models, each on $k-1$ folds, and measure each on the fold it did not see:

$$
\widehat{\text{acc}}_{\text{CV}} = \frac{1}{k}\sum_{i=1}^{k} \text{acc}\big(f_{-i},\ \text{fold}_i\big).
$$

The estimate comes from the training data alone, with no separate test set, and it comes with an
interval. `cross_validate` keeps each class's share in every fold and re-standardizes the images
with each training part's own statistics, so nothing about the held-out fold leaks into training.
Below, 5-fold cross-validation on the same {glue:text}`ev_train_size` images is compared with the
test accuracy of the seed-0 model trained on all of them:
''')

nb.code('''
def small_model(fold):
    return build_model(data.input_shape, data.num_classes, seed=fold, width=8)

cv = cross_validate(data, small_model, k=5, seed=0, epochs=BASE.epochs, lr=BASE.lr, progress=False)
test_acc_0 = next(r["test_acc"] for r in spread.rows if r["seed"] == 0)
print("fold accuracies:", ", ".join(f"{a:.1%}" for a in cv.fold_acc))
print(f"CV estimate {cv.mean:.1%} (95% CI {cv.low:.1%}-{cv.high:.1%}); test set {test_acc_0:.1%}")
''')

nb.code('''
inside = cv.low <= test_acc_0 <= cv.high
glue("ev_cv", f"{cv.mean:.1%} ({cv.low:.1%}\\u2013{cv.high:.1%})", display=False)
glue("ev_cv_test", f"{test_acc_0:.1%}", display=False)
glue("ev_cv_inside", "inside" if inside else "outside", display=False)
glue("ev_cv_fold", f"{len(data.train[1]) // 5:,}", display=False)
''')

nb.md(r'''
Cross-validation estimates {glue:text}`ev_cv`. The test accuracy of the model trained on all the
images, {glue:text}`ev_cv_test`, lies {glue:text}`ev_cv_inside` that interval. Two things pull
the two numbers apart. Each cross-validated model sees only 4/5 of the images, so the estimate
tends to be a little pessimistic. And each fold holds only {glue:text}`ev_cv_fold` images, so each
fold's accuracy is noisy. Cross-validation costs $k$ trainings. It pays off when data are too scarce
to set aside a large test set; with {glue:text}`ev_test_size` test images, as here, a held-out test set
measured over several seeds is cheaper.

## Overfitting, and stopping in time (早停)

Train the small model for 20 epochs and watch the two losses. The training loss keeps falling. The
validation loss falls, reaches a minimum, and then rises as the network memorizes its
{glue:text}`ev_train_size` images. Early stopping keeps the weights of the best epoch

$$
t^\star = \arg\min_{t}\ L_{\text{val}}(\theta_t),
$$

and stops once $p$ epochs in a row (the *patience*) have not improved on it. It uses only the
validation split, so the test set stays untouched. `EarlyStopping(patience)` does this as a `fit`
hook: `on_epoch_end` returns `True` to stop, and `on_fit_end` loads the best epoch's weights back
(batch-norm statistics included). The cell checks that the model `fit` returns is the best epoch's:
its validation loss, recomputed with PyTorch, equals the minimum of the curve.
''')

nb.code('''
stopper = EarlyStopping(patience=3)
model = build_model(data.input_shape, data.num_classes, seed=0, width=8)
hist = fit(model, data, epochs=20, lr=BASE.lr, seed=0, hooks=[stopper], progress=False)
val_loss, _ = evaluate(model, *data.val)
torch.testing.assert_close(val_loss, min(hist.val_loss), rtol=1e-5, atol=1e-6)
print(f"stopped after epoch {hist.epochs} of 20; best epoch {stopper.best_epoch}, "
      f"validation loss {val_loss:.4f} = min of the curve")
''')

nb.md(r'''
Now the sweep: 20 epochs at most, early stopping off or with a patience of 1, 2, 3 or 5 epochs,
five seeds each. Every run that stops early restores its best epoch before it is tested.
''')

nb.code('''
LONG = replace(BASE, epochs=20)
PATIENCE = [None, 1, 2, 3, 5]
es = sweep(LONG, "early_stopping", PATIENCE, seeds=5)
for s in es.summary:
    print(describe(s, "early_stopping"), f"mean training time {s['train_time']:.1f} s")
''')

nb.code('''
off = next(r for r in es.rows if r["early_stopping"] is None and r["seed"] == 0)["history"]
best = min(range(len(off["val_loss"])), key=off["val_loss"].__getitem__) + 1  # 1-based epoch
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.3), layout="constrained")
plot_histories({"training loss": off}, "train_loss", ax=left)
plot_histories({"validation loss": off}, "val_loss", ax=left)
left.axvline(best, color="0.5", ls="--", lw=1); left.set_ylabel("cross-entropy loss")
left.set_title(f"seed 0, no early stopping: best epoch {best}", fontsize=9)
plot_sweep(es, "test_acc", ax=right)
right.set_title("test accuracy by patience (off = no early stopping)", fontsize=9)
plt.show()
''')

nb.code('''
by = {s["early_stopping"]: s for s in es.summary}
runs = {p: [r["history"] for r in es.rows if r["early_stopping"] == p] for p in PATIENCE}
mean = lambda xs: sum(xs) / len(xs)
argbest = lambda xs, sign: max(range(len(xs)), key=lambda i: sign * xs[i]) + 1  # 1-based epoch
word = {1: "higher than", -1: "lower than", 0: "not distinguishable from"}[ci_compare(by[2], by[None])]
glue("ev_es_off", ci_text(by[None]), display=False)
glue("ev_es_p2", ci_text(by[2]), display=False)
glue("ev_es_word", word, display=False)
glue("ev_es_epochs", f"{mean([len(h['val_loss']) for h in runs[2]]):.1f}", display=False)
glue("ev_es_time", f"{by[2]['train_time'] / by[None]['train_time']:.0%}", display=False)
glue("ev_es_loss_epoch", f"{mean([argbest(h['val_loss'], -1) for h in runs[None]]):.1f}", display=False)
glue("ev_es_acc_epoch", f"{mean([argbest(h['val_acc'], 1) for h in runs[None]]):.1f}", display=False)
''')

nb.md(r'''
Without early stopping, the 20-epoch runs reach {glue:text}`ev_es_off` test accuracy. With a
patience of 2 they reach {glue:text}`ev_es_p2`, which is {glue:text}`ev_es_word` training to the
end. They stop after {glue:text}`ev_es_epochs` epochs on average and use
{glue:text}`ev_es_time` of the training time. The saving in time is certain. The effect on
accuracy depends on what the monitored quantity tracks. In the runs without early stopping, the
validation *loss* is lowest at epoch {glue:text}`ev_es_loss_epoch` on average, and the validation
*accuracy* is highest at epoch {glue:text}`ev_es_acc_epoch`. The loss starts rising when the
network grows over-confident on the images it gets wrong, which can happen while more images are
still being classified correctly; stopping on the loss then stops before the accuracy peaks
(exercise 3 monitors the accuracy instead). A patience of 1 lets one noisy epoch end training.
Once the loss never comes back below its minimum, every larger patience restores the same weights
and only trains longer before it gives up.

With a kernel, the panel retrains any patience value; on the static page, the slider shows the
learning curves of each.
''')

nb.code('''
display(sweep_panel(LONG, "early_stopping", PATIENCE, metric="test_acc", seeds=3, value=2))
''')

nb.code('''
HTML(sweep_slider(es, "test_acc"))
''')

nb.md(r'''
## Data augmentation (数据增强), chosen for the data

Augmentation trains on transformed copies of the images: same label, different pixels. It helps
only when the transformation keeps the label true and produces images like those the model will
meet. `Augmentation()` shifts each image by up to 10% of its side and rotates it by up to 10°,
with `torchvision.transforms.v2.functional.affine` applied to the batch tensors inside `fit`, with
no DataLoader. Pixels that enter from outside get the image's background value; after
normalization black is not 0, so filling with 0 would draw a grey frame. Every random draw comes
from the generator `fit` passes to the hook, so a seeded run is reproducible. (`affine` applies one
transform per call, so the batch is cut into 8 groups that each get their own draw: cheap, and
an epoch still sees hundreds of different transformations.)
''')

nb.code('''
x, y = data.train
first = torch.stack([torch.nonzero(y == c)[0, 0] for c in range(data.num_classes)])
g = torch.Generator().manual_seed(0)
copies = [x[first]] + [random_affine(x[first], g, groups=None) for _ in range(3)]
fig = image_grid(torch.cat(copies), y[first].repeat(4), data.classes, n=4)
fig.suptitle("top row: training images; below: three random shifts and rotations", fontsize=9)
plt.show()
''')

nb.md(r'''
The article suggests "random flips". A left-right flip keeps a garment a garment (several entries
of the Fashion-MNIST benchmark use it; see {doc}`choosing`), but for **digits** it does not keep
the label: a mirrored 2, 3, 4, 5, 6, 7 or 9 is not a digit anyone writes, and an upside-down 6 is
a 9. The next cell shows scikit-learn's 8x8 digits (the book's offline dataset) flipped left-right,
and measures what the flips do to training. Five seeds each: no augmentation, shifts and rotations,
and shifts and rotations plus random left-right flips.
''')

nb.code('''
from torchvision.transforms.v2 import functional as TF
digits = {s: load_dataset("digits", seed=s) for s in range(5)}
dx, dy = digits[0].train
pick = torch.stack([torch.nonzero(dy == c)[0, 0] for c in range(10)])
fig = image_grid(torch.cat([dx[pick], TF.horizontal_flip(dx[pick])]), dy[pick].repeat(2),
                 digits[0].classes, n=2)
fig.suptitle("top: digits; bottom: the same digits flipped left-right", fontsize=9)
plt.show()
''')

nb.code('''
AUGMENT = {"none": [], "shifts and rotations": [Augmentation()],
           "shifts, rotations and flips": [Augmentation(hflip=True)]}

def digits_acc(hooks, seed):
    d = digits[seed]
    model = build_model(d.input_shape, d.num_classes, seed=seed, width=8)
    return fit(model, d, epochs=12, lr=0.05, seed=seed, hooks=hooks, progress=False).test_acc

flips = {name: confidence_interval([digits_acc(h, s) for s in range(5)]) for name, h in AUGMENT.items()}
''')

nb.code('''
rows = {name: dict(zip(("test_acc", "test_acc_low", "test_acc_high"), ci)) for name, ci in flips.items()}
display(Markdown(markdown_table(["digits, 12 epochs", "test accuracy (95% CI, 5 seeds)"],
                                [[name, ci_text(r)] for name, r in rows.items()])))
words = {1: "raise", -1: "lower", 0: "do not measurably change"}
none, shift, flip = rows["none"], rows["shifts and rotations"], rows["shifts, rotations and flips"]
glue("ev_shift_word", words[ci_compare(shift, none)], display=False)
glue("ev_flip_word", words[ci_compare(flip, shift)], display=False)
for key, row in (("none", none), ("shift", shift), ("flip", flip)):
    glue(f"ev_{key}_acc", ci_text(row), display=False)
''')

nb.md(r'''
On digits, shifts and rotations {glue:text}`ev_shift_word` the test accuracy compared with no
augmentation ({glue:text}`ev_shift_acc` against {glue:text}`ev_none_acc`). These images are only
8x8 pixels: a sub-pixel shift or a 10° rotation is resampled (interpolated), so an augmented image
is also a blurred one, which limits what such augmentation can add here. Adding flips on top
{glue:text}`ev_flip_word` it ({glue:text}`ev_flip_acc`). Whatever the measured sizes, the
flipped images are not examples of their labels: the model spends capacity on shapes that never
occur in the test set, and it is taught that a mirrored 2 is still a 2. Choose an augmentation by
asking what variation the real data has. For handwriting that means small shifts, rotations and
changes of stroke width, in proportion to the image size. For photographs of objects it means
crops, left-right flips and colour changes. The ablation in {doc}`choosing` measures shifts and
rotations on Fashion-MNIST, alone and combined with everything else.

## The other remedies

The article's first two remedies have their own chapters. An L1 or L2 penalty, or weight decay
({doc}`regularization`), shrinks the weights. Dropout ({doc}`dropout`) masks activations during
training. All four remedies appear in the ablation of {doc}`choosing`, alone and combined, on
{glue:text}`ev_train_size` images and on the whole training set.

## Takeaways

- Train on the training split, choose on the validation split, report on the test split once.
- Report per-class recall or the confusion matrix, not only accuracy: the average hides the class
  that fails.
- One run is one sample. Compare means over seeds with confidence intervals. Cross-validation gives
  an interval from the training data alone, at $k$ times the cost.
- Early stopping is model selection on a validation metric. It always saves training time. Whether
  it also raises test accuracy depends on the metric it watches and on how noisy that metric is.
- An augmentation must keep the label true (never flips for digits), and it must suit the image
  size: on 8x8 digits even small shifts and rotations blur.

## Exercises

1. Compute per-class *precision* (`cnnlab.evaluation.per_class_precision`) for the model above.
   Which class is predicted most often by mistake?
2. Run `cross_validate` with `k=10`. How do the width of the interval and the cost change?
3. Train with `EarlyStopping(patience=3, monitor="val_acc")` instead of the validation loss. Does
   it stop at a different epoch? Why can accuracy and loss disagree?
''')

nb.write(Path(__file__).resolve().parent.parent / "evaluating.ipynb")
