"""Fast static checks of the book's sources (no build): the table of contents, the notebooks as
committed, the build configuration, the vendored assets, and the site-check scripts themselves.

The checks of the *built* site are in tests/browser/ (``make browser``, after ``make book``).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))
TOC = ROOT / "_toc.yml"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_book_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


sync = _script("sync_colab_cells")
check_site = _script("check_site")
vendor = _script("vendor_assets")

NOTEBOOKS = sync.notebooks()


def _toc_files() -> list[str]:
    data = yaml.safe_load(TOC.read_text(encoding="utf8"))
    return [data["root"], *check_site.chapters(TOC)]


def _source(doc: str) -> Path | None:
    for suffix in ("", ".ipynb", ".md"):
        path = ROOT / f"{doc}{suffix}"
        if path.is_file():
            return path
    return None


# ----------------------------------------------------------------------------- table of contents
def test_every_toc_entry_exists() -> None:
    missing = [doc for doc in _toc_files() if _source(doc) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_chapter_notebook_is_in_the_toc() -> None:
    listed = {str(Path(d).with_suffix("")) for d in _toc_files()}
    stray = [str(p.relative_to(ROOT)) for p in NOTEBOOKS
             if str(p.relative_to(ROOT).with_suffix("")) not in listed]
    assert not stray, f"notebooks not in _toc.yml (the build would skip them): {stray}"


# ----------------------------------------------------------------------------- notebooks
def _nb_ids() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_ids())
def test_first_cell_is_the_colab_cell_from_config(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    problems = sync.problems(nb, sync.repository_url())
    assert not problems, (f"{path.name}: {'; '.join(problems)} "
                          "(fix: python scripts/sync_colab_cells.py)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_ids())
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} have outputs (fix: jupyter nbconvert "
                       f"--clear-output --inplace {path.relative_to(ROOT)})")
    assert "widgets" not in nb.metadata, (
        f"{path.name}: saved widget state in the notebook metadata (an output in disguise; "
        "nbconvert --clear-output keeps it: delete metadata['widgets'])")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_ids())
def test_notebook_does_not_allow_errors(path: Path) -> None:
    """A cell error must fail the build: no per-notebook or per-cell opt-out."""
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", path.name
    meta = json.dumps(nb.metadata.get("mystnb", {})) + json.dumps(nb.metadata.get("execution", {}))
    assert "allow_errors" not in meta, f"{path.name}: allow_errors in the notebook metadata"
    tagged = [i for i, c in enumerate(nb.cells)
              if "raises-exception" in c.get("metadata", {}).get("tags", [])]
    assert not tagged, f"{path.name}: cells {tagged} are tagged raises-exception"


# ----------------------------------------------------------------------------- configuration
def test_build_executes_every_chapter_and_fails_on_errors() -> None:
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "cache"  # jupyter-cache: fast no-change rebuilds
    assert execute["allow_errors"] is False
    assert execute["raise_on_error"] is True
    assert not execute.get("exclude_patterns"), "every chapter is executed"
    recipe = re.search(r"^book:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S)
    assert recipe and "--warningiserror" in recipe.group(0), "make book must build with -W"


def test_repository_url_is_configured_once() -> None:
    url = sync.repository_url()
    assert url.startswith("https://github.com/"), "Colab launch buttons need a GitHub URL"
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    # Nothing else of ours spells the URL out: it is read from _config.yml.
    ours = [*(ROOT / "scripts").rglob("*.py"), *(ROOT / "tests" / "browser").rglob("*.py"),
            Path(__file__), *(ROOT / "_static").glob("*.js")]
    hard = [str(p.relative_to(ROOT)) for p in ours if url in p.read_text(encoding="utf8")]
    assert not hard, f"the repository URL is hard-coded in {hard}; read it from _config.yml"


def test_site_loads_nothing_from_a_cdn() -> None:
    cfg = CONFIG["sphinx"]["config"]
    assert cfg["nb_ipywidgets_js"] == {}, "myst-nb's widget scripts point at CDNs"
    js = cfg["html_js_files"]
    assert js == ["vendor/require.js", "cnnlab-widgets.js", "vendor/embed-amd.js"], (
        "require.js, then the glue, then the widget manager")
    assets = [*js, cfg["mathjax_path"], *cfg.get("html_css_files", [])]
    for asset in assets:
        assert "://" not in asset and not asset.startswith("//"), asset
        assert (ROOT / "_static" / asset).is_file(), f"_static/{asset} is missing"


def test_vendored_assets_match_their_manifest() -> None:
    problems = vendor.check()
    assert not problems, "\n".join(problems) + "\n(fix: python scripts/vendor_assets.py)"


# ----------------------------------------------------------------------------- the scripts
def test_sync_inserts_replaces_and_is_idempotent(tmp_path: Path) -> None:
    url = "https://github.com/example/book"
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Title")])
    assert sync.problems(bare, url) == ["the first cell is not the Colab install cell"]
    assert sync.sync(bare, url) and not sync.problems(bare, url)
    assert bare.cells[0].metadata["tags"] == ["remove-cell"] and len(bare.cells) == 2
    assert not sync.sync(bare, url)  # nothing left to change

    old = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules:\n'
                                    '    %pip install cnnlab')
    old.outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb = nbformat.v4.new_notebook(cells=[old])
    cell_id = old.id
    assert sync.sync(nb, url)
    assert len(nb.cells) == 1 and nb.cells[0].id == cell_id and not nb.cells[0].outputs
    assert f'"cnnlab @ git+{url}"' in nb.cells[0].source

    title = nbformat.v4.new_markdown_cell("# Title")
    second = nbformat.v4.new_notebook(cells=[title, nbformat.v4.new_code_cell(
        'import sys\nif "google.colab" in sys.modules:\n    pass')])
    assert sync.problems(second, url) == [
        "the first cell is not the Colab install cell (it is cell 2)"]
    assert sync.sync(second, url) and not sync.problems(second, url)
    assert len(second.cells) == 2 and second.cells[1] is title  # moved, not duplicated

    path = tmp_path / "ch.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
    assert sync.main(["--check", str(path)]) == 1
    assert sync.main([str(path)]) == 0
    assert sync.main(["--check", str(path)]) == 0


def _page(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>", encoding="utf8")


def test_site_checks_find_broken_links_tracebacks_and_heavy_pages(tmp_path: Path) -> None:
    site = tmp_path / "html"
    (site / "_static").mkdir(parents=True)
    (site / "_static" / "x.js").write_text("1")
    (site / "_images").mkdir()
    (site / "_images" / "big.png").write_bytes(b"0" * 2_500_000)
    _page(site / "index.html", '<meta http-equiv="refresh" content="0; url=book/a.html">')
    _page(site / "book" / "a.html",
          '<h1 id="top">A</h1><a href="b.html#sec">ok</a><a href="#top">ok</a>'
          '<a href="https://example.org/">ext</a><script src="../_static/x.js"></script>'
          '<img src="data:image/png;base64,AAAA">'
          '<div class="cell_output"><pre>all good</pre></div>')
    _page(site / "book" / "b.html",
          '<section id="sec"></section><a href="a.html#nope">bad anchor</a>'
          '<a href="c.html">missing</a><img src="../_images/big.png">'
          '<img src="../_images/big.png">'
          '<div class="cell_output"><div class="output"><pre>Traceback (most recent call last)'
          '</pre></div></div><div class="cell_output"><pre>x.py:3: UserWarning: hm</pre></div>')
    problems, counts = check_site.check_links(site)
    assert counts["external"] == 1
    assert sorted(problems) == [
        "book/b.html: 'a.html#nope': no id 'nope' in book/a.html",
        "book/b.html: <a> 'c.html' -> missing book/c.html",
    ]
    outputs = check_site.check_outputs(site)
    assert len(outputs) == 2 and all(o.startswith("book/b.html") for o in outputs)
    over, report = check_site.check_weights(site, ["book/a", "book/b"], max_mb=3)
    assert over == [] and "book/b.html" in report  # one 2.5 MB image, counted once
    over, _ = check_site.check_weights(site, ["book/a", "book/b", "book/c"], max_mb=2)
    assert len(over) == 2 and over[0].startswith("book/b.html weighs 2.50 MB")
    assert over[1] == "book/c: no page book/c.html in the site"
    weights, shared, n_shared = check_site.page_weights(site, ["book/a"])
    assert n_shared == 1 and shared == 1 and weights[0].own == 0


def test_chapters_come_from_the_toc(tmp_path: Path) -> None:
    toc = tmp_path / "toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nparts:\n  - caption: P\n    chapters:\n"
                   "      - file: book/a\n        sections:\n          - file: book/a1.ipynb\n"
                   "      - file: book/b\n")
    assert check_site.chapters(toc) == ["book/a", "book/a1", "book/b"]
