"""cnnlab.stored: a stored JSON file is read from disk, else fetched, else reported missing."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnnlab.stored import StoredUnavailable, load_stored


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """A web folder on 127.0.0.1 holding remote.json; yields its address."""
    root = tmp_path / "web"
    root.mkdir()
    (root / "remote.json").write_text(json.dumps({"from": "web"}))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):  # no request lines in the test output
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data/"
    httpd.shutdown()
    thread.join()


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CNNLAB_OFFLINE", raising=False)


def test_a_file_beside_the_notebook_is_read_without_a_download(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"rows": [1, 2]}')
    assert load_stored("x.json", folder=tmp_path, url="http://127.0.0.1:9/never") == {
        "rows": [1, 2]}


def test_a_missing_file_is_fetched_from_the_url(tmp_path: Path, server: str) -> None:
    web = server.replace("/data/", "/")
    assert load_stored("remote.json", folder=tmp_path, url=web) == {"from": "web"}


def test_offline_says_so_in_one_line_and_returns_none(tmp_path, server, monkeypatch,
                                                       capsys) -> None:
    monkeypatch.setenv("CNNLAB_OFFLINE", "1")
    web = server.replace("/data/", "/")
    assert load_stored("remote.json", folder=tmp_path, url=web) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "remote.json" in out and "CNNLAB_OFFLINE is set" in out


def test_an_unreachable_file_is_reported_not_raised(tmp_path, server, capsys) -> None:
    assert load_stored("absent.json", folder=tmp_path, url=server) is None
    out = capsys.readouterr().out
    assert "absent.json" in out and "could not be read" in out and "skipping" in out
    with pytest.raises(StoredUnavailable, match="absent.json"):
        load_stored("absent.json", folder=tmp_path, url=server, missing="raise")
    assert load_stored("absent.json", folder=tmp_path) is None
    assert "no download address" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["", "a/b.json", "..\\x.json"])
def test_a_bad_name_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="Invalid stored file name"):
        load_stored(name)


def test_a_bad_missing_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="Invalid missing value: 'ignore'"):
        load_stored("x.json", missing="ignore")
