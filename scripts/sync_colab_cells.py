#!/usr/bin/env python3
"""Rewrite the first cell of every chapter notebook from the repository URL in ``_config.yml``.

The repository URL lives in one place, ``_config.yml`` (``repository.url``): the site's Colab
launch buttons are built from it by sphinx-book-theme, and each notebook's first cell installs
``cnnlab`` from it when the notebook runs in Colab. This script writes that cell::

    python scripts/sync_colab_cells.py            # rewrite book/*.ipynb where the cell differs
    python scripts/sync_colab_cells.py --check    # only report (exit 1 if any notebook differs)

An existing Colab cell (a code cell that mentions ``google.colab``) is rewritten, keeping its id,
and moved to the front if it is not there; a notebook without one gets one inserted first. The
cell is tagged ``remove-cell`` so the site hides it, and has no outputs. ``tests/test_book.py``
checks that every notebook agrees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_config.yml"
BOOK = ROOT / "book"
TAG = "remove-cell"

TEMPLATE = """\
# Colab: install cnnlab (torch and ipywidgets are already there and are not reinstalled).
import sys
if "google.colab" in sys.modules:
    %pip install -q "cnnlab @ git+{url}\""""


def repository_url(config: Path = CONFIG) -> str:
    """``repository.url`` from ``_config.yml``, without a trailing slash or ``.git``."""
    data = yaml.safe_load(config.read_text(encoding="utf8")) or {}
    url = str((data.get("repository") or {}).get("url") or "").strip()
    if not url.startswith("https://"):
        raise ValueError(f"Invalid repository.url in {config.name}: {url!r} (must be https://...)")
    url = url.rstrip("/")
    return url[: -len(".git")] if url.endswith(".git") else url


def colab_source(url: str) -> str:
    """The exact source of the first cell for repository ``url``."""
    return TEMPLATE.format(url=url)


def is_colab_cell(cell: dict) -> bool:
    return cell.get("cell_type") == "code" and "google.colab" in "".join(cell.get("source", ""))


def problems(nb: dict, url: str) -> list[str]:
    """How the notebook's first cell differs from the Colab cell (empty when it agrees)."""
    cells = nb.get("cells", [])
    if not cells or not is_colab_cell(cells[0]):
        at = [i for i, c in enumerate(cells) if is_colab_cell(c)]
        where = f" (it is cell {at[0] + 1})" if at else ""
        return [f"the first cell is not the Colab install cell{where}"]
    cell, out = cells[0], []
    if "".join(cell["source"]) != colab_source(url):
        out.append(f"the Colab cell does not install from {url} exactly as "
                   "scripts/sync_colab_cells.py writes it")
    if TAG not in cell.get("metadata", {}).get("tags", []):
        out.append(f"the Colab cell is not tagged {TAG!r}")
    if cell.get("outputs") or cell.get("execution_count") is not None:
        out.append("the Colab cell has outputs")
    return out


def sync(nb: nbformat.NotebookNode, url: str) -> bool:
    """Make the notebook's first cell the Colab cell; return whether anything changed."""
    if not problems(nb, url):
        return False
    at = [i for i, c in enumerate(nb.cells) if is_colab_cell(c)]
    if at:  # the Colab cell exists: move it to the front and rewrite it
        cell = nb.cells.pop(at[0])
        cell.source, cell.outputs, cell.execution_count = colab_source(url), [], None
    else:
        cell = nbformat.v4.new_code_cell(colab_source(url))
    nb.cells.insert(0, cell)
    tags = cell.metadata.setdefault("tags", [])
    if TAG not in tags:
        tags.append(TAG)
    return True


def notebooks() -> list[Path]:
    """The chapter notebooks: ``book/**/*.ipynb`` outside hidden and ``_``-prefixed folders
    (authors' generator sources, checkpoints)."""
    return sorted(p for p in BOOK.rglob("*.ipynb")
                  if not any(part.startswith(("_", ".")) for part in p.relative_to(BOOK).parts))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report only; exit 1 on a mismatch")
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: book/**/*.ipynb)")
    args = parser.parse_args(argv)
    url = repository_url()
    bad = 0
    for path in args.paths or notebooks():
        nb = nbformat.read(path, as_version=4)
        found = problems(nb, url)
        if not found:
            continue
        if args.check:
            bad += 1
            print(f"{path}: {'; '.join(found)}", file=sys.stderr)
        elif sync(nb, url):
            nbformat.write(nb, path)
            print(f"rewrote the Colab cell of {path}")
    if args.check and not bad:
        print(f"every notebook's first cell installs cnnlab from {url} in Colab")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
