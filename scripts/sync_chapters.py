#!/usr/bin/env python3
"""Keep every chapter's two files in step, and the cells all chapters share identical.

A chapter is ``book/<chapter>.md``, a MyST Markdown notebook (what the book is built from and what
contributors edit), paired by jupytext with ``book/<chapter>.ipynb`` (what Jupyter, Colab and nbmake
open; committed without outputs). Either side may be edited; then::

    make sync                              # = python scripts/sync_chapters.py
    python scripts/sync_chapters.py --check  # report only: exit 1 when anything is out of step
    python scripts/sync_chapters.py --url    # the repository URL configured in _config.yml

For each chapter the side edited last is the source (when the two differ), and the other is
rewritten from it (the ``.ipynb`` keeps its cell ids). Then the shared cells are written:

* the first cell, the Colab install cell: installs ``cnnlab`` from the repository in
  ``_config.yml`` (``repository.url``, the one place the URL is written) when the notebook runs in
  Colab, and names the address of the book's stored data (``DATA_URL``) for a notebook that runs
  without its folder; tagged ``remove-cell`` (the site does not show it);
* the setup cell, in every chapter that has one (a code cell whose first line is
  :data:`SETUP_MARK`): the imports and dataset choice every chapter starts with;
* the run-time cell (first line :data:`RUNTIME_MARK`, tagged ``remove-cell``): glues the
  chapter's measured run time (``book/data/runtimes.json``) for its opening box. A chapter without
  one gets it after its setup cell (or after its first code cell).

``tests/test_book.py`` fails when a pair is out of step or a shared cell differs, naming this
command.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml
from jupytext.combine import combine_inputs_with_outputs

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
BOOK = ROOT / "book"
FORMATS = "ipynb,md:myst"
TAG = "remove-cell"
COMMAND = "make sync"

COLAB_TEMPLATE = """\
# Colab: install cnnlab (torch and ipywidgets are already there and are not reinstalled).
import sys
if "google.colab" in sys.modules:
    %pip install -q "cnnlab @ git+{url}"
DATA_URL = "{data_url}"  # stored results, if not beside the notebook"""

SETUP_MARK = "# Setup: the same in every chapter (make sync writes this cell)."
SETUP = SETUP_MARK + """
import matplotlib.pyplot as plt
from IPython.display import HTML, display
from cnnlab.data import choose_dataset, load_dataset
from cnnlab.config import RunConfig
from cnnlab.experiments import load_for, start_workers, sweep
from cnnlab.glue import glue, glue_values
from cnnlab.perf import hardware_summary
from cnnlab.plots import plot_sweep, sweep_slider
from cnnlab.widgets import sweep_panel, describe
DATASET, WHY = choose_dataset("fashion_mnist")   # digits where Fashion-MNIST cannot be had
print(f"Dataset: {DATASET}" if not WHY else f"Note: this page runs on {DATASET!r}, so its "
      f"numbers differ from the published ones. {WHY}")
print("Hardware:", hardware_summary())
# Validation images the small-data runs hold out: 500 (scored after every epoch of every run,
# so their number is paid for many times); digits keeps its default 10% (143 images).
VAL_SIZE = None if DATASET == "digits" else 500"""


RUNTIME_MARK = "# Run time, for the opening box (make sync writes this cell)."
RUNTIME = RUNTIME_MARK + """
from cnnlab.runtimes import runtime_text
from cnnlab.stored import load_stored
runtimes = load_stored("runtimes.json", url=DATA_URL)  # measured by scripts/measure_runtimes.py
glue("runtime", runtime_text(runtimes, "{name}"), display=False)"""


def runtime_source(name: str) -> str:
    """The run-time cell of chapter ``name`` (its file stem): glues ``runtime`` for the box."""
    return RUNTIME.format(name=name)


# ----------------------------------------------------------------------------- configuration
def repository() -> dict:
    """``_config.yml``'s ``repository`` block, its URL checked and normalized."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf8")) or {}
    repo = dict(data.get("repository") or {})
    url = str(repo.get("url") or "").strip().rstrip("/")
    if not url.startswith("https://github.com/"):
        raise ValueError(f"Invalid repository.url in {CONFIG.name}: {url!r} "
                         "(must be https://github.com/OWNER/NAME)")
    repo["url"] = url[: -len(".git")] if url.endswith(".git") else url
    return repo


def repository_url() -> str:
    return repository()["url"]


def data_url(repo: dict | None = None) -> str:
    """Where GitHub serves ``book/data/`` of the configured branch as raw files."""
    repo = repo or repository()
    owner_name = repo["url"].removeprefix("https://github.com/")
    base = str(repo.get("path_to_book") or "").strip("/")
    folder = "/".join(p for p in (base, "book", "data") if p)
    return f"https://raw.githubusercontent.com/{owner_name}/{repo.get('branch') or 'main'}/{folder}"


def colab_source(repo: dict | None = None) -> str:
    repo = repo or repository()
    return COLAB_TEMPLATE.format(url=repo["url"], data_url=data_url(repo))


# ----------------------------------------------------------------------------- the chapters
def is_chapter(md: Path) -> bool:
    """A MyST Markdown notebook (jupytext header with a kernel), not a plain Markdown page."""
    head = md.read_text(encoding="utf8")[:2000]
    return head.startswith("---") and "jupytext:" in head and "kernelspec:" in head


def chapters() -> list[Path]:
    """Every chapter's ``.md`` in ``book/`` (its pair is the ``.ipynb`` beside it)."""
    return sorted(p for p in BOOK.glob("*.md") if is_chapter(p))


def _code(cell: dict) -> str:
    return "".join(cell.get("source", "")) if cell.get("cell_type") == "code" else ""


def shared_problems(nb: dict, repo: dict | None = None, name: str | None = None) -> list[str]:
    """How the shared cells of ``nb`` differ from what this script writes (empty: they agree);
    with the chapter's ``name``, its run-time cell is checked too."""
    cells, out = nb.get("cells", []), []
    if not cells or "google.colab" not in _code(cells[0]):
        out.append("the first cell is not the Colab install cell")
    else:
        if _code(cells[0]) != colab_source(repo):
            out.append("the Colab install cell differs from the one written from _config.yml")
        if TAG not in cells[0].get("metadata", {}).get("tags", []):
            out.append(f"the Colab install cell is not tagged {TAG!r}")
    for i, cell in enumerate(cells):
        if _code(cell).startswith(SETUP_MARK) and _code(cell) != SETUP:
            out.append(f"the setup cell (cell {i + 1}) differs from the shared one")
    if name is not None:
        at = [i for i, c in enumerate(cells) if _code(c).startswith(RUNTIME_MARK)]
        if len(at) != 1:
            out.append(f"{len(at)} run-time cells (expected 1)")
        elif (_code(cells[at[0]]) != runtime_source(name)
              or TAG not in cells[at[0]].get("metadata", {}).get("tags", [])):
            out.append(f"the run-time cell (cell {at[0] + 1}) differs from the shared one")
    return out


def apply_shared(nb: nbformat.NotebookNode, repo: dict | None = None,
                 name: str | None = None) -> bool:
    """Write the shared cells into ``nb`` (the run-time cell too, given the chapter's ``name``);
    return whether anything changed."""
    if not shared_problems(nb, repo, name):
        return False
    source = colab_source(repo)
    if nb.cells and "google.colab" in _code(nb.cells[0]):
        nb.cells[0].source = source
    else:
        nb.cells.insert(0, nbformat.v4.new_code_cell(source))
    nb.cells[0].outputs, nb.cells[0].execution_count = [], None
    tags = nb.cells[0].metadata.setdefault("tags", [])
    if TAG not in tags:
        tags.append(TAG)
    for cell in nb.cells:
        if _code(cell).startswith(SETUP_MARK):
            cell.source = SETUP
    if name is not None:
        _apply_runtime(nb, name)
    return True


def _apply_runtime(nb: nbformat.NotebookNode, name: str) -> None:
    """Make the one run-time cell of ``nb`` the shared one (inserted where it is missing)."""
    at = [i for i, c in enumerate(nb.cells) if _code(c).startswith(RUNTIME_MARK)]
    for i in reversed(at[1:]):  # extra copies
        del nb.cells[i]
    if at:
        cell = nb.cells[at[0]]
    else:
        code = [i for i, c in enumerate(nb.cells) if i > 0 and c.cell_type == "code"]
        setup = [i for i in code if _code(nb.cells[i]).startswith(SETUP_MARK)]
        where = (setup or code or [0])[0] + 1
        cell = nbformat.v4.new_code_cell()
        nb.cells.insert(where, cell)
    cell.source, cell.outputs, cell.execution_count = runtime_source(name), [], None
    tags = cell.metadata.setdefault("tags", [])
    if TAG not in tags:
        tags.append(TAG)


def _inputs(nb: dict) -> list[tuple]:
    """What a pair must agree on: each cell's kind, text and tags (not ids, not outputs)."""
    return [(c["cell_type"], "".join(c.get("source", "")).strip("\n"),
             tuple(c.get("metadata", {}).get("tags", []))) for c in nb["cells"]]


def pair_problems(md: Path) -> list[str]:
    """How ``md`` and its ``.ipynb`` differ (empty when they are in step)."""
    ipynb = md.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{ipynb.name} does not exist"]
    text, paired = jupytext.read(md), jupytext.read(ipynb)
    out = []
    if text.metadata.get("jupytext", {}).get("formats") != FORMATS:
        out.append(f"{md.name} is not paired as {FORMATS!r} in its jupytext header")
    a, b = _inputs(text), _inputs(paired)
    if a != b:
        at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        out.append(f"{md.name} and {ipynb.name} differ from cell {at + 1} on "
                   f"({len(a)} and {len(b)} cells)")
    return out


def problems(md: Path, repo: dict | None = None) -> list[str]:
    """Everything out of step for the chapter ``md``."""
    found = pair_problems(md)
    found += [f"{md.name}: {p}" for p in shared_problems(jupytext.read(md), repo, md.stem)]
    ipynb = md.with_suffix(".ipynb")
    if ipynb.exists():
        nb = nbformat.read(ipynb, as_version=4)
        dirty = [i + 1 for i, c in enumerate(nb.cells) if c.cell_type == "code"
                 and (c.get("outputs") or c.get("execution_count") is not None)]
        if dirty:
            found.append(f"{ipynb.name}: cells {dirty} have outputs")
    return found


def sync(md: Path, repo: dict | None = None) -> list[str]:
    """Bring the chapter ``md`` and its ``.ipynb`` in step; return what was rewritten."""
    ipynb = md.with_suffix(".ipynb")
    source = md
    if ipynb.exists() and pair_problems(md) and ipynb.stat().st_mtime > md.stat().st_mtime:
        source = ipynb  # edited in Jupyter since the .md was last written
    nb = jupytext.read(source)
    nb.metadata.setdefault("jupytext", {})["formats"] = FORMATS
    apply_shared(nb, repo, md.stem)
    for cell in nb.cells:  # committed without outputs
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    done = []
    md_text = jupytext.writes(nb, fmt="md:myst")
    if md.read_text(encoding="utf8") != md_text:
        md.write_text(md_text, encoding="utf8")
        done.append(md.name)
    if ipynb.exists():
        merged = combine_inputs_with_outputs(copy.deepcopy(nb), jupytext.read(ipynb))
    else:
        merged = copy.deepcopy(nb)
    for cell in merged.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    merged.metadata.pop("widgets", None)
    ipynb_text = jupytext.writes(merged, fmt="ipynb")
    if not ipynb.exists() or ipynb.read_text(encoding="utf8") != ipynb_text:
        ipynb.write_text(ipynb_text, encoding="utf8")
        done.append(ipynb.name)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only; exit 1 if out of step")
    parser.add_argument("--url", action="store_true",
                        help="print the repository URL configured in _config.yml and exit")
    parser.add_argument("chapters", nargs="*", type=Path,
                        help="chapters' .md or .ipynb files (default: every chapter in book/)")
    args = parser.parse_args(argv)
    repo = repository()
    if args.url:
        print(repo["url"])
        return 0
    paths = [p.with_suffix(".md") for p in args.chapters] or chapters()
    bad = 0
    for md in paths:
        if args.check:
            found = problems(md, repo)
            bad += bool(found)
            for problem in found:
                print(f"{md}: {problem}", file=sys.stderr)
        else:
            for name in sync(md, repo):
                print(f"rewrote book/{name}")
    if args.check:
        if bad:
            print(f"{bad} chapter(s) out of step: run `{COMMAND}`", file=sys.stderr)
        else:
            print(f"{len(paths)} chapters in step; their Colab cells install from "
                  f"{repo['url']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
