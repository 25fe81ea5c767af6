"""Fast static checks of the book's sources (no build): the table of contents, the notebooks as
committed, the build configuration, the vendored assets, and the site-check scripts themselves.

The checks of the *built* site are in tests/browser/ (``make browser``, after ``make book``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from .scripts import load_script

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))
TOC = ROOT / "_toc.yml"
sync = load_script("sync_chapters")
check_site = load_script("check_site")
vendor = load_script("vendor_assets")

CHAPTERS = sync.chapters()  # book/*.md that are notebooks
NOTEBOOKS = [md.with_suffix(".ipynb") for md in CHAPTERS]


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


def test_every_chapter_is_a_myst_notebook_paired_with_an_ipynb() -> None:
    pages = {str(Path(d).with_suffix("")) for d in _toc_files()}
    plain = {"book/intro", "book/methods", "book/outlook", "book/api",  # nothing to execute
             "book/glossary"}
    chapters = {str(md.relative_to(ROOT).with_suffix("")) for md in CHAPTERS}
    assert chapters == pages - plain, "every chapter but the plain pages is a MyST notebook"
    assert all(md.with_suffix(".ipynb").is_file() for md in CHAPTERS)
    assert not list((ROOT / "book").glob("_src")), "the old string builders are gone"


@pytest.mark.parametrize("md", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_chapter_pair_and_shared_cells_are_in_step(md: Path) -> None:
    problems = sync.problems(md)
    assert not problems, "; ".join(problems) + f" (fix: {sync.COMMAND})"


def test_the_book_is_built_from_the_md_files_only() -> None:
    assert "book/*.ipynb" in CONFIG["exclude_patterns"], "Sphinx must not read both files"


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
            Path(__file__), *(ROOT / "_static").glob("*.js"), *(ROOT / "src").rglob("*.py"),
            *(ROOT / ".github").rglob("*.yml"), ROOT / "Makefile"]
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
CHAPTER_MD = """---
jupytext:
  formats: ipynb,md:myst
  text_representation: {extension: .md, format_name: myst}
kernelspec: {name: python3, display_name: Python 3, language: python}
---

# A chapter

```{code-cell} ipython3
x = 1
```
"""


def test_sync_writes_the_pair_and_the_shared_cells(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sync, "BOOK", tmp_path)
    md = tmp_path / "ch.md"
    md.write_text(CHAPTER_MD)
    assert sync.is_chapter(md) and sync.chapters() == [md]
    assert sync.main(["--check", str(md)]) == 1  # no .ipynb yet, no Colab cell
    assert sync.main([str(md)]) == 0
    assert sync.main(["--check", str(md)]) == 0
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    assert nb.cells[0].source == sync.colab_source() and nb.cells[0].metadata.tags == [sync.TAG]
    assert f'"cnnlab @ git+{sync.repository_url()}"' in nb.cells[0].source
    assert [c.source for c in nb.cells[1:]] == ["# A chapter", "x = 1", sync.runtime_source("ch")]
    assert nb.cells[3].metadata.tags == [sync.TAG]  # the run-time cell, after the first code
    ids = [c.id for c in nb.cells]

    # Edited in Jupyter (the .ipynb is newer): the .md follows, the ids stay.
    nb.cells[2].source = "x = 2"
    nb.cells.append(nbformat.v4.new_code_cell(sync.SETUP_MARK + "\nstale = True"))
    nbformat.write(nb, md.with_suffix(".ipynb"))
    os.utime(md, (1, 1))
    assert sync.main(["--check", str(md)]) == 1
    assert sync.sync(md) == ["ch.md", "ch.ipynb"]  # the stale setup cell is rewritten in both
    text = md.read_text()
    assert text.count(sync.RUNTIME_MARK) == 1 and '"ch"), display=False)' in text  # its name
    assert "x = 2" in text and "stale" not in text and sync.SETUP.splitlines()[-1] in text
    again = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    assert [c.id for c in again.cells][:4] == ids and again.cells[4].source == sync.SETUP
    assert sync.sync(md) == []  # in step: nothing to write

    # Edited as text (the .md is newer); outputs in the .ipynb are dropped.
    md.write_text(text.replace("x = 2", "x = 3"))
    os.utime(md.with_suffix(".ipynb"), (1, 1))
    assert "differ from cell 3" in "; ".join(sync.pair_problems(md))
    sync.sync(md)
    assert nbformat.read(md.with_suffix(".ipynb"), as_version=4).cells[2].source == "x = 3"


def test_shared_cell_problems_are_named() -> None:
    url = sync.repository()
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T")])
    assert sync.shared_problems(bare, url) == ["the first cell is not the Colab install cell"]
    old = nbformat.v4.new_code_cell('import sys\nif "google.colab" in sys.modules: pass')
    nb = nbformat.v4.new_notebook(cells=[old, nbformat.v4.new_code_cell(sync.SETUP_MARK)])
    assert sync.shared_problems(nb, url) == [
        "the Colab install cell differs from the one written from _config.yml",
        "the Colab install cell is not tagged 'remove-cell'",
        "the setup cell (cell 2) differs from the shared one"]
    assert sync.apply_shared(nb, url) and not sync.shared_problems(nb, url)
    assert len(nb.cells) == 2 and not sync.apply_shared(nb, url)
    assert sync.shared_problems(nb, url, "dropout") == ["0 run-time cells (expected 1)"]
    assert sync.apply_shared(nb, url, "dropout") and len(nb.cells) == 3
    assert nb.cells[2].source == sync.runtime_source("dropout")  # after the setup cell
    nb.cells[2].source = sync.RUNTIME_MARK + "\nstale"
    assert sync.shared_problems(nb, url, "dropout") == [
        "the run-time cell (cell 3) differs from the shared one"]


def test_data_url_follows_the_configured_repository(tmp_path: Path, monkeypatch) -> None:
    repo = {"url": "https://github.com/someone/fork", "branch": "dev", "path_to_book": ""}
    assert sync.data_url(repo) == "https://raw.githubusercontent.com/someone/fork/dev/book/data"
    assert sync.data_url() == sync.data_url(CONFIG["repository"] | {"url": sync.repository_url()})
    config = tmp_path / "_config.yml"
    monkeypatch.setattr(sync, "CONFIG", config)
    config.write_text("repository:\n  url: https://github.com/someone/fork.git/\n")
    assert sync.repository_url() == "https://github.com/someone/fork"
    config.write_text("repository:\n  url: http://example.org/x\n")
    with pytest.raises(ValueError, match="Invalid repository.url in _config.yml: 'http://exa"):
        sync.repository()


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


# ----------------------------------------------------------------------------- what a chapter needs
# What Colab preinstalls that the chapters may use (tests/colab runs two chapters in exactly that).
COLAB_SET = {"torch", "torchvision", "ipywidgets", "matplotlib", "numpy", "scipy", "scikit-learn",
             "tqdm", "ipykernel"}


def _norm(dist: str) -> str:
    return re.sub(r"[-_.]+", "-", dist).lower()


def _declared() -> set[str]:
    """cnnlab's declared dependencies (pyproject.toml), as normalized distribution names."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def _imported(code: str) -> set[str]:
    """Top-level modules that ``code`` imports (IPython magics and shell lines dropped)."""
    lines = [ln[: len(ln) - len(ln.lstrip())] + "pass" if ln.lstrip().startswith(("%", "!"))
             else ln for ln in code.splitlines()]  # a magic line keeps its block non-empty
    names = set()
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _unsatisfied(modules: set[str], allowed: set[str]) -> list[str]:
    from importlib.metadata import packages_distributions

    dists = packages_distributions()
    out = []
    for module in sorted(modules - set(sys.stdlib_module_names) - {"cnnlab"}):
        owners = {_norm(d) for d in dists.get(module, [])}
        if not owners & allowed:
            out.append(f"{module} (from {sorted(owners) or 'nothing installed'})")
    return out


def test_imports_are_parsed_without_magics() -> None:
    code = ('if x:\n    %pip install x\nimport os, torch.nn as nn\nfrom sklearn import datasets\n'
            'from . import y')
    assert _imported(code) == {"os", "torch", "sklearn"}
    assert _unsatisfied({"os", "torch", "myst_nb", "cnnlab"}, {"torch"}) == [
        "myst_nb (from ['myst-nb'])"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_nb_ids())
def test_a_chapter_imports_only_what_colab_and_cnnlab_bring(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    missing = _unsatisfied(_imported(code), COLAB_SET | _declared())
    assert not missing, (f"{path.name} imports what neither Colab nor cnnlab's dependencies "
                         f"install: {missing}")


def test_cnnlab_imports_only_its_declared_dependencies() -> None:
    modules = set()
    for py in (ROOT / "src" / "cnnlab").rglob("*.py"):
        modules |= _imported(py.read_text(encoding="utf8"))
    missing = _unsatisfied(modules, _declared())
    assert not missing, f"cnnlab imports undeclared packages: {missing} (add them to pyproject)"


# ----------------------------------------------------------------------------- publishing
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf8")
    block = re.search(r"## Two commands.*?```bash\n(.*?)```", text, re.S)
    assert block, "the README's 'Two commands' block"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_workflow_runs_the_readme_test_command_then_deploys_the_site() -> None:
    flow = yaml.safe_load(WORKFLOW.read_text(encoding="utf8"))
    steps = flow["jobs"]["test"]["steps"]
    runs = [s.get("run", "") for s in steps]
    assert "make test" in _readme_commands()
    assert "make test" in runs, "the workflow runs the README's test command"
    upload = next(s for s in steps if str(s.get("uses", "")).startswith(
        "actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html" and runs.index("make test") < steps.index(upload)
    deploy = flow["jobs"]["deploy"]
    assert deploy["needs"] == "test" and "refs/heads/main" in deploy["if"]
    assert any(str(s.get("uses", "")).startswith("actions/deploy-pages") for s in deploy["steps"])


def test_the_workflow_reads_the_repository_url_from_the_config() -> None:
    text = WORKFLOW.read_text(encoding="utf8")
    assert sync.repository_url() not in text and "github.com/" not in text.replace(
        "github.com/en", "")
    check = next(s["run"] for s in yaml.safe_load(text)["jobs"]["test"]["steps"]
                 if "sync_chapters.py --url" in s.get("run", ""))
    assert '"$configured" != "$here"' in check and "GITHUB_REPOSITORY" in check
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_chapters.py"), "--url"],
                         check=True, capture_output=True, text=True).stdout
    assert out.strip() == sync.repository_url()


def test_the_api_reference_documents_every_module() -> None:
    page = (ROOT / "book" / "api.md").read_text(encoding="utf8")
    documented = set(re.findall(r"^\.\. automodule:: (cnnlab[\w.]*)$", page, re.M))
    package = ROOT / "src" / "cnnlab"
    modules = {"cnnlab." + ".".join(p.relative_to(package).with_suffix("").parts)
               for p in package.rglob("*.py") if not p.name.startswith("_")}
    modules |= {"cnnlab." + ".".join(p.parent.relative_to(package).parts)  # packages
                for p in package.rglob("__init__.py") if p.parent != package}
    assert modules - documented == set(), "modules missing from book/api.md"
    assert documented <= modules, "book/api.md names modules that do not exist"


def test_nothing_points_outside_the_repository() -> None:
    """The README, CONTRIBUTING and the book are read in a clone: no path out of it."""
    texts = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *(ROOT / "book").glob("*.md")]
    bad = [p.name for p in texts if re.search(r"\.\./shared|shared/GUIDE", p.read_text("utf8"))]
    assert not bad, f"links outside the repository in {bad}"


def test_the_landing_page_table_covers_every_chapter() -> None:
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf8")
    for md in CHAPTERS:
        assert f"{{glue:text}}`{md.name}::runtime:s`" in intro, f"{md.name}: run time"
        assert f"{{glue:text}}`{md.name}::headline:s`" in intro, f"{md.name}: headline"
        assert f"{{ref}}`{md.stem}-headline`" in intro, f"{md.name}: link to its finding"


def test_the_landing_page_is_reread_whenever_a_chapter_is() -> None:
    ext = load_script("scripts/sphinx_ext/cnnlab_cross_glue.py")
    assert CONFIG["sphinx"]["config"]["cnnlab_cross_glue_pages"] == ["book/intro"]
    assert "cnnlab_cross_glue" in CONFIG["sphinx"]["local_extensions"]

    class App:  # the two attributes the handler reads
        class config:
            cnnlab_cross_glue_pages = ["book/intro", "book/gone"]

    class Env:
        found_docs = {"book/intro", "book/dropout"}

    assert ext.outdated_pages(App, Env, set(), {"book/dropout"}, set()) == ["book/intro"]
    assert ext.outdated_pages(App, Env, set(), set(), set()) == []  # nothing read: no rebuild


def test_every_chapter_and_the_landing_page_link_to_the_methods_page() -> None:
    """The statistics policy is written down once (book/methods.md); every page that reports a
    measurement points to it."""
    pages = [*CHAPTERS, ROOT / "book" / "intro.md"]
    missing = [str(p.relative_to(ROOT)) for p in pages if "{doc}`methods`" not in p.read_text()]
    assert not missing, f"pages without a link to the methods page: {missing}"
