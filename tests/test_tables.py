"""cnnlab.tables: Markdown tables with their cells escaped."""

import pytest

from cnnlab.tables import markdown_table


def test_markdown_table() -> None:
    table = markdown_table(["a", "b"], [[1, "x|y"], ["2", "line\nbreak"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 | line break |"]
    with pytest.raises(ValueError, match="Invalid row"):
        markdown_table(["a", "b"], [[1]])


def test_and_list_words_one_two_or_more_items():
    from cnnlab.tables import and_list
    assert and_list(["a"]) == "a"
    assert and_list(["a", "b"]) == "a and b"
    assert and_list(["a", "b", "c"]) == "a, b and c"
    assert and_list([1, 2, 3], "or") == "1, 2 or 3"
    with pytest.raises(ValueError, match="Invalid items: none"):
        and_list([])
