"""A tiny notebook builder shared by this folder's make_*.py scripts (cells in order, no outputs)."""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

COLAB = '''\
# Colab: install cnnlab (torch and ipywidgets are already there and are not reinstalled).
import sys
if "google.colab" in sys.modules:
    %pip install -q "cnnlab @ git+https://github.com/cnnlab/cnnlab"'''

SETUP = '''\
import matplotlib.pyplot as plt
from IPython.display import HTML, display
from myst_nb import glue
from cnnlab.data import choose_dataset, load_dataset, small_val_size
from cnnlab.experiments import RunConfig, load_for, start_workers, sweep
from cnnlab.perf import hardware_summary
from cnnlab.plots import plot_sweep, sweep_slider
from cnnlab.widgets import sweep_panel, describe
DATASET, NOTE = choose_dataset("fashion_mnist")   # falls back to "digits" with a note
print(NOTE or f"Dataset: {DATASET}"); print("Hardware:", hardware_summary())'''

# Chapters that sweep start their worker processes in the setup cell: the workers import PyTorch
# and read the dataset (~4 s) while the next cells run, so the first sweep trains at once. Not in
# chapters that never sweep, or that time something before their first sweep.
START_WORKERS = '''
start_workers(DATASET);   # sweeps train in worker processes: start them now, in the background'''


class Notebook:
    """Collects markdown and code cells, then writes a v4 notebook without outputs."""

    def __init__(self) -> None:
        self.cells: list = []

    def md(self, text: str) -> None:
        self.cells.append(nbf.v4.new_markdown_cell(text.strip("\n")))

    def code(self, text: str, tags: list[str] | None = None) -> None:
        cell = nbf.v4.new_code_cell(text.strip("\n"))
        if tags:
            cell.metadata["tags"] = tags
        self.cells.append(cell)

    def write(self, path: Path) -> None:
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        # Markdown that cells display (tables with {doc} links) is parsed as MyST, not CommonMark.
        nb.metadata["mystnb"] = {"render_markdown_format": "myst"}
        nb.cells = self.cells
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{path.stem.replace('_', '-')}-{i:02d}"  # stable ids: clean diffs
        nbf.validate(nb)
        nbf.write(nb, path)
        print(f"wrote {path} ({len(nb.cells)} cells)")
