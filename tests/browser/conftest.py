"""Fixtures for the checks of the built site: where it is, which chapters it must have, and a
loopback HTTP server that serves it.

``CNNLAB_SITE`` (default ``_build/html``) and ``CNNLAB_BOOK_TOC`` (default ``_toc.yml``) point
the checks at another build, e.g. one made with a temporary table of contents.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..scripts import load_script  # the browser tests import it from here

ROOT = Path(__file__).resolve().parents[2]
check_site = load_script("check_site")


@pytest.fixture(scope="session")
def site() -> Path:
    path = Path(os.environ.get("CNNLAB_SITE", ROOT / "_build" / "html"))
    if not (path / "index.html").is_file():
        pytest.fail(f"no built site at {path}: run `make book` first")
    return path


@pytest.fixture(scope="session")
def toc() -> Path:
    return Path(os.environ.get("CNNLAB_BOOK_TOC", ROOT / "_toc.yml"))


@pytest.fixture(scope="session")
def chapters(toc: Path) -> list[str]:
    """Document names of the chapters (``book/dropout``): the toc's entries but the root."""
    docs = check_site.chapters(toc)
    assert docs, f"{toc} lists no chapters"
    return docs


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def server(site: Path) -> Iterator[str]:
    """Serve the site on 127.0.0.1 (a free port); yields the base URL ending in '/'."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
