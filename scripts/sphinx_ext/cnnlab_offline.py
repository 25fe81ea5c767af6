"""Sphinx extension (loaded from ``_config.yml``): MathJax from ``_static/``, on math pages only.

jupyter-book 1.x adds every ``*.js`` under ``_static/`` to ``html_js_files``, i.e. to every page.
That is what we want for the vendored widget manager (``_config.yml`` lists it first, so the
automatic duplicates are dropped by Sphinx's de-duplication and the order stays right), but not
for the vendored MathJax: ``sphinx.ext.mathjax`` already loads ``mathjax_path`` (deferred, after
its ``window.MathJax`` configuration) on the pages that have math, and a second, undeferred copy
on every page would run before that configuration and typeset twice. This drops the automatic
MathJax entries; nothing else changes.
"""

from __future__ import annotations

from typing import Any

VENDORED_MATHJAX = "mathjax/"  # folder under _static/ (scripts/vendor_assets.py fills it)


def _filename(entry: Any) -> str:
    return entry[0] if isinstance(entry, (tuple, list)) else entry


def drop_automatic_mathjax(app: Any, config: Any) -> None:
    config.html_js_files = [e for e in config.html_js_files
                            if not (_filename(e) or "").startswith(VENDORED_MATHJAX)]


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", drop_automatic_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
