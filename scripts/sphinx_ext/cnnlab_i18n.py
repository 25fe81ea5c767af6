"""Sphinx extension (loaded from ``_config.yml``): the book in two languages from one source.

The English chapters are the source; the Chinese text lives in gettext catalogs
(``locales/zh_CN/LC_MESSAGES/book/<page>.po``) and Sphinx's own i18n transform swaps each message
in when the book is built with ``language = "zh_CN"`` (``scripts/i18n.py build``). Three things
the stock tools do not do, done here:

1. **Glued numbers inside translated text.** myst-nb re-parses a translated message with the
   plain MyST parser, which has no glue data, so ``{glue:text}`key``` in a Chinese paragraph
   would render empty with the warning "No key ... found in glue data for this document". Where
   a document has no notebook renderer (that re-parse), the role pastes the value from the
   glue data myst-nb wrote when it parsed the page's notebook just before: the same value, from
   the same execution, as on the English page.
2. **Outputs are not text to translate.** Everything a code cell printed (tables, numbers), the
   API reference's docstrings, and any block in a ``{container} notranslate`` directive (the
   glossary's two columns) is marked untranslatable, so the catalogs hold prose only and do not
   change when a number does.
3. **Worded results in Chinese.** Many glued values are not bare numbers but sentences the
   chapter's code words from its results ("helps by +12.1 points (95% CI ...)"). In the Chinese
   build each pasted text is looked up, with its numbers taken out, in the catalog
   ``locales/zh_CN/glue.po`` (msgid ``"helps by {0} points (95% CI {1} to {2})"``), and the
   translation gets the same numbers back: the words are Chinese, every number is the English
   page's. A text not in the catalog stays English and is listed in
   ``_build/zh/untranslated-glue.txt`` (``scripts/i18n.py update`` collects the texts of the
   last build into the catalog).
4. **A switcher on every page**: a header button that goes to the same page in the other
   language (English at the site's root, Chinese under ``zh/``), in the same tab.

Config values: ``cnnlab_i18n_other`` is the path from this edition's root to the other's (``zh``
in the English build, ``..`` in the Chinese one; empty: no switcher), and
``cnnlab_i18n_other_label`` the button's text.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.transforms import SphinxTransform
from sphinx.transforms.post_transforms import SphinxPostTransform

SWITCHER_CLASS = "btn-cnnlab-lang"


NOTRANSLATE_CLASSES = {"cell_output", "notranslate"}


def _kept_as_is(node: nodes.Node) -> bool:
    """A code cell's output, a ``{container} notranslate`` block, or an autodoc entry."""
    if isinstance(node, addnodes.desc):
        return True
    return (isinstance(node, nodes.container)
            and bool(NOTRANSLATE_CLASSES & set(node.get("classes", []))))


class OutputsNotTranslatable(SphinxTransform):
    """Marks every text node inside what stays as it is (outputs, docstrings, ``notranslate``
    blocks) as not translatable, before Sphinx's Locale transform (priority 20) and the gettext
    builder's extraction look at them."""

    default_priority = 5

    def apply(self, **kwargs: Any) -> None:
        for block in self.document.findall(_kept_as_is):
            for node in block.findall(nodes.TextElement):
                node["translatable"] = False
        for node in self.document.findall(nodes.TextElement):  # a module's own docstring
            if ":docstring of " in (node.source or ""):
                node["translatable"] = False
                node["classes"].append("notranslate")  # English on purpose, on either edition


class TranslateTocCaptions(SphinxTransform):
    """The table of contents' part captions ("Method", ...) in the page's language.
    sphinx-external-toc inserts the toctrees (priority 100) after Sphinx's own translation
    (priority 20), so their captions would stay English; they are messages of the root page's
    catalog, looked up here the way Sphinx looks up the rest."""

    default_priority = 101

    def apply(self, **kwargs: Any) -> None:
        if not self.config.language or self.config.language == "en":
            return
        from sphinx.locale import init as init_locale
        from sphinx.util.i18n import docname_to_domain

        toctrees = list(self.document.findall(addnodes.toctree))
        if not any(t.get("caption") for t in toctrees):
            return
        dirs = [str(Path(self.env.srcdir) / d) for d in self.config.locale_dirs]
        domain = docname_to_domain(self.env.docname, self.config.gettext_compact)
        catalog, has = init_locale(dirs, self.config.language, domain)
        if not has:
            return
        for toctree in toctrees:
            if toctree.get("caption"):
                caption = catalog.gettext(toctree["caption"])
                toctree["caption"] = toctree["rawcaption"] = caption


def _patch_glue_text_role() -> None:
    """Answers ``{glue:text}`key``` in a document without a notebook renderer (a translated
    message's re-parse) with the value from the current document's glue data, pasted at once;
    a key missing there gets a pending reference to it, resolved when the page is written."""
    from myst_nb.ext.glue import roles

    if getattr(roles.PasteTextRole.run, "_cnnlab_i18n", False):
        return
    original = roles.PasteTextRole.run

    def run(self: Any) -> Any:
        env = getattr(self.document.settings, "env", None)
        if env is not None and "nb_renderer" not in self.document and "::" not in self.text:
            # The page's notebook was parsed (and its glue data written) before the
            # translation transform: paste the value now, as the role does on English pages
            # (a pending reference would also work in prose, but not in a heading, whose text
            # Sphinx reads before pending references are resolved).
            from myst_nb.core.variables import format_plain_text
            from myst_nb.ext.glue.crossref import read_glue_cache

            key, _, fmt = self.text.partition(":")
            data = read_glue_cache(env.mystnb_config.output_folder, env.docname).get(key)
            if data and "text/plain" in data.get("data", {}):
                text = format_plain_text(data["data"]["text/plain"], fmt or "s")
                node = nodes.inline(text, text, classes=["pasted-text"])
                self.set_source_info(node)
                return [node], []
            source = "/" + str(env.doc2path(env.docname, False))
            # the role splits a format spec off at the last ":", so the form needs one
            self.text = f"{source}::{self.text}" + ("" if ":" in self.text else ":s")
        return original(self)

    run._cnnlab_i18n = True  # type: ignore[attr-defined]
    roles.PasteTextRole.run = run


# A number as the chapters write them: 1,000  -12.1  +0.5  3e-4  1.09x  95%  (the sign belongs to
# the number; "x" and "%" stay in the template).
NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[-+\u2212]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


def glue_template(text: str) -> tuple[str, list[str]]:
    """``text`` with each number replaced by ``{0}``, ``{1}``, ... (braces doubled), and the
    numbers: ``glue_template("5 of 8 runs") == ("{0} of {1} runs", ["5", "8"])``."""
    numbers: list[str] = []

    def hole(match: re.Match[str]) -> str:
        numbers.append(match.group())
        return f"\0{len(numbers) - 1}\0"

    holed = NUMBER.sub(hole, text).replace("{", "{{").replace("}", "}}")
    return re.sub("\0(\\d+)\0", r"{\1}", holed), numbers


def fill_template(template: str, numbers: list[str]) -> str:
    """The inverse of :func:`glue_template`, on a translated template."""
    return template.format(*numbers)


def read_glue_catalog(path: Path) -> dict[str, str]:
    """msgid -> msgstr of the glued-text catalog (translated, not fuzzy)."""
    if not path.exists():
        return {}
    from babel.messages.pofile import read_po

    with path.open("rb") as f:
        return {str(m.id): str(m.string) for m in read_po(f) if m.id and m.string
                and not m.fuzzy}


class TranslateGluedText(SphinxPostTransform):
    """In a build whose language has a glued-text catalog, each pasted text (after myst-nb has
    resolved the pending references, priority 5) in its translated wording, same numbers."""

    default_priority = 50

    def apply(self, **kwargs: Any) -> None:
        if not self.config.cnnlab_i18n_glue_catalog:
            return
        # read once per build (kept on the app, not the pickled environment)
        if not hasattr(self.app, "cnnlab_glue_catalog"):
            path = Path(self.env.srcdir) / self.config.cnnlab_i18n_glue_catalog
            self.app.cnnlab_glue_catalog = read_glue_catalog(path)
            self.app.cnnlab_glue_missed = set()
        catalog, missed = self.app.cnnlab_glue_catalog, self.app.cnnlab_glue_missed
        for node in list(self.document.findall(nodes.inline)):
            if "pasted-text" not in node.get("classes", []):
                continue
            text = node.astext()
            template, numbers = glue_template(text)
            if template in catalog:
                zh = fill_template(catalog[template], numbers)
                node.replace_self(nodes.inline(zh, zh, classes=node["classes"]))
            elif re.search("[A-Za-z]{2,}", text):
                missed.add(template)


def report_missed(app: Any, exc: Exception | None) -> None:
    """``build-finished``: the glued texts that stayed English, one template a line."""
    missed = getattr(app, "cnnlab_glue_missed", None)
    if exc is None and app.config.cnnlab_i18n_glue_catalog and missed is not None:
        out = Path(app.outdir).parent / "untranslated-glue.txt"
        out.write_text("".join(f"{t}\n" for t in sorted(missed)), encoding="utf8")
        if missed:
            print(f"{len(missed)} glued texts have no translation yet (shown in English); "
                  f"listed in {out}")


def switcher_url(pagename: str, other_root: str) -> str:
    """The relative URL of ``pagename`` in the other edition, from the page ``pagename``:
    ``switcher_url("book/dropout", "zh") == "../zh/book/dropout.html"``."""
    up = "../" * pagename.count("/")
    return f"{up}{other_root.strip('/')}/{pagename}.html"


def add_switcher(app: Any, pagename: str, templatename: str, context: dict[str, Any],
                 doctree: Any) -> None:
    """``html-page-context`` (after the theme's own header buttons): the language button."""
    other = app.config.cnnlab_i18n_other
    if not other or doctree is None or "header_buttons" not in context:
        return
    label = app.config.cnnlab_i18n_other_label
    context["header_buttons"].insert(0, {
        "type": "link", "url": switcher_url(pagename, other), "text": label,
        "tooltip": label, "icon": "fas fa-language", "label": SWITCHER_CLASS.removeprefix("btn-")})


# The theme opens link buttons in a new tab; the language switcher stays in this one.
SAME_TAB_JS = (f"document.addEventListener('DOMContentLoaded', () => document.querySelectorAll("
               f"'a.{SWITCHER_CLASS}').forEach(a => a.removeAttribute('target')));")


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("cnnlab_i18n_other", "", "html")
    app.add_config_value("cnnlab_i18n_other_label", "", "html")
    app.add_config_value("cnnlab_i18n_glue_catalog", "", "env")  # empty: no glue translation
    app.add_transform(OutputsNotTranslatable)
    app.add_transform(TranslateTocCaptions)
    app.add_post_transform(TranslateGluedText)
    app.connect("build-finished", report_missed)
    _patch_glue_text_role()
    app.connect("html-page-context", add_switcher, priority=502)
    app.add_js_file(None, body=SAME_TAB_JS)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
