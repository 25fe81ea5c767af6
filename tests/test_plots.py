import re

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.figure import Figure

from cnnlab.experiments import SweepResult, summarize
from cnnlab.plots import (
    figure_to_png,
    image_grid,
    plot_histories,
    plot_sweep,
    plot_weight_hist,
    slider_html,
    sweep_slider,
)


def fake_result():
    rows = []
    for p in (0.0, 0.5):
        for seed in range(3):
            acc = 0.9 - p / 5 + seed / 100
            rows.append({"dropout": p, "seed": seed, "test_acc": acc, "train_acc": acc + 0.05,
                         "gap": 0.05, "diverged": p == 0.5 and seed == 0,
                         "history": {"train_acc": [0.5, acc + 0.05], "val_acc": [0.5, acc]}})
    return SweepResult("dropout", [0.0, 0.5], rows, summarize(rows, "dropout"))


def test_plot_sweep_draws_means_and_marks_divergence():
    res = fake_result()
    fig = plot_sweep(res, "test_acc", logx=False)
    ax = fig.axes[0]
    line = ax.lines[0]
    assert list(line.get_ydata()) == pytest.approx(res.column("test_acc"))
    assert any("1/3 diverged" in t.get_text() for t in ax.texts)
    plt.close(fig)


def test_plot_sweep_needs_param_for_plain_rows():
    with pytest.raises(ValueError, match="param"):
        plot_sweep(fake_result().summary)


def test_other_figures():
    res = fake_result()
    figs = [
        plot_histories({"a": res.rows[0]["history"], "b": [r["history"] for r in res.rows]}),
        plot_weight_hist({"w": torch.randn(100), "v": [torch.randn(3, 3), torch.randn(5)]}),
        image_grid(torch.randn(30, 1, 8, 8), torch.arange(30) % 10, [str(i) for i in range(10)],
                   n=2),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[0].axes[0].lines) == 2
    for f in figs:
        assert figure_to_png(f)[:4] == b"\x89PNG"


def test_slider_html_is_self_contained():
    frames = [(str(i), plt.figure()) for i in range(3)]
    html = slider_html(frames, label="p", start=1)
    assert html.count('class="cnnlab-slider-img"') == 3
    assert 'max="2"' in html and 'value="1"' in html
    assert "http://" not in html and "https://" not in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 3
    assert plt.get_fignums() == []  # frames were closed


def test_slider_html_validates():
    with pytest.raises(ValueError, match="at least one frame"):
        slider_html([])
    with pytest.raises(ValueError, match="Invalid start frame: 5"):
        slider_html([("a", plt.figure())], start=5)
    plt.close("all")


def test_sweep_slider_has_a_frame_per_value():
    html = sweep_slider(fake_result())
    assert html.count('class="cnnlab-slider-img"') == 2
    assert "dropout rate p = 0.5" in html


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
    assert ax.get_ylabel() == "test accuracy (mean, 95% CI)"
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
    low, high = shared_ylim(a, b)
    assert low == pytest.approx(min(s["test_acc_low"] for s in b.summary) - 0.02)
    assert high == pytest.approx(max(s["test_acc_high"] for s in a.summary) + 0.02)
    with pytest.raises(ValueError, match="No finite 'gap_x' values"):
        shared_ylim(a, metric="gap_x")
    html_a = sweep_slider(a, ylim=(low, high))
    assert html_a.count("class=\"cnnlab-slider-img\"") == 2
