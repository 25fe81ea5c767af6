"""ipywidgets glue: controls -> experiments -> plots. No logic of its own.

:class:`PanelState` holds what a live panel has trained so far and turns a click into a call of
:func:`cnnlab.experiments.sweep`; it is plain Python, so it is unit-tested without a browser.
:func:`sweep_panel` only wires a slider, a seed count and a "Train" button to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure

from cnnlab.config import Row, RunConfig, Runner
from cnnlab.experiments import SweepResult, run, sweep
from cnnlab.plots import plot_sweep, value_label
from cnnlab.stats import ci_text, summarize

__all__ = ["PanelState", "describe", "sweep_panel"]


def describe(summary: Row, param: str, metric: str = "test_acc") -> str:
    """One sentence for one summary row, e.g. ``dropout = 0.5: test_acc 91.2% (95% CI
    90.1%-92.3%) over 3 seeds.``; the interval as :func:`cnnlab.stats.ci_text` writes it, so
    one seed says ``(1 seed: no interval)`` and collapsed runs are counted instead."""
    n = summary["n"]
    text = (f"{param} = {value_label(summary[param])}: {metric} "
            f"{ci_text(summary, metric, label='95% CI ', sep='-', unit_each=True)} "
            f"over {n} seed{'s' if n != 1 else ''}")
    if summary.get("n_diverged"):
        text += f"; {summary['n_diverged']} of {n} runs diverged"
    return text + "."


@dataclass
class PanelState:
    """What one live panel has trained: rows per value of ``param``, reused across clicks."""

    base: RunConfig  # the configuration every run starts from
    param: str  # the field the slider sets
    metric: str = "test_acc"  # what the figure and the message report
    runner: Runner = run  # how one (config, seed) is trained
    cache: str | os.PathLike | None = None  # cache folder (None: the default)
    logx: bool = False  # logarithmic x axis in the figure
    rows: list[Row] = field(default_factory=list)

    def train(self, value: Any, n_seeds: int) -> str:
        """Train (or fetch from the cache) ``n_seeds`` runs at ``value``; return a message.

        Bad input is reported in the message (it names the value), never raised, so a widget
        callback cannot crash; diverged runs are counted in the message.
        """
        if not isinstance(n_seeds, int) or n_seeds < 1:
            return f"Invalid number of seeds: {n_seeds!r} (must be a positive int)."
        try:
            replace(self.base, **{self.param: value}).validate()
            result: SweepResult = sweep(self.base, self.param, [value], n_seeds,
                                        runner=self.runner, cache=self.cache, progress=False)
        except ValueError as exc:
            return f"Not trained: {exc}"
        self.rows = [r for r in self.rows if r[self.param] != value] + result.rows
        return describe(result.summary[0], self.param, self.metric)

    def summary(self) -> list[Row]:
        """Mean and CI per value trained so far, ordered by value where values are numbers."""
        rows = summarize(self.rows, self.param, (self.metric,))
        try:
            return sorted(rows, key=lambda s: (s[self.param] is None, s[self.param] or 0))
        except TypeError:
            return rows

    def figure(self) -> Figure:
        """Everything trained so far, as one sweep plot."""
        fig = plot_sweep(self.summary(), self.metric, param=self.param, logx=self.logx)
        fig.axes[0].set_title(f"{self.metric} per {self.param} (all values trained so far)",
                              fontsize=9)
        return fig


def sweep_panel(
    base: RunConfig,
    param: str,
    options: Sequence[Any],
    *,
    metric: str = "test_acc",
    seeds: int = 3,
    max_seeds: int = 5,
    logx: bool = False,
    runner: Runner = run,
    value: Any = None,
) -> w.VBox:
    """A live panel: a slider over ``options`` for ``param``, a seed count, a Train button and
    the figure of every value trained so far. Needs a running kernel (local or Colab)."""
    state = PanelState(base=base, param=param, metric=metric, runner=runner, logx=logx)
    slider = w.SelectionSlider(options=list(options), value=value if value is not None
                               else options[len(options) // 2], description=param,
                               continuous_update=False)
    n_seeds = w.IntSlider(value=seeds, min=1, max=max_seeds, description="seeds")
    button = w.Button(description="Train", button_style="primary", icon="play")
    message = w.HTML()
    out = w.Output()

    def on_click(_: w.Button) -> None:
        button.disabled = True
        message.value = f"training {param} = {slider.value} over {n_seeds.value} seeds..."
        try:
            message.value = state.train(slider.value, n_seeds.value)
            with out:
                out.clear_output(wait=True)
                if state.rows:
                    fig = state.figure()
                    display(fig)
                    plt.close(fig)
        finally:
            button.disabled = False

    button.on_click(on_click)
    return w.VBox([w.HBox([slider, n_seeds, button]), message, out])
