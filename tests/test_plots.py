import base64
import html as html_lib
import io
import json
import math
import re
import statistics
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab import plots
from cnnlab.experiments import SweepResult
from cnnlab.perf import Ratio
from cnnlab.plots import (
    figure_to_png,
    image_grid,
    plot_histories,
    plot_speedups,
    plot_sweep,
    plot_weight_hist,
    slider_html,
    sweep_slider,
)
from cnnlab.stats import summarize


def fake_result():
    rows = []
    for p in (0.0, 0.5):
        for seed in range(3):
            acc = 0.9 - p / 5 + seed / 100
            rows.append({"dropout": p, "seed": seed, "test_acc": acc, "train_acc": acc + 0.05,
                         "gap": 0.05, "diverged": p == 0.5 and seed == 0,
                         "history": {"train_acc": [0.5, acc + 0.05], "val_acc": [0.5, acc]}})
    return SweepResult("dropout", [0.0, 0.5], rows, summarize(rows, "dropout"))


def errorbar_data(ax):
    """(x, y, low, high) as drawn by the first error-bar plot of ``ax``."""
    data_line, _caps, (bars,) = ax.containers[0].lines
    x, y = data_line.get_data()
    segments = bars.get_segments()
    bounds = [(min(s[:, 1]), max(s[:, 1])) if len(s) else (None, None) for s in segments]
    return list(x), list(y), [lo for lo, _ in bounds], [hi for _, hi in bounds]


def dashed_x(ax):
    """x positions of the vertical dashed lines (the highlight) in ``ax``."""
    return [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]


def tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def png_pixel(png, xy=None):
    """The RGB colour of one pixel of a PNG (its centre by default) and the image size."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    return img.getpixel(xy or (img.width // 2, img.height // 2)), img.size


def slider_images(html):
    return [base64.b64decode(s) for s in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def slider_captions(html):
    return json.loads(html_lib.unescape(re.search(r'data-captions="([^"]*)"', html).group(1)))


# ----------------------------------------------------------------------------- plot_speedups


def errorbars(ax, k):
    """(x, y, low, high) of the k-th error-bar plot of ``ax`` (None bounds: no bar there)."""
    data_line, _caps, (bars,) = ax.containers[k].lines
    x, y = data_line.get_data()
    segments = bars.get_segments()
    bounds = [(min(s[:, 1]), max(s[:, 1])) if len(s) and np.isfinite(s).all() else (None, None)
              for s in segments]
    return list(x), list(y), [lo for lo, _ in bounds], [hi for _, hi in bounds]


def hlines(ax):
    """(y, linestyle) of the horizontal lines across the axes (axhline)."""
    return sorted((line.get_ydata()[0], line.get_linestyle()) for line in ax.lines
                  if list(line.get_xdata()) == [0, 1] and len(set(line.get_ydata())) == 1)


def test_plot_speedups_draws_each_comparison_with_its_interval_and_marks_one():
    a = [Ratio(0.8, 0.7, 0.9, 5), Ratio(1.5, 1.2, 1.9, 5)]
    b = [Ratio(2.0, 1.5, 2.5, 5), Ratio(1.1, math.nan, math.nan, 1)]  # one repeat: no bar
    fig = plot_speedups([0.5, 4.0], {"2x1 over 1x1": a, "2x1 over 1x2": b},
                        point_labels=["small", "large"], ceiling=2, dodge=0)
    ax = fig.axes[0]
    assert errorbars(ax, 0) == ([0.5, 4.0], [0.8, 1.5], [0.7, 1.2], [0.9, 1.9])
    x, y, low, high = errorbars(ax, 1)
    assert (x, y, low[0], high[0]) == ([0.5, 4.0], [2.0, 1.1], 1.5, 2.5)
    assert low[1] is high[1] is None
    assert hlines(ax) == [(1.0, "-"), (2.0, "--")]  # no speed-up, and the ideal
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "1.0: no speed-up", "2: ideal", "2x1 over 1x1", "2x1 over 1x2"]
    assert ax.get_xscale() == "log" and "speed-up" in ax.get_ylabel()
    assert list(ax.get_xticks()) == [0.5, 4.0]
    assert tick_labels(ax) == ["0.5\nsmall", "4\nlarge"]  # the notes under the x values
    plt.close(fig)


def test_plot_speedups_dodges_lines_and_checks_its_input():
    r = [Ratio(1.0, 0.9, 1.1, 3)] * 2
    fig = plot_speedups([1.0, 10.0], {"a": r, "b": r, "c": r}, dodge=0.1)
    ax = fig.axes[0]
    for k in range(3):
        assert errorbars(ax, k)[0] == pytest.approx([1.1**k, 10 * 1.1**k])
    assert hlines(ax) == [(1.0, "-")] and tick_labels(ax) == ["1", "10"]
    plt.close(fig)
    before = plt.get_fignums()
    with pytest.raises(ValueError, match="Invalid work values"):
        plot_speedups([0.0, 1.0], {"a": r})
    with pytest.raises(ValueError, match="Invalid point_labels: 1 for 2 points"):
        plot_speedups([1.0, 2.0], {"a": r}, point_labels=["x"])
    with pytest.raises(ValueError, match="Invalid curve 'a': 1 ratios for 2 points"):
        plot_speedups([1.0, 2.0], {"a": r[:1]})
    assert plt.get_fignums() == before  # no figure left open by a refused call


# ----------------------------------------------------------------------------- plot_sweep


def test_plot_sweep_draws_mean_interval_and_runs_and_marks_collapse():
    res = fake_result()
    fig = plot_sweep(res, "test_acc", logx=False)
    ax = fig.axes[0]
    x, y, low, high = errorbar_data(ax)
    means = [statistics.mean(r["test_acc"] for r in res.rows if r["dropout"] == p)
             for p in (0.0, 0.5)]
    assert x == [0.0, 0.5] and y == pytest.approx(means)
    assert low[0] == pytest.approx(res.summary[0]["test_acc_low"])
    assert high[0] == pytest.approx(res.summary[0]["test_acc_high"])
    assert low[0] < y[0] < high[0]
    # p = 0.5 has a diverged (collapsed) run: no interval, no bar, and a mark
    assert math.isnan(res.summary[1]["test_acc_low"]) and low[1] is high[1] is None
    assert [(t.get_text(), t.xy[0]) for t in ax.texts] == [("1/3 collapsed", 0.5)]
    assert ax.texts[0].xy[1] == pytest.approx(means[1])
    (dots,) = [line for line in ax.lines if line.get_marker() == "."]
    drawn = sorted(zip(dots.get_xdata(), dots.get_ydata()))
    expected = sorted((r["dropout"], r["test_acc"]) for r in res.rows)
    assert [x for x, _ in drawn] == [x for x, _ in expected]
    assert [y for _, y in drawn] == pytest.approx([y for _, y in expected])
    assert ax.get_xscale() == "linear" and dashed_x(ax) == []
    plt.close(fig)


def test_plot_sweep_of_plain_rows_draws_the_given_metric():
    rows = [{"width": 4, "gap": 0.25, "gap_low": 0.125, "gap_high": 0.5},
            {"width": 8, "gap": 0.0625, "gap_low": 0.0, "gap_high": 0.125},
            {"width": 16, "gap": 0.5}]  # no interval: no bar
    fig = plot_sweep(rows, "gap", param="width", label="mine", highlight=8)
    ax = fig.axes[0]
    assert errorbar_data(ax) == ([4.0, 8.0, 16.0], [0.25, 0.0625, 0.5], [0.125, 0.0, None],
                                 [0.5, 0.125, None])
    assert dashed_x(ax) == [8.0] and len(ax.texts) == 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["mine"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("width (channels)",
                                                  "train-test gap (mean, 95% CI)")
    plt.close(fig)


def test_plot_sweep_on_a_log_axis_draws_zero_a_decade_below_the_smallest_value():
    rows = [{"lr": 0.0, "test_acc": 0.25}, {"lr": 0.01, "test_acc": 0.5},
            {"lr": 0.1, "test_acc": 0.75}]
    fig = plot_sweep(rows, param="lr", logx=True, highlight=0.0)
    ax = fig.axes[0]
    x, y, _, _ = errorbar_data(ax)
    assert x == pytest.approx([0.001, 0.01, 0.1]) and y == [0.25, 0.5, 0.75]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == pytest.approx(x) and tick_labels(ax) == ["0.0", "0.01", "0.1"]
    assert dashed_x(ax) == pytest.approx([0.001])
    plt.close(fig)


def test_plot_sweep_spaces_non_numeric_values_evenly_and_writes_none_as_off():
    rows = [{"optimizer": None, "test_acc": 0.25}, {"optimizer": "adam", "test_acc": 0.5},
            {"optimizer": "sgd", "test_acc": 0.75}]
    fig = plot_sweep(rows, param="optimizer", highlight="sgd")
    ax = fig.axes[0]
    assert errorbar_data(ax)[:2] == ([0, 1, 2], [0.25, 0.5, 0.75])
    assert tick_labels(ax) == ["off", "adam", "sgd"] and dashed_x(ax) == [2]
    plt.close(fig)


def test_plot_sweep_needs_param_for_plain_rows():
    with pytest.raises(ValueError, match="param"):
        plot_sweep(fake_result().summary)


# ----------------------------------------------------------------------------- other figures


def test_plot_histories_draws_each_run_and_the_mean_and_range_of_a_list():
    single = {"val_acc": [0.5, 0.75, 0.875]}
    runs = [{"val_acc": [0.125, 0.25, 0.375]}, {"val_acc": [0.375, 0.5]},
            SimpleNamespace(val_acc=[0.875, 0.75, 0.5])]  # a History-like object
    fig = plot_histories({"a": single, "b": runs})
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    assert list(ax.lines[0].get_ydata()) == single["val_acc"]
    series = [r["val_acc"] if isinstance(r, dict) else r.val_acc for r in runs]
    at = [[s[e] for s in series if e < len(s)] for e in range(3)]  # the runs that reached epoch e
    assert list(ax.lines[1].get_xdata()) == [1, 2, 3]
    assert list(ax.lines[1].get_ydata()) == pytest.approx([statistics.mean(v) for v in at])
    (band,) = ax.collections  # one band: the list; a single run has none
    vertices = band.get_paths()[0].vertices
    for epoch, values in enumerate(at, start=1):
        ys = vertices[vertices[:, 0] == epoch][:, 1]
        assert (min(ys), max(ys)) == pytest.approx((min(values), max(values)))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "validation accuracy")
    plt.close(fig)


def step_histogram(patch):
    """(bin edges, counts) of a ``histtype="step"`` histogram, read from its outline."""
    xy = patch.get_xy()  # (e0, 0), (e0, c0), (e1, c0), (e1, c1), ..., (en, c_{n-1}), (en, 0)
    return xy[::2, 0], xy[1:-1:2, 1]


def test_plot_weight_hist_draws_the_numpy_histogram_of_every_value():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, generator=g)
    v = [torch.randn(4, 3, generator=g) * 3, torch.randn(7, generator=g)]
    fig = plot_weight_hist({"w": w, "v": v}, bins=12)
    ax = fig.axes[0]
    values = {"w": w.numpy(), "v": np.concatenate([t.flatten().numpy() for t in v])}
    lim = max(np.abs(a).max() for a in values.values())  # symmetric, holds every value
    assert len(ax.patches) == 2
    for patch, a in zip(ax.patches, values.values()):
        counts, edges = np.histogram(a, bins=12, range=(-lim, lim))
        drawn_edges, drawn_counts = step_histogram(patch)
        np.testing.assert_allclose(drawn_edges, edges, rtol=1e-6)
        np.testing.assert_array_equal(drawn_counts, counts)
    assert sum(step_histogram(ax.patches[1])[1]) == 12 + 7  # every value, once
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["w", "v"]
    assert (ax.get_yscale(), ax.get_xlabel(), ax.get_ylabel()) == (
        "log", "weight value", "count (log)")
    plt.close(fig)


def test_plot_weight_hist_with_a_fixed_range_and_linear_counts():
    w = torch.tensor([-2.0, -0.75, -0.25, 0.0, 0.25, 0.3, 0.9, 5.0])
    fig = plot_weight_hist({"w": w}, bins=4, range_=(-1.0, 1.0), log=False)
    ax = fig.axes[0]
    edges, counts = step_histogram(ax.patches[0])
    assert list(edges) == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert list(counts) == [1, 1, 3, 1]  # -2 and 5 lie outside the range
    assert (ax.get_yscale(), ax.get_ylabel()) == ("linear", "count")
    plt.close(fig)
    zeros = plot_weight_hist({"z": torch.zeros(5)}, bins=2)
    edges, counts = step_histogram(zeros.axes[0].patches[0])
    assert list(edges) == [-1.0, 0.0, 1.0] and list(counts) == [0, 5]
    plt.close(zeros)


def test_image_grid_shows_the_first_examples_of_each_class_in_its_column():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(11, 1, 6, 5, generator=g)  # not square: a transposed image would not match
    y = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 0, 3, 1])  # class 3 has a single example
    classes = ["zero", "one", "two", "three"]
    fig = image_grid(x, y, classes, n=3)
    axes = np.array(fig.axes).reshape(3, 4)  # rows x classes
    for c, name in enumerate(classes):
        examples = [i for i in range(len(y)) if y[i] == c][:3]
        assert axes[0, c].get_title() == name
        for r in range(3):
            ax = axes[r, c]
            assert not ax.axison
            if r < len(examples):
                (img,) = ax.images
                np.testing.assert_array_equal(img.get_array(), x[examples[r], 0].numpy())
                assert img.get_cmap().name == "gray_r"
            else:
                assert len(ax.images) == 0
    plt.close(fig)


def test_image_grid_shows_rgb_images_in_colour_and_one_row_when_not_per_class():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 3, 4, 5, generator=g)
    y = torch.tensor([1, 0, 1, 0, 0, 1])
    fig = image_grid(x, y, ["a", "b"], n=10, per_class=False)
    assert len(fig.axes) == 2  # ceil(10 / 10) = 1 row
    for c, ax in enumerate(fig.axes):
        first = int(np.flatnonzero(y.numpy() == c)[0])
        (img,) = ax.images
        np.testing.assert_array_equal(img.get_array(), x[first].permute(1, 2, 0).numpy())
    plt.close(fig)


def test_figure_to_png_renders_the_figure_at_its_size_and_closes_it():
    fig = plt.figure(figsize=(2, 1), facecolor=(1.0, 0.0, 0.0))
    number = fig.number
    colour, size = png_pixel(figure_to_png(fig, dpi=50))
    assert colour == (255, 0, 0) and size == (100, 50)
    assert not plt.fignum_exists(number)
    kept = plt.figure(figsize=(1, 1.5), facecolor="blue")
    colour, size = png_pixel(figure_to_png(kept, close=False))
    assert colour == (0, 0, 255) and size == (80, 120)  # the default dpi is 80
    assert plt.fignum_exists(kept.number)
    plt.close(kept)


# ----------------------------------------------------------------------------- sliders


def test_slider_html_is_self_contained_and_shows_each_frame_in_order():
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    frames = [(name, plt.figure(figsize=(1, 1), facecolor=[v / 255 for v in rgb]))
              for name, rgb in colours.items()]
    html = slider_html(frames, label="p", start=1)
    assert "http://" not in html and "https://" not in html
    pngs = slider_images(html)
    assert [png_pixel(png)[0] for png in pngs] == list(colours.values())  # in slider order
    assert slider_captions(html) == list(colours)
    imgs = re.findall(r'<img class="cnnlab-slider-img" alt="([^"]*)"[^>]*display:(\w+)', html)
    assert imgs == [("p = red", "none"), ("p = green", "block"), ("p = blue", "none")]
    assert 'min="0" max="2" step="1" value="1"' in html
    assert '<b class="cnnlab-slider-caption">green</b>' in html
    assert plt.get_fignums() == []  # frames were closed


def test_slider_captions_with_quotes_are_valid_json():
    captions = ["it's", 'a "b"']
    html = slider_html([(c, plt.figure()) for c in captions])
    assert slider_captions(html) == captions


def test_slider_html_validates():
    with pytest.raises(ValueError, match="at least one frame"):
        slider_html([])
    with pytest.raises(ValueError, match="Invalid start frame: 5"):
        slider_html([("a", plt.figure())], start=5)
    plt.close("all")


def test_sweep_slider_has_a_frame_per_value():
    html = sweep_slider(fake_result())
    assert len(slider_images(html)) == 2 and slider_captions(html) == ["0.0", "0.5"]
    assert "dropout rate p = 0.5" in html


def test_sweep_slider_frames_draw_that_values_runs_and_mark_it_on_the_sweep(monkeypatch):
    captured = {}

    def keep_frames(frames, *, label, dpi, **kwargs):
        captured.update(frames=frames, label=label, dpi=dpi)
        return "<slider>"

    monkeypatch.setattr(plots, "slider_html", keep_frames)
    res = fake_result()
    assert sweep_slider(res, ylim=(0.5, 1.0)) == "<slider>"
    assert captured["label"] == "dropout rate p" and captured["dpi"] == 90
    assert [c for c, _ in captured["frames"]] == ["0.0", "0.5"]
    means = [s["test_acc"] for s in res.summary]
    for (caption, fig), value in zip(captured["frames"], res.values):
        left, right = fig.axes
        runs = [r for r in res.rows if r["dropout"] == value]
        for line, key, name in zip(left.lines, ("train_acc", "val_acc"),
                                   ("training accuracy", "validation accuracy")):
            assert line.get_label() == name
            expected = [statistics.mean(r["history"][key][e] for r in runs) for e in range(2)]
            assert list(line.get_ydata()) == pytest.approx(expected)
        title = f"dropout rate p = {caption}: learning curves (3 seeds"
        title += ", 1/3 collapsed)" if value == 0.5 else ")"
        assert left.get_title() == title
        assert errorbar_data(right)[:2] == ([0.0, 0.5], pytest.approx(means))
        assert dashed_x(right) == [value] and right.get_ylim() == (0.5, 1.0)
        assert right.get_title() == "test accuracy over the sweep"
        plt.close(fig)


def test_sweep_slider_writes_none_as_off_like_plot_sweep():
    res = fake_result()
    for row in res.rows + res.summary:
        row["dropout"] = None if row["dropout"] == 0.0 else row["dropout"]
    res.values[0] = None
    html = sweep_slider(res)
    assert "dropout rate p = off" in html and "= None" not in html


def test_axes_and_sliders_use_human_labels():
    from cnnlab.plots import label_of

    assert label_of("test_acc") == "test accuracy" and label_of("dropout") == "dropout rate p"
    assert label_of("some_field") == "some field"
    fig = plot_sweep(fake_result(), "test_acc")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "dropout rate p"
    assert ax.get_ylabel() == "test accuracy (mean, 95% CI); dots: runs"
    plt.close(fig)
    html = sweep_slider(fake_result())
    assert "dropout rate p: <input" in html and "test_acc" not in html


def test_slider_frames_fill_the_column_and_are_rendered_wide_enough():
    import base64
    import io

    from PIL import Image

    html = sweep_slider(fake_result())
    assert html.count("width:100%;height:auto") == 2 and "max-width" not in html
    first = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    width, _ = Image.open(io.BytesIO(base64.b64decode(first))).size
    assert width >= 860  # wider than the book's text column, so it is scaled down, never up


def test_shared_ylim_holds_every_interval_of_both_sweeps():
    from cnnlab.plots import shared_ylim

    a, b = fake_result(), fake_result()
    for s in b.summary:  # a second sweep, lower
        s.update({k: s[k] - 0.3 for k in ("test_acc", "test_acc_low", "test_acc_high")})
    a.rows[0] = {**a.rows[0], "test_acc": 0.99}  # one run above every interval
    low, high = shared_ylim(a, b)
    # b's second value has a collapsed run, hence no interval: its mean counts
    lowest = min(b.summary[0]["test_acc_low"], b.summary[1]["test_acc"])
    assert low == pytest.approx(lowest - 0.02)
    assert high == pytest.approx(0.99 + 0.02)
    assert shared_ylim(a.summary)[1] == pytest.approx(a.summary[0]["test_acc_high"] + 0.02)
    with pytest.raises(ValueError, match="No finite 'gap_x' values"):
        shared_ylim(a, metric="gap_x")
    html_a = sweep_slider(a, ylim=(low, high))
    assert html_a.count("class=\"cnnlab-slider-img\"") == 2
