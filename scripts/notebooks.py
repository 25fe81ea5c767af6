#!/usr/bin/env python3
"""Run every chapter once for both nbmake and the book: `make notebooks` runs nbmake on copies of
the chapters, then hands the executed copies to the book build's jupyter-cache.

    python scripts/notebooks.py stage .cache/nbmake   # copies book/*.ipynb and book/data there
    pytest --nbmake --overwrite --junitxml=.cache/nbmake/junit.xml .cache/nbmake
    python scripts/notebooks.py store .cache/nbmake   # executed copies -> _build/.jupyter_cache

nbmake runs each chapter's ``.ipynb`` top to bottom; the book build reads the paired ``.md`` and
looks its outputs up in jupyter-cache by a hash of its code cells (their sources and metadata, and
the kernel), executing a chapter only when there is no match. ``store`` gives each executed copy
the code cells of ``book/<chapter>.ipynb`` (so timing metadata that the execution added does not
change the hash) and caches it under ``book/<chapter>.md`` with its execution time from nbmake's
JUnit report. `make book` after `make notebooks` (as in `make test`) then executes no chapter a
second time: the same code, run once. A chapter whose ``.md`` and ``.ipynb`` are out of step has
another hash, so the book build executes it itself (and `make unit` fails on the pair).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
JUPYTER_CACHE = ROOT / "_build" / ".jupyter_cache"  # jupyter-book's default (execute: cache)


def stage(folder: Path, book: Path = BOOK, names: list[str] | None = None) -> list[Path]:
    """A fresh ``folder`` with a copy of each chapter notebook (of those in ``names``, when
    given) and of ``book/data`` (the stored results a chapter reads beside itself). Returns the
    copies."""
    if folder.resolve() in (book.resolve(), ROOT):
        raise ValueError(f"Invalid staging folder: {folder} (it would replace the sources)")
    if "_build" in folder.resolve().parts:
        raise ValueError(f"Invalid staging folder: {folder} (nbmake collects no notebook under a "
                         "folder named _build)")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copies = [Path(shutil.copy2(book / f"{name}.ipynb", folder)) for name in chapters(book, names)]
    if (book / "data").is_dir():
        shutil.copytree(book / "data", folder / "data")
    return copies


def chapters(book: Path = BOOK, names: list[str] | None = None) -> list[str]:
    """The chapter notebooks' names in ``book`` (those in ``names``, when given), sorted."""
    return [nb.stem for nb in sorted(book.glob("*.ipynb")) if names is None or nb.stem in names]


def not_cached(book: Path = BOOK, cache_path: Path = JUPYTER_CACHE,
               names: list[str] | None = None) -> list[str]:
    """The chapters (of ``names``, when given) whose ``.md`` the book build would have to execute:
    jupyter-cache has no run of their code, looked up the way myst-nb looks a page up."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import read_myst_markdown_notebook

    if not (cache_path / "global.db").exists():
        return chapters(book, names)
    cache = get_cache(str(cache_path))

    def cached(name: str) -> bool:
        try:
            cache.match_cache_notebook(read_myst_markdown_notebook(
                (book / f"{name}.md").read_text(encoding="utf8")))
        except KeyError:
            return False
        return True

    return [name for name in chapters(book, names) if not cached(name)]


def junit_seconds(report: Path) -> dict[str, float]:
    """Notebook name -> seconds, from the JUnit XML report of an nbmake run (empty if absent)."""
    if not report.is_file():
        return {}
    out: dict[str, float] = {}
    for case in ET.parse(report).iter("testcase"):
        name = Path(case.get("file") or case.get("name") or "").stem
        if name:
            out[name] = out.get(name, 0.0) + float(case.get("time", 0.0))
    return out


def with_source_cells(executed: nbformat.NotebookNode,
                      source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``source`` (the committed notebook) with the outputs and execution counts of
    ``executed`` (the same notebook after a run), and the executed notebook's metadata."""
    src_code = [c for c in source.cells if c.cell_type == "code"]
    run_code = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in src_code] != [c.source for c in run_code]:
        raise ValueError("the executed notebook's code differs from its source")
    merged = nbformat.from_dict(source)
    merged.metadata = nbformat.from_dict({**executed.metadata, **source.metadata,
                                          "language_info": executed.metadata.get("language_info",
                                                                                 {})})
    code = iter(run_code)
    for cell in merged.cells:
        if cell.cell_type == "code":
            run = next(code)
            cell.outputs, cell.execution_count = run.outputs, run.execution_count
    return merged


def store(folder: Path, book: Path = BOOK, cache_path: Path = JUPYTER_CACHE) -> list[str]:
    """Cache each executed notebook of ``folder`` (one with outputs) as its chapter's ``.md`` in
    jupyter-cache. Returns the names stored."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    seconds = junit_seconds(folder / "junit.xml")
    cache = get_cache(str(cache_path))
    stored = []
    for path in sorted(folder.glob("*.ipynb")):
        executed = nbformat.read(path, as_version=4)
        if not any(c.get("outputs") for c in executed.cells if c.cell_type == "code"):
            continue  # not executed (nbmake stopped before it)
        try:
            nb = with_source_cells(executed, nbformat.read(book / path.name, as_version=4))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}; was book/{path.name} edited during the run?") from exc
        data = {"execution_seconds": seconds[path.stem]} if path.stem in seconds else {}
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(book / f"{path.stem}.md"), data=data),
                                    check_validity=False, overwrite=True)
        stored.append(path.stem)
    return stored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("stage", "store"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--not-cached", action="store_true",
                        help="stage: only the chapters the book build would have to execute "
                             "(no run of their code in its jupyter-cache)")
    parser.add_argument("--toc", type=Path, help="stage: only the chapters of this toc")
    args = parser.parse_args(argv)
    if args.action == "stage":
        names = None
        if args.toc:
            sys.path.insert(0, str(ROOT / "scripts"))
            from check_site import chapters as toc_chapters

            names = [Path(doc).name for doc in toc_chapters(args.toc)]
        if args.not_cached:
            names = not_cached(BOOK, JUPYTER_CACHE, names)
        copies = stage(args.folder, names=names)
        print(f"staged {len(copies)} chapters in {args.folder}"
              + (" (those with no run in the book's jupyter-cache)" if args.not_cached else ""))
    else:
        names = store(args.folder)
        print(f"stored {len(names)} executed chapters in {JUPYTER_CACHE.relative_to(ROOT)} "
              f"for the book build: {', '.join(names) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
