#!/usr/bin/env python3
"""Offline checks of the built site (``_build/html``): links, reader-visible errors, page weights.

    python scripts/check_site.py                 # all three checks, report, exit 1 on a problem
    python scripts/check_site.py links           # every internal link, resource and anchor resolves
    python scripts/check_site.py outputs         # no traceback or warning in any output cell
    python scripts/check_site.py weights         # each chapter page <= 3 MB; report the weights

Options: ``--site DIR`` (default ``_build/html``), ``--toc FILE`` (default ``_toc.yml``; the
chapters are its entries other than the root), ``--max-mb`` (default 3).

Page weight: the page's HTML (which holds its inline images: slider frames, widget state) plus
every page-specific file it loads (``_images/...``). Files under ``_static/`` (theme, vendored
widget manager, MathJax) and the search index are shared by every page and cached by the
browser, so they are reported once, as the shared total, and not counted per page.

Nothing here needs a browser or the network; ``tests/browser/test_site.py`` runs the same checks
and ``tests/browser/test_browser.py`` checks what Chromium actually loads.
"""

from __future__ import annotations

import argparse
import json
import posixpath
import re
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "_build" / "html"
TOC = ROOT / "_toc.yml"
MAX_PAGE_MB = 3.0
MB = 1_000_000
# Site-wide files every page loads besides _static/ (the search index): shared, counted once.
SHARED_FILES = {"searchindex.js"}

# Resource-carrying attributes per tag.
LINK_ATTRS = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src",
              "source": "src", "video": "src", "audio": "src", "embed": "src", "object": "data"}
# <link rel=...> values whose target the browser loads with the page (the rest are links).
LOADED_LINK_RELS = {"stylesheet", "icon", "shortcut", "preload", "modulepreload", "manifest",
                    "apple-touch-icon"}
EXTERNAL_SCHEMES = {"http", "https", "mailto", "tel", "ftp"}  # links to elsewhere: not followed
INLINE_SCHEMES = {"data", "javascript", "blob"}  # nothing to resolve
# What a reader must never see in an output cell (or in an output kept in widget state).
FORBIDDEN_OUTPUT = ("Traceback (most recent call last)", "Warning:")
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


# ----------------------------------------------------------------------------- parsing
@dataclass
class Page:
    """What the checks need from one HTML file."""

    path: Path
    ids: set[str] = field(default_factory=set)
    refs: list[tuple[str, str]] = field(default_factory=list)  # (tag, url)
    outputs: list[str] = field(default_factory=list)  # text of each output cell
    widget_state: list[str] = field(default_factory=list)  # raw JSON of the widget state


class _Parser(HTMLParser):
    def __init__(self, page: Page) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.div_depth = 0
        self.output_depth: int | None = None  # div depth where the current output cell opened
        self.buf: list[str] = []
        self.in_state = False
        self.state_buf: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        for key in ("id", "name") if tag == "a" else ("id",):  # anchors: ids, <a name=...>
            if a.get(key):
                self.page.ids.add(a[key])
        attr = LINK_ATTRS.get(tag)
        if attr and a.get(attr):
            if tag == "link" and not LOADED_LINK_RELS & set(a.get("rel", "").lower().split()):
                # <link rel="next|prev|index|search|canonical">: a link, not a resource.
                self.page.refs.append(("a", a[attr]))
            else:
                self.page.refs.append((tag, a[attr]))
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            m = re.search(r"url=(.+)$", a.get("content", ""), re.I)
            if m:
                self.page.refs.append(("meta", m.group(1).strip().strip("'\"")))
        if tag == "script" and a.get("type") == WIDGET_STATE:
            self.in_state = True
        if tag == "div":
            self.div_depth += 1
            classes = a.get("class", "").split()
            if self.output_depth is None and ("cell_output" in classes or "output" in classes):
                self.output_depth = self.div_depth
                self.buf = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self.in_state:
            self.in_state = False
            self.page.widget_state.append("".join(self.state_buf))
            self.state_buf = []
        if tag == "div":
            if self.output_depth == self.div_depth:
                self.page.outputs.append("".join(self.buf))
                self.output_depth = None
            self.div_depth -= 1

    def handle_data(self, data: str) -> None:
        if self.in_state:
            self.state_buf.append(data)
        elif self.output_depth is not None:
            self.buf.append(data)


def parse(path: Path) -> Page:
    page = Page(path)
    parser = _Parser(page)
    parser.feed(path.read_text(encoding="utf8", errors="replace"))
    parser.close()
    return page


def html_files(site: Path) -> list[Path]:
    """Every page of the site (the theme's template fragments under _static/ are not pages)."""
    return sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)


def chapters(toc: Path = TOC) -> list[str]:
    """The toc's entries other than the root, as document names (``book/dropout``), in order."""
    data = yaml.safe_load(toc.read_text(encoding="utf8"))
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)

    for key in ("parts", "chapters", "sections"):
        for child in data.get(key) or []:
            walk(child)
    return [posixpath.splitext(f)[0] if f.endswith((".ipynb", ".md")) else f for f in found]


def chapter_page(site: Path, doc: str) -> Path:
    return site / f"{doc}.html"


# ----------------------------------------------------------------------------- checks
def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme in EXTERNAL_SCHEMES | INLINE_SCHEMES or parts.netloc
                or url.startswith("//"))


def _resolve(site: Path, page: Path, url: str) -> tuple[Path | None, str]:
    """The file ``url`` (relative, from ``page``) points to, and its fragment."""
    parts = urlsplit(url)
    if not parts.path:
        return page, unquote(parts.fragment)
    rel = posixpath.normpath(posixpath.join(page.parent.relative_to(site).as_posix(),
                                            unquote(parts.path)))
    if rel.startswith("../") or rel == "..":
        return None, parts.fragment
    target = site / rel
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def check_links(site: Path = SITE) -> tuple[list[str], dict[str, int]]:
    """Every internal link, resource and anchor resolves. Returns (problems, counts)."""
    pages = {p: parse(p) for p in html_files(site)}
    problems: list[str] = []
    counts = {"pages": len(pages), "internal": 0, "anchors": 0, "external": 0}
    for path, page in pages.items():
        name = path.relative_to(site).as_posix()
        for tag, url in page.refs:
            if urlsplit(url).scheme in INLINE_SCHEMES:
                continue
            if _is_external(url):
                counts["external"] += 1
                continue
            counts["internal"] += 1
            target, frag = _resolve(site, path, url)
            if target is None:
                problems.append(f"{name}: <{tag}> {url!r} points outside the site")
                continue
            if not target.is_file():
                problems.append(f"{name}: <{tag}> {url!r} -> missing "
                                f"{target.relative_to(site).as_posix()}")
                continue
            if frag and tag in ("a", "meta") and target.suffix == ".html":
                counts["anchors"] += 1
                ids = (pages.get(target) or parse(target)).ids
                if frag not in ids:
                    problems.append(f"{name}: {url!r}: no id {frag!r} in "
                                    f"{target.relative_to(site).as_posix()}")
    return problems, counts


def check_outputs(site: Path = SITE) -> list[str]:
    """No output cell (and no output kept in widget state) shows a traceback or a warning."""
    problems = []
    for path in html_files(site):
        page = parse(path)
        name = path.relative_to(site).as_posix()
        for where, texts in (("output cell", page.outputs), ("widget state", page.widget_state)):
            for text in texts:
                for bad in FORBIDDEN_OUTPUT:
                    i = text.find(bad)
                    if i >= 0:
                        snippet = " ".join(text[max(0, i - 80): i + 120].split())
                        problems.append(f"{name}: {where} shows {bad!r}: ...{snippet}...")
    return problems


@dataclass
class Weight:
    page: str
    html: int  # bytes of the HTML file (inline images included)
    own: int  # bytes of page-specific files it loads (_images/...)
    own_files: int

    @property
    def total(self) -> int:
        return self.html + self.own


def _local_resources(site: Path, path: Path, page: Page) -> set[Path]:
    out = set()
    for tag, url in page.refs:
        if tag == "a" or tag == "meta" or _is_external(url):
            continue
        target, _ = _resolve(site, path, url)
        if target is not None and target.is_file():
            out.add(target)
    return out


def page_weights(site: Path = SITE, docs: list[str] | None = None
                 ) -> tuple[list[Weight], int, int]:
    """Per-page weights for ``docs`` (default: every page), and the shared _static/ assets
    those pages load (total bytes, number of files), counted once."""
    paths = [chapter_page(site, d) for d in docs] if docs is not None else html_files(site)
    weights, shared = [], set()
    static = site / "_static"
    for path in paths:
        if not path.is_file():
            continue
        page = parse(path)
        own = 0
        n_own = 0
        for res in _local_resources(site, path, page):
            if static in res.parents or res.relative_to(site).as_posix() in SHARED_FILES:
                shared.add(res)
            else:
                own += res.stat().st_size
                n_own += 1
        weights.append(Weight(path.relative_to(site).as_posix(), path.stat().st_size, own, n_own))
    return weights, sum(p.stat().st_size for p in shared), len(shared)


def check_weights(site: Path = SITE, docs: list[str] | None = None,
                  max_mb: float = MAX_PAGE_MB) -> tuple[list[str], str]:
    """Pages over ``max_mb``, and a report of every page's weight."""
    weights, shared, n_shared = page_weights(site, docs)
    lines = [f"{'page':<40} {'html':>9} {'own files':>10} {'total':>9}"]
    problems = []
    for w in sorted(weights, key=lambda w: -w.total):
        lines.append(f"{w.page:<40} {w.html / MB:>7.2f}MB {w.own / MB:>8.2f}MB "
                     f"{w.total / MB:>7.2f}MB" + ("  OVER" if w.total > max_mb * MB else ""))
        if w.total > max_mb * MB:
            problems.append(f"{w.page} weighs {w.total / MB:.2f} MB (limit {max_mb} MB): "
                            f"HTML {w.html / MB:.2f} MB, own files {w.own / MB:.2f} MB")
    if docs is not None:
        missing = [d for d in docs if not chapter_page(site, d).is_file()]
        problems += [f"{d}: no page {d}.html in the site" for d in missing]
    lines.append(f"shared _static/ assets loaded by these pages, counted once: "
                 f"{shared / MB:.2f} MB in {n_shared} files (plus fonts loaded on demand)")
    return problems, "\n".join(lines)


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", nargs="?", default="all",
                        choices=["all", "links", "outputs", "weights"])
    parser.add_argument("--site", type=Path, default=SITE)
    parser.add_argument("--toc", type=Path, default=TOC)
    parser.add_argument("--max-mb", type=float, default=MAX_PAGE_MB)
    parser.add_argument("--json", type=Path, help="also write the page weights here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"no built site at {args.site} (run `make book` first)", file=sys.stderr)
        return 2
    problems: list[str] = []
    if args.check in ("all", "links"):
        found, counts = check_links(args.site)
        problems += found
        print(f"links: {counts['pages']} pages, {counts['internal']} internal links and "
              f"resources ({counts['anchors']} with anchors) checked, {len(found)} broken; "
              f"{counts['external']} external links not followed")
    if args.check in ("all", "outputs"):
        found = check_outputs(args.site)
        problems += found
        print(f"outputs: {len(found)} tracebacks or warnings shown to readers")
    if args.check in ("all", "weights"):
        docs = chapters(args.toc)
        found, report = check_weights(args.site, docs, args.max_mb)
        problems += found
        print(f"page weights (chapters, limit {args.max_mb} MB each):\n{report}")
        if args.json:
            weights, shared, n = page_weights(args.site, docs)
            args.json.write_text(json.dumps({"pages": {w.page: w.total for w in weights},
                                             "shared_static": shared}, indent=1))
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
