"""Results stored with a notebook (JSON files): read beside it, else fetched, else said missing.

Some results take too long to compute while a page is read (a run on a GPU, hours of training);
they are computed once by a script and stored as JSON files next to the notebooks. A notebook
opened from a checkout finds them on disk. A notebook opened alone (Colab, a downloaded copy)
fetches them from where the repository publishes them; offline, or where no copy can be had, it
is told so in one line and gets ``None``, so the part that needs them can be skipped.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["StoredUnavailable", "load_stored"]


class StoredUnavailable(RuntimeError):
    """A stored result is neither on disk nor reachable (raised only with ``missing="raise"``)."""


def _offline() -> bool:
    return os.environ.get("CNNLAB_OFFLINE", "0") not in ("", "0", "false", "False")


def load_stored(
    name: str,
    *,
    folder: str | os.PathLike = "data",
    url: str | None = None,
    timeout: float = 20.0,
    missing: str = "say",
) -> Any | None:
    """The JSON file ``name``: ``folder/name`` if it exists, else ``url/name`` downloaded.

    Args:
        name: the file's name, e.g. ``"ablation_full.json"`` (no folders).
        folder: where the file lies in a checkout, relative to the working directory (a chapter
            runs in ``book/``, so its stored data is in ``data``).
        url: the folder's address on the web (no trailing file name); ``None``: no download.
        timeout: seconds to wait for the download.
        missing: what to do when the file can be had neither way: ``"say"`` prints one line and
            returns ``None``; ``"raise"`` raises :class:`StoredUnavailable`.

    Returns:
        The parsed JSON, or ``None`` (with ``missing="say"``) when it cannot be had.

    ``CNNLAB_OFFLINE=1`` forbids the download, as it does for datasets.
    """
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"Invalid stored file name: {name!r} (a plain file name, e.g. 'x.json')")
    if missing not in ("say", "raise"):
        raise ValueError(f"Invalid missing value: {missing!r} (must be 'say' or 'raise')")
    path = Path(folder) / name
    if path.is_file():
        return json.loads(path.read_text(encoding="utf8"))
    if url is None:
        why = "no download address was given"
    elif _offline():
        why = "CNNLAB_OFFLINE is set"
    else:
        address = f"{url.rstrip('/')}/{name}"
        try:
            with urllib.request.urlopen(address, timeout=timeout) as response:
                return json.loads(response.read().decode("utf8"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            why = f"{address} could not be read ({reason})"
    message = f"{name} is not in {path.parent}/ and {why}: skipping what needs it."
    if missing == "raise":
        raise StoredUnavailable(message)
    print(message)
    return None
