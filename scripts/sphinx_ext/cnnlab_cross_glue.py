"""Sphinx extension (loaded from ``_config.yml``): pages that paste other documents' glued values
are read again whenever any document is.

The landing page shows each chapter's run time and headline with myst-nb's cross-document glue
(``{glue:text}`dropout.md::headline:s```), resolved when the page is written, from the chapter's
stored glue data. Sphinx rewrites only the pages whose own source changed, so after a chapter's
numbers changed an incremental build would keep the landing page's old ones. The pages named in
``cnnlab_cross_glue_pages`` are therefore marked outdated in every build that reads anything.
"""

from __future__ import annotations

from typing import Any


def outdated_pages(app: Any, env: Any, added: set[str], changed: set[str],
                   removed: set[str]) -> list[str]:
    """``env-get-outdated``: the configured pages, when any other document is (re)read."""
    if not (added or changed or removed):
        return []
    return [doc for doc in app.config.cnnlab_cross_glue_pages if doc in env.found_docs]


def setup(app: Any) -> dict[str, Any]:
    app.add_config_value("cnnlab_cross_glue_pages", [], "env")
    app.connect("env-get-outdated", outdated_pages)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
