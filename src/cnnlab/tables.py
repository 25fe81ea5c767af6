"""Tables as text for a page: Markdown that a notebook displays (``IPython.display.Markdown``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["and_list", "markdown_table"]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (``|`` in cells escaped); show it with ``IPython.display.Markdown``."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"Invalid row {list(row)!r}: {len(row)} cells for {len(header)} columns")
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)


def and_list(items: Sequence[str], conjunction: str = "and") -> str:
    """Items as prose: ``"a"``, ``"a and b"``, ``"a, b and c"`` (or another ``conjunction``,
    e.g. ``"or"``)."""
    if not items:
        raise ValueError("Invalid items: none (need at least one to list)")
    items = [str(item) for item in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"
