"""Computed values for a page's prose: myst-nb's ``glue`` where the book is built, else a no-op.

A chapter puts a number into its text with ``{glue:text}`key``` (MyST), and the cell that
computed it calls :func:`glue`. Only the book build (and the tests in the authors' environment)
has myst-nb; a reader running a chapter in Colab or in a plain Jupyter has not, and should not
need it (it pulls in Sphinx). So :func:`glue` hands the value to ``myst_nb.glue`` when myst-nb is
installed, and otherwise only shows it when asked to (``display=True``), exactly as the notebook
would without the glue.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from IPython.display import display as show

__all__ = ["glue", "glue_values", "gluing"]


def gluing() -> bool:
    """Whether values are recorded for the book build, i.e. whether myst-nb is installed."""
    return importlib.util.find_spec("myst_nb") is not None


def glue(name: str, value: Any, display: bool = True) -> None:
    """Record ``value`` under ``name`` for the page's ``{glue:...}`` roles (myst-nb), if it can.

    Args:
        name: the key the prose refers to; must be a non-empty string.
        value: what to show; its display form (``repr``, or an HTML/PNG form) is what is glued.
        display: also show the value in the cell's output (``myst_nb.glue``'s default).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"Invalid glue name: {name!r} (must be a non-empty string)")
    if gluing():
        importlib.import_module("myst_nb").glue(name, value, display=display)
    elif display:
        show(value)


def glue_values(values: Mapping[str, Any] | None = None, /, *, fmt: str | None = None,
                **named: Any) -> None:
    """:func:`glue` each ``key: value`` of ``values`` and of the keyword arguments without showing
    it; ``fmt`` formats each value first (``format(value, fmt)``), otherwise a value is glued as
    ``str(value)``: ``glue_values(n_train="1,000", seeds=5)``."""
    for name, value in {**(values or {}), **named}.items():
        glue(name, format(value, fmt) if fmt is not None else str(value), display=False)
