"""scripts/notebooks.py: nbmake's executed chapters become the book build's jupyter-cache hits."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache
from myst_nb.core.read import read_myst_markdown_notebook

from .scripts import ROOT, load_script

notebooks = load_script("notebooks")

CHAPTER = "article_errors"


def fake_run(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``nb`` as an nbmake run leaves it: outputs, counts and nbclient's timing metadata."""
    run = nbformat.from_dict(nb)
    run.metadata["language_info"] = {"name": "python", "version": "3.11"}
    for i, cell in enumerate(c for c in run.cells if c.cell_type == "code"):
        cell.execution_count = i + 1
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"cell {i}\n")]
        cell.metadata["execution"] = {"iopub.status.busy": "2026-12-03T07:31:09Z"}
    return run


def test_stage_copies_the_chapters_and_their_data_and_never_the_book_itself(tmp_path):
    copies = notebooks.stage(tmp_path / "stage")
    assert {p.name for p in copies} == {p.name for p in (ROOT / "book").glob("*.ipynb")}
    assert (tmp_path / "stage" / "data" / "runtimes.json").is_file()
    (tmp_path / "stage" / "stale.ipynb").write_text("{}")
    notebooks.stage(tmp_path / "stage")  # a fresh folder each time
    assert not (tmp_path / "stage" / "stale.ipynb").exists()
    with pytest.raises(ValueError, match="Invalid staging folder"):
        notebooks.stage(ROOT / "book")
    with pytest.raises(ValueError, match="nbmake collects no notebook under a folder named _bu"):
        notebooks.stage(tmp_path / "_build" / "nbmake")


def test_junit_seconds_per_notebook(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text('<testsuites><testsuite><testcase classname=".cache/nbmake/a.ipynb" '
                      'name=".cache/nbmake/a.ipynb" time="12.5"/><testcase classname="b.ipynb" '
                      'name="b.ipynb" time="3"/></testsuite></testsuites>')
    assert notebooks.junit_seconds(report) == {"a": 12.5, "b": 3.0}
    assert notebooks.junit_seconds(tmp_path / "none.xml") == {}


def test_a_stored_chapter_is_what_the_book_build_finds_for_its_md(tmp_path):
    stage = tmp_path / "stage"
    stage.mkdir()
    source = nbformat.read(ROOT / "book" / f"{CHAPTER}.ipynb", as_version=4)
    nbformat.write(fake_run(source), stage / f"{CHAPTER}.ipynb")
    nbformat.write(source, stage / "not_run.ipynb")  # no outputs: nbmake stopped before it
    (stage / "junit.xml").write_text(f'<testsuites><testsuite><testcase name="{CHAPTER}.ipynb" '
                                     'time="13.4"/></testsuite></testsuites>')
    cache_path = tmp_path / "jc"
    assert notebooks.store(stage, cache_path=cache_path) == [CHAPTER]
    cache = get_cache(str(cache_path))
    md = read_myst_markdown_notebook((ROOT / "book" / f"{CHAPTER}.md").read_text())
    record = cache.match_cache_notebook(md)  # how myst-nb looks a page up (KeyError: no match)
    assert record.data == {"execution_seconds": 13.4}
    assert Path(record.uri) == ROOT / "book" / f"{CHAPTER}.md"
    _, merged = cache.merge_match_into_notebook(md)
    code = [c for c in merged.cells if c.cell_type == "code"]
    assert code[0].outputs[0]["text"] == "cell 0\n" and code[-1].execution_count == len(code)


def test_an_executed_copy_with_other_code_is_refused(tmp_path):
    source = nbformat.read(ROOT / "book" / f"{CHAPTER}.ipynb", as_version=4)
    run = fake_run(source)
    next(c for c in run.cells if c.cell_type == "code").source += "\nx = 1"
    with pytest.raises(ValueError, match="code differs from its source"):
        notebooks.with_source_cells(run, source)
    stage = tmp_path / "stage"
    stage.mkdir()
    nbformat.write(run, stage / f"{CHAPTER}.ipynb")
    with pytest.raises(ValueError, match="edited during the run"):
        notebooks.store(stage, cache_path=tmp_path / "jc")


def test_make_book_runs_only_the_chapters_with_no_run_in_its_jupyter_cache(tmp_path, monkeypatch):
    chapters = sorted(p.stem for p in (ROOT / "book").glob("*.ipynb"))
    cache_path = tmp_path / "jc"
    assert notebooks.not_cached(cache_path=cache_path) == chapters  # no cache yet: every one
    assert notebooks.not_cached(cache_path=cache_path, names=[CHAPTER, "dropout"]) == [
        CHAPTER, "dropout"]
    stage = tmp_path / "stage"
    stage.mkdir()
    nbformat.write(fake_run(nbformat.read(ROOT / "book" / f"{CHAPTER}.ipynb", as_version=4)),
                   stage / f"{CHAPTER}.ipynb")
    notebooks.store(stage, cache_path=cache_path)
    assert notebooks.not_cached(cache_path=cache_path) == [c for c in chapters if c != CHAPTER]
    copies = notebooks.stage(tmp_path / "again", names=["dropout"])
    assert [p.name for p in copies] == ["dropout.ipynb"]
    assert (tmp_path / "again" / "data" / "runtimes.json").is_file()
    # the command line (`make book`): --not-cached, within a toc
    monkeypatch.setattr(notebooks, "JUPYTER_CACHE", cache_path)
    toc = tmp_path / "toc.yml"
    toc.write_text(f"format: jb-book\nroot: book/intro\nchapters:\n- file: book/{CHAPTER}\n"
                   "- file: book/dropout\n- file: book/glossary\n")
    assert notebooks.main(["stage", str(tmp_path / "cli"), "--not-cached", "--toc", str(toc)]) == 0
    assert [p.name for p in (tmp_path / "cli").glob("*.ipynb")] == ["dropout.ipynb"]
    assert notebooks.main(["stage", str(tmp_path / "cli"), "--not-cached"]) == 0
    assert len(list((tmp_path / "cli").glob("*.ipynb"))) == len(chapters) - 1
