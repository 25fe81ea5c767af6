"""cnnlab.glue: records values for myst-nb where it is installed, and needs nothing elsewhere."""

from __future__ import annotations

import importlib.util

import pytest
from IPython.core.interactiveshell import InteractiveShell

from cnnlab import glue as glue_module
from cnnlab.glue import glue, glue_values, gluing


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict, dict]]:
    """What reaches IPython's display publisher: (data, metadata) pairs."""
    shell = InteractiveShell.instance()
    out: list[tuple[dict, dict]] = []
    monkeypatch.setattr(shell.display_pub, "publish",
                        lambda data, metadata=None, **kw: out.append((data, metadata or {})))
    return out


def _without_myst_nb(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(glue_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "myst_nb" else real(name, *a))


def test_with_myst_nb_the_value_is_recorded_under_its_name(shown) -> None:
    assert gluing(), "the development environment has myst-nb"
    glue("acc", "81.2%", display=False)
    glue("n", 5)
    (hidden, meta), (visible, meta2) = shown
    assert meta["scrapbook"] == {"name": "acc", "mime_prefix": "application/papermill.record/"}
    assert hidden == {"application/papermill.record/text/plain": "'81.2%'"}
    assert meta2["scrapbook"]["name"] == "n" and visible == {"text/plain": "5"}


def test_without_myst_nb_nothing_is_recorded_and_display_still_shows(monkeypatch, shown) -> None:
    _without_myst_nb(monkeypatch)
    assert not gluing()
    glue("acc", "81.2%", display=False)
    assert shown == []  # Colab: a glue that only feeds the prose shows nothing
    glue("n", 5)
    assert len(shown) == 1 and shown[0][0]["text/plain"] == "5"
    assert "scrapbook" not in shown[0][1]


def test_glue_values_formats_and_hides_every_value(shown) -> None:
    glue_values({"a": 0.5, "b": 0.25}, fmt=".0%")
    glue_values({"c": 3})
    names = [(m["scrapbook"]["name"], d["application/papermill.record/text/plain"])
             for d, m in shown]
    assert names == [("a", "'50%'"), ("b", "'25%'"), ("c", "'3'")]


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_bad_name_is_named_in_the_error(name) -> None:
    with pytest.raises(ValueError, match=f"Invalid glue name: {name!r}"):
        glue(name, 1)


def test_glue_values_takes_keyword_arguments_too(shown) -> None:
    glue_values({"a": 1}, b=2, **{"c_d": "x"})
    assert [m["scrapbook"]["name"] for _, m in shown] == ["a", "b", "c_d"]
