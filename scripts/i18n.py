#!/usr/bin/env python3
"""The Chinese edition (中文版): one source, English; the Chinese text in gettext catalogs.

    python scripts/i18n.py update      # catalogs: extract the English messages, merge them into
                                       # locales/zh_CN/LC_MESSAGES/**.po (new or changed ones are
                                       # empty or fuzzy: translate them), then rewrite the notebooks
    python scripts/i18n.py check       # every message translated, nothing fuzzy, notebooks current
    python scripts/i18n.py build       # the Chinese site, into _build/html/zh (after `make book`)
    python scripts/i18n.py notebooks   # rewrite the Chinese notebooks only

The Chinese build reads the same jupyter-cache as the English one (keyed on the code, which is the
same), so it executes nothing when the English build ran first; each glued number on a Chinese
page is the English page's value from the same execution (scripts/sphinx_ext/cnnlab_i18n.py).

The Chinese notebooks (``locales/zh_CN/book/<chapter>.ipynb``, what a Chinese page's Colab button
opens) are the English ones with each markdown cell's messages replaced by their translations
from the same catalogs: the code cells are the English cells, unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "sphinx_ext"))
from cnnlab_i18n import glue_template  # noqa: E402, F401  (for the tests: the build's own)

LANG = "zh_CN"
LOCALES = ROOT / "locales"
CATALOGS = LOCALES / LANG / "LC_MESSAGES"
NOTEBOOKS = LOCALES / LANG  # + book/<chapter>.ipynb: the path the Colab button names
GLUE = LOCALES / LANG / "glue.po"  # worded glued results: templates with {0}, {1} for numbers
BUILD = ROOT / "_build"
POT = BUILD / "gettext"
ZH_OUT = BUILD / "zh"          # the Chinese build's own doctrees and outputs ...
SITE = BUILD / "html"          # ... and its pages, copied to SITE / "zh"
JUPYTER_CACHE = BUILD / ".jupyter_cache"  # the English build's (myst-nb's default place)


# ------------------------------------------------------------------------------- the catalogs
@dataclass(frozen=True)
class Problem:
    """A message of a catalog that a reader of the Chinese edition would see in English."""
    path: str
    msgid: str
    why: str  # "untranslated" | "fuzzy" | "markup differs: ..."

    def __str__(self) -> str:
        text = self.msgid if len(self.msgid) <= 100 else self.msgid[:97] + "..."
        return f"{self.path}: {self.why}: {text!r}"


def read_catalog(path: Path):
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        return read_po(f, locale=LANG, abort_invalid=True)


# What a translation keeps exactly as the English has it: roles (``{glue:text}`key```,
# ``{doc}`methods```), inline code, inline math, link targets, and the number holes ``{0}`` of
# a glued text's template.
MARKUP = re.compile(r"\{[a-z:-]+\}`[^`]*`|``[^`]+``|`[^`]+`|\$[^$\s][^$]*\$|\]\([^)]*\)|\{\d+\}")


def markup(text: str) -> list[str]:
    """The pieces of ``text`` that a translation must keep, sorted (their order may change)."""
    return sorted(MARKUP.findall(text))


def markup_difference(msgid: str, msgstr: str) -> str:
    """Empty when ``msgstr`` keeps every role, code span, formula and link target of ``msgid``;
    else what is missing or added."""
    a, b = markup(msgid), markup(msgstr)
    if a == b:
        return ""
    missing = [x for x in a if a.count(x) > b.count(x)]
    added = [x for x in b if b.count(x) > a.count(x)]
    return "; ".join(f"{what} {sorted(set(xs))}" for what, xs in
                     (("missing", missing), ("added", added)) if xs)


def emphasis(text: str) -> tuple[int, int]:
    """How many bold and italic spans Markdown (CommonMark, as MyST) reads in ``text``: a
    ``**`` before Chinese punctuation and a character (``**你将学到：**本书``) is not closed, and
    the asterisks would show."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").renderInline(MARKUP.sub("x", text))
    return html.count("<strong>"), html.count("<em>")


def catalog_problems(root: Path = CATALOGS) -> list[Problem]:
    """Every untranslated or fuzzy message in the catalogs under ``root``, and every translation
    that lost or added a role, code span, formula or link target."""
    problems = []
    for path in sorted(root.rglob("*.po")) if root.is_dir() else [root]:
        rel = str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        for message in read_catalog(path):
            if not message.id:
                continue  # the header
            if message.fuzzy:
                problems.append(Problem(rel, str(message.id), "fuzzy"))
            elif not message.string:
                problems.append(Problem(rel, str(message.id), "untranslated"))
            elif diff := markup_difference(str(message.id), str(message.string)):
                problems.append(Problem(rel, str(message.id), f"markup differs: {diff}"))
            elif re.match(r"(\d+[.)]|[-*+>#])\s", str(message.string)):
                problems.append(Problem(rel, str(message.id), "starts like a list item, quote "
                                        "or heading: Markdown would not read it as a sentence "
                                        "(escape the marker: 1\\. ...)"))
            elif emphasis(str(message.id)) != emphasis(str(message.string)):
                problems.append(Problem(rel, str(message.id), "bold/italic differs: (bold, "
                                        f"italic) {emphasis(str(message.id))} in English, "
                                        f"{emphasis(str(message.string))} in the translation "
                                        "(put Chinese punctuation outside the ** markers)"))
    return problems


def translations(docname: str) -> dict[str, str]:
    """msgid -> msgstr of one page's catalog (translated, not fuzzy messages only)."""
    path = CATALOGS / f"{docname}.po"
    if not path.exists():
        return {}
    return {str(m.id): str(m.string) for m in read_catalog(path)
            if m.id and m.string and not m.fuzzy}


# ------------------------------------------------------------------------------- the builds
def _build(outdir: Path, builder: str, overrides: dict, *, doctrees: Path | None = None,
           strict: bool = False, toc: Path | None = None, fresh: bool = False) -> None:
    """One Sphinx build of the book, configured as ``jupyter-book build`` configures it (the same
    _config.yml and _toc.yml), plus ``overrides``. Runs in a child process (Sphinx and docutils
    keep global state)."""
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from jupyter_book.sphinx import build_sphinx\n"
        f"root = Path({str(ROOT)!r})\n"
        f"over = json.loads({json.dumps(json.dumps(overrides))})\n"
        f"over['external_toc_path'] = {str(toc or ROOT / '_toc.yml')!r}\n"
        "over['latex_individualpages'] = False\n"
        f"r = build_sphinx(root, Path({str(outdir)!r}), noconfig=True,\n"
        "    path_config=str(root / '_config.yml'), confoverrides=over,\n"
        f"    builder={builder!r}, warningiserror={strict}, keep_going={strict},\n"
        f"    doctreedir={str(doctrees) if doctrees else None!r}, freshenv={fresh})\n"
        "sys.exit(1 if r else 0)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def extract(out: Path = POT) -> None:
    """The English messages, one .pot per page, into ``out`` (no notebook is executed: outputs
    are not messages)."""
    doctrees = out.parent / f".doctrees-{out.name}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(doctrees, ignore_errors=True)  # every page read afresh
    _build(out, "gettext", {"nb_execution_mode": "off"}, doctrees=doctrees)


def stale_catalogs(pot: Path) -> list[str]:
    """The pages whose catalog's messages differ from the English messages extracted in ``pot``
    (an English edit not yet merged with ``update``), each with what differs."""
    from babel.messages.pofile import read_po

    stale = []
    pages = {p.relative_to(pot).with_suffix("") for p in pot.rglob("*.pot")}
    pages |= {p.relative_to(CATALOGS).with_suffix("") for p in CATALOGS.rglob("*.po")}
    for page in sorted(pages):
        pot_path, po_path = pot / f"{page}.pot", CATALOGS / f"{page}.po"
        if not pot_path.exists() or not po_path.exists():
            stale.append(f"{page}: {'no catalog' if pot_path.exists() else 'no such page'}")
            continue
        with pot_path.open("rb") as f:
            english = {str(m.id) for m in read_po(f) if m.id}
        ours = {str(m.id) for m in read_catalog(po_path) if m.id}
        if english != ours:
            new, gone = sorted(english - ours), sorted(ours - english)
            stale.append(f"{page}: {len(new)} new English messages {new[:3]}, "
                         f"{len(gone)} no longer in the English {gone[:3]}")
    return stale


def update() -> None:
    """Extract, then merge into the catalogs (sphinx-intl): new messages come in empty, changed
    ones fuzzy, with the old translation as a start."""
    extract()
    subprocess.run([str(Path(sys.executable).parent / "sphinx-intl"), "update", "-p", str(POT),
                    "-l", LANG, "-d", str(LOCALES), "-w", "100"], cwd=ROOT, check=True)
    print(f"{update_glue()} new glued texts in {GLUE.relative_to(ROOT)} (from the last "
          "Chinese build: run `make book` first to collect them)")
    write_notebooks()


def update_glue(missed: Path = ZH_OUT / "untranslated-glue.txt") -> int:
    """Adds the glued texts the last Chinese build showed in English (one template a line in
    ``missed``) to the glued-text catalog, untranslated; returns how many were new. Templates
    already there are kept, also those this machine's results did not produce (another outcome
    of a run words another sentence)."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import write_po

    catalog = read_catalog(GLUE) if GLUE.exists() else Catalog(locale=LANG, project="CNN Lab")
    new = [t for t in (missed.read_text(encoding="utf8").splitlines() if missed.exists() else [])
           if t and t not in catalog]
    for template in new:
        catalog.add(template, "")
    GLUE.parent.mkdir(parents=True, exist_ok=True)
    with GLUE.open("wb") as f:
        write_po(f, catalog, width=100, sort_output=True)
    return len(new)


GLOSSARY = ROOT / "book" / "glossary.md"


def glossary_terms(path: Path = GLOSSARY) -> list[str]:
    """The Chinese terms of the glossary's table, one by one (``批次、小批量`` gives two): the
    search index's word list, so that jieba keeps ``正则化`` whole instead of splitting it into
    ``正则`` and ``化`` (a reader searches for the whole term)."""
    terms: list[str] = []
    for line in path.read_text(encoding="utf8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not re.search("[\u4e00-\u9fff]", cells[1]):
            continue
        for part in re.split(r"[、/（）()，\s]+", cells[1]):
            if (re.search("[\u4e00-\u9fff]", part) and len(part) >= 2 and part not in terms
                    and not part.startswith("的")):  # "发散（的运行）": a gloss, not a term
                terms.append(part)
    return terms


def zh_overrides() -> dict:
    words = ZH_OUT / "jieba-terms.txt"
    words.parent.mkdir(parents=True, exist_ok=True)
    words.write_text("".join(f"{t} 100000\n" for t in glossary_terms()), encoding="utf8")
    return {
        "language": LANG,
        "cnnlab_i18n_other": "..",
        "cnnlab_i18n_other_label": "English",
        "nb_execution_cache_path": str(JUPYTER_CACHE),
        # the Colab button opens the Chinese notebook: <path_to_docs>/<page>.ipynb
        "html_theme_options": {"path_to_docs": str(NOTEBOOKS.relative_to(ROOT)),
                               "search_bar_text": "搜索本书……"},
        "html_search_language": "zh",
        "html_search_options": {"dict": str(words)},
        # myst-nb's buttons of hidden cells
        "nb_code_prompt_show": "显示代码",
        "nb_code_prompt_hide": "隐藏代码",
        "cnnlab_i18n_glue_catalog": str(GLUE.relative_to(ROOT)),
    }


def build(toc: Path | None = None) -> None:
    """The Chinese site: built into _build/zh/html from the shared jupyter-cache, then copied to
    _build/html/zh. Fails on any Sphinx warning, like the English build."""
    start = time.perf_counter()
    try:
        # every page read afresh: the catalogs and the glued texts' catalog are not files
        # Sphinx tracks, and the executed notebooks come from the jupyter-cache anyway
        _build(ZH_OUT / "html", "html", zh_overrides(), doctrees=ZH_OUT / ".doctrees",
               strict=True, toc=toc.resolve() if toc else None, fresh=True)
    except subprocess.CalledProcessError:
        shutil.rmtree(ZH_OUT / ".doctrees", ignore_errors=True)  # re-read every page next time
        raise
    shutil.rmtree(SITE / "zh", ignore_errors=True)
    shutil.copytree(ZH_OUT / "html", SITE / "zh")
    print(f"The Chinese edition is at {SITE / 'zh' / 'index.html'} "
          f"({time.perf_counter() - start:.0f} s)")


# ------------------------------------------------------------------------------- the notebooks
# Where a message (a whole paragraph, heading, list item, table cell, directive title) starts in
# Markdown source: at a line's start or after the block's marker.
_STARTS = r"(?:^|(?<=# )|(?<=- )|(?<=\* )|(?<=\+ )|(?<=> )|(?<=\. )|(?<=\) )|(?<=\| )|(?<=\} ))"


def _pattern(msgid: str) -> re.Pattern[str]:
    """A msgid as it appears in Markdown source: a whole block, its words in order with any
    whitespace between them (gettext joins a paragraph's lines with spaces)."""
    words = r"\s+".join(re.escape(w) for w in msgid.split())
    return re.compile(_STARTS + words + r"(?=[ \t]*(?:\n|$|\|))", re.M)


def translate_markdown(source: str, catalog: dict[str, str]) -> tuple[str, list[str]]:
    """``source`` (a markdown cell) with every message of ``catalog`` found in it replaced by its
    translation, longest first; and the messages replaced."""
    used = []
    for msgid in sorted(catalog, key=len, reverse=True):
        if catalog[msgid] == msgid:  # kept as it is (a formula, a name): nothing to replace
            used.append(msgid)
            continue
        new, n = _pattern(msgid).subn(lambda _, zh=catalog[msgid]: zh, source)
        if n:
            source, used = new, used + [msgid]
    return source, used


def chinese_notebook(chapter: Path) -> dict:
    """The Chinese notebook of an English chapter (``book/<name>.ipynb``)."""
    nb = json.loads(chapter.read_text(encoding="utf8"))
    catalog = translations(f"book/{chapter.stem}")
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            text, _ = translate_markdown("".join(cell["source"]), catalog)
            cell["source"] = text.splitlines(keepends=True)
    nb.setdefault("metadata", {})["language_info"] = {
        **nb["metadata"].get("language_info", {}), "name": "python"}
    return nb


def notebook_text(nb: dict) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def write_notebooks() -> None:
    out = NOTEBOOKS / "book"
    out.mkdir(parents=True, exist_ok=True)
    for chapter in chapters():
        (out / chapter.name).write_text(notebook_text(chinese_notebook(chapter)), encoding="utf8")
    print(f"wrote {len(chapters())} Chinese notebooks in {out.relative_to(ROOT)}")


def stale_notebooks() -> list[str]:
    """The Chinese notebooks that differ from what the catalogs and the English chapters give."""
    return [str((NOTEBOOKS / "book" / c.name).relative_to(ROOT)) for c in chapters()
            if not (NOTEBOOKS / "book" / c.name).exists()
            or (NOTEBOOKS / "book" / c.name).read_text(encoding="utf8")
            != notebook_text(chinese_notebook(c))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("update", "check", "build", "notebooks", "extract"))
    parser.add_argument("pages", nargs="*", help="check: only these catalogs (e.g. book/dropout)")
    parser.add_argument("--toc", type=Path, help="build: another table of contents (a subset)")
    args = parser.parse_args()
    if args.action == "update":
        update()
    elif args.action == "extract":
        extract()
    elif args.action == "build":
        build(args.toc)
    elif args.action == "notebooks":
        write_notebooks()
    else:
        if args.pages:
            problems = [str(p) for page in args.pages for p in catalog_problems(
                CATALOGS / f"{page.removesuffix('.po')}.po")]
        else:
            problems = [*map(str, catalog_problems())]
            problems += ([*map(str, catalog_problems(GLUE))] if GLUE.exists() else
                         [f"{GLUE.relative_to(ROOT)}: missing (make book, then "
                          "python scripts/i18n.py update)"])
            problems += [f"{p}: out of date (python scripts/i18n.py notebooks)"
                         for p in stale_notebooks()]
        print("\n".join(problems) or "every message is translated; the notebooks are current")
        sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
