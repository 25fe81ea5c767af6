"""Pure functions from results to matplotlib figures, and a static slider for the published page.

Nothing here trains or computes results: every function takes rows / summaries / tensors and
returns a ``matplotlib.figure.Figure`` (or HTML). :func:`slider_html` turns a list of figures into
a self-contained HTML slider (inline PNGs + a few lines of JavaScript, nothing loaded from the
internet) that works on the static site without a kernel.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from torch import Tensor

from cnnlab.experiments import SweepResult
from cnnlab.stats import collapsed, hashable
from cnnlab.train import History

__all__ = [
    "LABELS",
    "figure_to_png",
    "image_grid",
    "plot_histories",
    "plot_speedups",
    "plot_sweep",
    "plot_weight_hist",
    "label_of",
    "shared_ylim",
    "slider_html",
    "sweep_slider",
    "value_label",
]

Row = dict[str, Any]
HistoryLike = History | Mapping[str, Sequence[float]]  # a History or its dict


def _new_axes(ax: Axes | None = None, figsize: tuple[float, float] = (5.5, 3.5)
              ) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


# How the fields of runs and summaries are written on axes and slider captions.
LABELS: dict[str, str] = {
    "test_acc": "test accuracy",
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy",
    "train_eval_acc": "training accuracy (eval mode)",
    "gap": "train-test gap",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "epoch": "epoch",
    "epochs": "epochs",
    "dropout": "dropout rate p",
    "l1": "L1 strength \u03bb",
    "l2": "L2 strength \u03bb",
    "weight_decay": "weight decay",
    "clip_weights": "weight clip range r",
    "clip_grad_norm": "gradient-norm clip",
    "lr": "learning rate",
    "batch_size": "batch size",
    "width": "width (channels)",
    "train_size": "training images",
    "early_stopping": "early-stopping patience",
    "batch_norm": "batch normalization",
}


def label_of(name: str) -> str:
    """The human label of a run field (``"test_acc"`` -> ``"test accuracy"``); unknown names
    are returned with underscores as spaces."""
    return LABELS.get(name, name.replace("_", " "))


def shared_ylim(*summaries: SweepResult | Sequence[Row], metric: str = "test_acc",
                pad: float = 0.02) -> tuple[float, float]:
    """One y-range that holds every mean and interval of ``metric`` in all ``summaries``
    (SweepResults or summary rows), and every run of a SweepResult (the dots of
    :func:`plot_sweep`), for figures that are meant to be compared side by side."""
    values = []
    for summary in summaries:
        rows = summary.summary if hasattr(summary, "summary") else summary
        for s in rows:
            values += [v for v in (s.get(metric), s.get(f"{metric}_low"),
                                   s.get(f"{metric}_high"))
                       if v is not None and math.isfinite(v)]
        values += [r[metric] for r in getattr(summary, "rows", [])
                   if r.get(metric) is not None and math.isfinite(r[metric])]
    if not values:
        raise ValueError(f"No finite {metric!r} values to set a y-range from")
    return min(values) - pad, max(values) + pad


def value_label(value: Any) -> str:
    """How a parameter value is written in figures and sliders (``None`` means "off")."""
    return "off" if value is None else str(value)


def _positions(values: Sequence[Any]) -> tuple[list[float], list[str], bool]:
    """x positions for parameter values: numeric ones as numbers, others evenly spaced."""
    labels = [value_label(v) for v in values]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return [float(v) for v in values], labels, True
    return list(range(len(values))), labels, False


def plot_sweep(
    summary: SweepResult | Sequence[Row],
    metric: str = "test_acc",
    *,
    param: str | None = None,
    ax: Axes | None = None,
    label: str | None = None,
    logx: bool = False,
    marker: str = "o",
    highlight: Any = None,
) -> Figure:
    """Mean of ``metric`` per parameter value with its 95% CI as error bars, and each run as a dot
    (when given a :class:`~cnnlab.experiments.SweepResult`, which has the runs).

    Where runs collapsed (see :func:`cnnlab.stats.collapsed`) the summary has no interval: the
    mean is drawn without a bar and marked ``"k/n collapsed"``; the dots show the two outcomes.
    A value with one seed has no interval either, and no bar.

    Args:
        summary: a :class:`~cnnlab.experiments.SweepResult` or its ``summary`` rows.
        metric: the summarized field (``test_acc``, ``gap``, ...).
        param: the varied field (taken from a SweepResult when not given).
        ax: draw into these axes instead of a new figure.
        label: legend label.
        logx: logarithmic x axis (for learning rates and lambdas; zero is drawn at the left).
        highlight: a parameter value to mark with a vertical line.
    """
    runs: list[Row] = []
    if hasattr(summary, "summary"):
        param = param or summary.param
        runs = list(summary.rows)
        summary = summary.summary
    if param is None:
        raise ValueError("plot_sweep needs `param` when given plain summary rows")
    values = [s[param] for s in summary]
    xs, ticklabels, numeric = _positions(values)
    if logx and numeric:
        positive = [x for x in xs if x > 0]
        floor = min(positive) / 10 if positive else 1e-3
        xs = [x if x > 0 else floor for x in xs]
    mean = np.array([s[metric] for s in summary], dtype=float)
    low = np.array([s.get(f"{metric}_low", np.nan) for s in summary], dtype=float)
    high = np.array([s.get(f"{metric}_high", np.nan) for s in summary], dtype=float)
    yerr = np.vstack([mean - low, high - mean])  # NaN (no interval: one seed, or collapse): no bar
    fig, ax = _new_axes(ax)
    container = ax.errorbar(xs, mean, yerr=yerr, marker=marker, capsize=3, label=label)
    color = container[0].get_color()
    if runs:
        keys = [hashable(v) for v in values]
        dots = [(xs[keys.index(hashable(r[param]))], r[metric]) for r in runs
                if metric in r and hashable(r[param]) in keys]
        if dots:
            ax.plot(*zip(*dots), linestyle="none", marker=".", markersize=4, alpha=0.45,
                    color=color)
    for x, s in zip(xs, summary):
        bad, what = ((s["n_collapsed"], "collapsed") if "n_collapsed" in s
                     else (s.get("n_diverged", 0), "diverged"))
        if bad:
            ax.annotate(f"{bad}/{s['n']} {what}", (x, s[metric]), fontsize=7,
                        color=color, xytext=(3, 6), textcoords="offset points")
    if logx and numeric:
        ax.set_xscale("log")
    if not numeric or logx:
        ax.set_xticks(xs, ticklabels)
    if highlight is not None and highlight in values:
        ax.axvline(xs[values.index(highlight)], color="0.6", ls="--", lw=1)
    ax.set_xlabel(label_of(param))
    ax.set_ylabel(f"{label_of(metric)} (mean, 95% CI)" + ("; dots: runs" if runs else ""))
    ax.grid(alpha=0.3)
    if label:
        ax.legend(fontsize=8)
    return fig


def plot_histories(
    histories: Mapping[str, HistoryLike | Sequence[HistoryLike]], metric: str = "val_acc", *,
    ax: Axes | None = None,
) -> Figure:
    """One curve per run: ``metric`` per epoch. Values are Histories or their dicts; a list of
    them is drawn as a mean curve with a band from min to max."""
    fig, ax = _new_axes(ax)
    for name, hist in histories.items():
        runs = hist if isinstance(hist, (list, tuple)) else [hist]
        series = [np.asarray(h[metric] if isinstance(h, Mapping) else getattr(h, metric), float)
                  for h in runs]
        length = max(len(s) for s in series)
        padded = np.full((len(series), length), np.nan)
        for i, s in enumerate(series):
            padded[i, : len(s)] = s
        epochs = np.arange(1, length + 1)
        with np.errstate(all="ignore"):
            line = ax.plot(epochs, np.nanmean(padded, 0), marker=".", label=name)[0]
            if len(series) > 1:
                ax.fill_between(epochs, np.nanmin(padded, 0), np.nanmax(padded, 0),
                                color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label_of(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_speedups(
    work: Sequence[float],
    curves: Mapping[str, Sequence[Any]],
    *,
    point_labels: Sequence[str] | None = None,
    ceiling: float | None = None,
    xlabel: str = "GFLOP per training step",
    dodge: float = 0.03,
    ax: Axes | None = None,
) -> Figure:
    """Speed-up against work per step: one line per comparison, each point's 95% interval as
    an error bar, and 1.0 (no speed-up) marked by a solid grey line.

    Args:
        work: the x value of each point (e.g. GFLOP per step), positive: drawn on a log axis.
        curves: label -> one ratio per point, each with ``value``, ``low`` and ``high`` (a
            :class:`~cnnlab.perf.Ratio`); a NaN bound (no interval) draws no bar.
        point_labels: a note under each point's tick label (e.g. ``"width 16"``).
        ceiling: also mark this speed-up (e.g. the number of processes) with a dashed line.
        dodge: shift the k-th line by a factor ``(1 + dodge) ** k`` along x, so that bars at
            the same x do not hide each other (0: every line at the exact x).
        ax: draw into these axes instead of a new figure.
    """
    if not work or any(not w > 0 for w in work):
        raise ValueError(f"Invalid work values: {list(work)} (must be positive)")
    if point_labels is not None and len(point_labels) != len(work):
        raise ValueError(f"Invalid point_labels: {len(point_labels)} for {len(work)} points")
    for name, ratios in curves.items():
        if len(ratios) != len(work):
            raise ValueError(f"Invalid curve {name!r}: {len(ratios)} ratios for "
                             f"{len(work)} points")
    fig, ax = _new_axes(ax)
    ax.axhline(1.0, color="0.5", lw=1, label="1.0: no speed-up")
    if ceiling is not None:
        ax.axhline(ceiling, color="0.5", lw=1, ls="--", label=f"{ceiling:g}: ideal")
    for k, (name, ratios) in enumerate(curves.items()):
        xs = [w * (1 + dodge) ** k for w in work]
        value = np.array([r.value for r in ratios], dtype=float)
        low = np.array([r.low for r in ratios], dtype=float)
        high = np.array([r.high for r in ratios], dtype=float)
        ax.errorbar(xs, value, yerr=np.vstack([value - low, high - value]), marker="o",
                    capsize=3, label=name)
    ax.set_xscale("log")
    low, high = min(work), max(work)
    pad = (high / low) ** 0.1 if high > low else 2.0  # room for the tick labels at both ends
    ax.set_xlim(low / pad, high * pad * (1 + dodge) ** (len(curves) - 1))
    ax.xaxis.set_minor_locator(NullLocator())  # ticks at the points only, written plainly
    notes = [f"\n{text}" for text in point_labels] if point_labels else [""] * len(work)
    ax.set_xticks(list(work), [f"{w:.2g}{note}" for w, note in zip(work, notes)], fontsize=8)
    ax.set_xlabel(xlabel + " (log scale)")
    ax.set_ylabel("speed-up (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_weight_hist(
    weights: Mapping[str, Tensor | Iterable[Tensor]], *, bins: int = 60, ax: Axes | None = None,
    log: bool = True,
    range_: tuple[float, float] | None = None,
) -> Figure:
    """Overlaid histograms of weight values; each value is a tensor or an iterable of tensors."""
    fig, ax = _new_axes(ax)
    flat = {}
    for name, w in weights.items():
        tensors = [w] if hasattr(w, "detach") else list(w)
        flat[name] = np.concatenate([t.detach().cpu().flatten().numpy() for t in tensors])
    if range_ is None:
        lim = max(float(np.abs(v).max()) for v in flat.values()) or 1.0
        range_ = (-lim, lim)
    for name, v in flat.items():
        ax.hist(v, bins=bins, range=range_, histtype="step", lw=1.5, label=name, log=log)
    ax.set_xlabel("weight value")
    ax.set_ylabel("count" + (" (log)" if log else ""))
    ax.legend(fontsize=8)
    return fig


def image_grid(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, classes: Sequence[str], *, n: int = 10,
    per_class: bool = True,
) -> Figure:
    """A grid of example images (first channel or RGB), one column per class when
    ``per_class``: ``n`` rows of examples of each class."""
    x, y = np.asarray(x), np.asarray(y)
    k = len(classes)
    rows = n if per_class else math.ceil(n / 10)
    fig, axes = plt.subplots(rows, k, figsize=(k * 0.9, rows * 0.95), squeeze=False)
    for c in range(k):
        idx = np.flatnonzero(y == c)[:rows]
        for r in range(rows):
            ax = axes[r][c]
            ax.axis("off")
            if r < len(idx):
                img = x[idx[r]]
                img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
                ax.imshow(img, cmap="gray_r" if img.ndim == 2 else None)
        axes[0][c].set_title(classes[c], fontsize=7)
    fig.subplots_adjust(wspace=0.05, hspace=0.05, top=0.9)
    return fig


def figure_to_png(fig: Figure, *, dpi: int = 80, close: bool = True) -> bytes:
    """Render ``fig`` to PNG bytes (and close it, so notebooks do not show it twice)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return buf.getvalue()


def slider_html(
    frames: Sequence[tuple[str, Figure]], *, label: str = "value", start: int = 0, dpi: int = 80
) -> str:
    """A self-contained HTML slider that switches between precomputed figures.

    Works on a static page without a kernel and loads nothing from outside: the frames are
    inline PNGs and the behaviour is a few lines of inline JavaScript. Each figure is closed.
    The images fill the width of the column they are in (render them at least that wide).

    Args:
        frames: ``(caption, figure)`` pairs in slider order.
        label: the name shown before the current caption.
        start: the frame shown first.
    Returns:
        HTML for ``IPython.display.HTML``. The root element has class ``cnnlab-slider``, the
        range input ``cnnlab-slider-input``, the image ``cnnlab-slider-img`` (browser tests use
        these).
    """
    if not frames:
        raise ValueError("slider_html needs at least one frame")
    if not 0 <= start < len(frames):
        raise ValueError(f"Invalid start frame: {start} (there are {len(frames)} frames)")
    uid = f"cnnlab-slider-{uuid.uuid4().hex[:10]}"
    srcs = ["data:image/png;base64," + base64.b64encode(figure_to_png(f, dpi=dpi)).decode()
            for _, f in frames]
    captions = [str(c) for c, _ in frames]
    imgs = "".join(
        f'<img class="cnnlab-slider-img" alt="{html.escape(label)} = {html.escape(c)}" '
        f'src="{s}" style="width:100%;height:auto;display:{"block" if i == start else "none"}">'
        for i, (c, s) in enumerate(zip(captions, srcs))
    )
    caps = html.escape(json.dumps(captions))
    return (
        f'<div class="cnnlab-slider" id="{uid}" data-captions="{caps}">'
        f'<label style="font-family:sans-serif;font-size:0.9em">{html.escape(label)}: '
        f'<input class="cnnlab-slider-input" type="range" min="0" max="{len(frames) - 1}" '
        f'step="1" value="{start}" style="vertical-align:middle;width:min(24em,55%)"> '
        f'<b class="cnnlab-slider-caption">{html.escape(captions[start])}</b></label>'
        f"{imgs}</div>"
        "<script>(function(){"
        f'var root=document.getElementById("{uid}");'
        'var input=root.querySelector(".cnnlab-slider-input");'
        'var imgs=root.querySelectorAll(".cnnlab-slider-img");'
        'var caps=JSON.parse(root.getAttribute("data-captions"));'
        'var cap=root.querySelector(".cnnlab-slider-caption");'
        'input.addEventListener("input",function(){var k=+input.value;'
        'imgs.forEach(function(im,i){im.style.display=(i===k)?"block":"none";});'
        "cap.textContent=caps[k];});"
        "})();</script>"
    )


def sweep_slider(
    result: SweepResult,
    metric: str = "test_acc",
    *,
    logx: bool = False,
    curves: Sequence[str] = ("train_acc", "val_acc"),
    ylim: tuple[float, float] | None = None,
    dpi: int = 90,
) -> str:
    """The static counterpart of a live panel: one frame per swept value, each showing that
    value's learning curves (mean over seeds, min-max band) beside the whole sweep with the
    value marked. Frames are 900 px wide at the default ``dpi`` (the page shows them at its
    column's width). ``ylim`` fixes the sweep's y-range, e.g. :func:`shared_ylim` of two sweeps
    shown one after the other, so that their heights can be compared. Returns
    :func:`slider_html`."""
    frames = []
    name = label_of(result.param)
    for value in result.values:
        rows = [r for r in result.rows if r[result.param] == value]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained")
        for c in curves:
            plot_histories({label_of(c): [r["history"] for r in rows]}, c, ax=left)
        left.set_ylabel("accuracy")
        bad = sum(collapsed(r) for r in rows)
        note = f", {bad}/{len(rows)} collapsed" if bad else ""
        left.set_title(f"{name} = {value_label(value)}: learning curves "
                       f"({len(rows)} seeds{note})", fontsize=10)
        plot_sweep(result, metric, ax=right, logx=logx, highlight=value)
        if ylim is not None:
            right.set_ylim(*ylim)
        right.set_title(f"{label_of(metric)} over the sweep", fontsize=10)
        frames.append((value_label(value), fig))
    return slider_html(frames, label=name, dpi=dpi)
