"""cnnlab.tables: Markdown tables with their cells escaped."""

import pytest

from cnnlab.tables import markdown_table


def test_markdown_table() -> None:
    table = markdown_table(["a", "b"], [[1, "x|y"], ["2", "line\nbreak"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 | line break |"]
    with pytest.raises(ValueError, match="Invalid row"):
        markdown_table(["a", "b"], [[1]])
