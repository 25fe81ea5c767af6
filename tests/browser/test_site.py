"""Offline checks of the built site (no browser): links and anchors, what readers see in
outputs, page weights. The same checks as ``python scripts/check_site.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import check_site

pytestmark = pytest.mark.browser  # needs the built site: runs in `make browser`, after `make book`


def _fail(problems: list[str], what: str) -> None:
    if problems:
        pytest.fail(f"{len(problems)} {what}:\n" + "\n".join(problems[:50]), pytrace=False)


def test_every_chapter_is_built(site: Path, chapters: list[str]) -> None:
    _fail([f"{d}: missing {d}.html" for d in chapters
           if not check_site.chapter_page(site, d).is_file()], "chapters not in the site")


def test_internal_links_and_anchors_resolve(site: Path) -> None:
    problems, counts = check_site.check_links(site)
    assert counts["internal"] > 0
    _fail(problems, "broken internal links")


def test_no_traceback_or_warning_in_outputs(site: Path) -> None:
    _fail(check_site.check_outputs(site), "outputs that show readers a traceback or a warning")


def test_chapter_page_weights(site: Path, chapters: list[str]) -> None:
    problems, report = check_site.check_weights(site, chapters)
    print(report)  # shown with -rP / -s
    _fail(problems, f"pages over {check_site.MAX_PAGE_MB} MB")
