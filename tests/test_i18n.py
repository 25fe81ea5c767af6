"""The Chinese edition (中文版): the catalogs are complete and follow the English source, the
Chinese notebooks are current and run the English code, and the helpers of scripts/i18n.py and
scripts/sphinx_ext/cnnlab_i18n.py do what they say. The built pages are checked in
tests/browser (every Chinese page is Chinese, its numbers equal the English page's, the switcher
round-trips)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .scripts import load_script

ROOT = Path(__file__).resolve().parent.parent


i18n = load_script("i18n")
ext = load_script("scripts/sphinx_ext/cnnlab_i18n.py")
check_site = load_script("check_site")

PAGES = sorted(p.relative_to(i18n.CATALOGS).with_suffix("").as_posix()
               for p in i18n.CATALOGS.rglob("*.po"))


# ----------------------------------------------------------------------- the catalogs as committed
def test_every_page_of_the_book_has_a_catalog() -> None:
    import yaml

    toc = ROOT / "_toc.yml"
    root = yaml.safe_load(toc.read_text(encoding="utf8"))["root"]
    assert sorted([root, *check_site.chapters(toc)]) == PAGES


@pytest.mark.parametrize("page", PAGES)
def test_every_message_is_translated(page: str) -> None:
    problems = i18n.catalog_problems(i18n.CATALOGS / f"{page}.po")
    assert not problems, (f"{len(problems)} messages of {page} a Chinese reader would see in "
                          "English or broken:\n" + "\n".join(map(str, problems[:20])))


def test_the_catalogs_follow_the_english_source(tmp_path: Path) -> None:
    """Extracts the English messages now (a gettext build, ~20 s) and compares them with the
    catalogs: an English edit not merged with `python scripts/i18n.py update` fails here."""
    i18n.extract(tmp_path / "gettext")
    stale = i18n.stale_catalogs(tmp_path / "gettext")
    assert not stale, ("the catalogs are behind the English text (run `python scripts/i18n.py "
                       "update`, then translate what is new or fuzzy):\n" + "\n".join(stale))


def test_the_chinese_notebooks_are_current() -> None:
    assert not i18n.stale_notebooks(), "run: python scripts/i18n.py notebooks"


@pytest.mark.parametrize("chapter", i18n.chapters(), ids=lambda p: p.stem)
def test_a_chinese_notebook_runs_the_english_code_and_reads_chinese(chapter: Path) -> None:
    english = json.loads(chapter.read_text(encoding="utf8"))
    chinese = json.loads((i18n.NOTEBOOKS / "book" / chapter.name).read_text(encoding="utf8"))
    assert len(chinese["cells"]) == len(english["cells"])
    for en, zh in zip(english["cells"], chinese["cells"]):
        assert zh["cell_type"] == en["cell_type"]
        if en["cell_type"] == "code":
            assert zh["source"] == en["source"] and zh["metadata"] == en["metadata"]
    # every message of the page's catalog reaches the notebook's markdown
    catalog = i18n.translations(f"book/{chapter.stem}")
    markdown = "\n".join("".join(c["source"]) for c in english["cells"]
                         if c["cell_type"] == "markdown")
    _, used = i18n.translate_markdown(markdown, catalog)
    missed = sorted(set(catalog) - set(used))
    assert not missed, f"messages of {chapter.stem} not found in its notebook: {missed[:5]}"


# ----------------------------------------------------------------------- the helpers, by hand
def test_markup_difference_names_what_a_translation_lost_or_added() -> None:
    en = "Dropout {glue:text}`verdict` by {glue:text}`diff` (see {doc}`methods`, `p = 0.5`, $p$)."
    assert i18n.markup_difference(en, "Dropout {glue:text}`diff`，{glue:text}`verdict`（见 "
                                  "{doc}`methods`，`p = 0.5`，$p$）。") == ""
    lost = i18n.markup_difference(en, "Dropout {glue:text}`verdict`（见 {doc}`methods`，$p$）。")
    assert "missing" in lost and "{glue:text}`diff`" in lost and "`p = 0.5`" in lost
    assert "added ['`x`']" in i18n.markup_difference("a b", "甲 `x` 乙")
    assert i18n.markup_difference("[the methods](methods.md)", "[方法](methods.md)") == ""
    assert "](methods.md)" in i18n.markup_difference("[m](methods.md)", "[方法](method.md)")


def test_catalog_problems_name_the_file_and_the_english_text(tmp_path: Path) -> None:
    po = tmp_path / "page.po"
    po.write_text('msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
                  'msgid "Done."\nmsgstr "完成。"\n\n'
                  'msgid "Not yet."\nmsgstr ""\n\n'
                  '#, fuzzy\nmsgid "Changed."\nmsgstr "旧的。"\n\n'
                  'msgid "Acc {glue:text}`acc`."\nmsgstr "准确率。"\n\n'
                  'msgid "**You will learn:** this."\nmsgstr "**你将学到：**本书。"\n\n'
                  'msgid "**Bold**: fine."\nmsgstr "**粗体**：好。"\n\n'
                  'msgid "1. First rule"\nmsgstr "1. 第一条"\n\n'
                  'msgid "2. Second rule"\nmsgstr "2\\\\. 第二条"\n', encoding="utf8")
    problems = i18n.catalog_problems(po)
    assert [(p.msgid, p.why.split(":")[0]) for p in problems] == [
        ("Not yet.", "untranslated"), ("Changed.", "fuzzy"), ("Acc {glue:text}`acc`.",
         "markup differs"), ("**You will learn:** this.", "bold/italic differs"),
        ("1. First rule", "starts like a list item, quote or heading")]
    assert all(str(po) in str(p) for p in problems)


def test_translate_markdown_replaces_whole_messages_across_line_breaks() -> None:
    source = ("## Small data\n\nThe network\nmemorizes the labels.\n\n- **Here.** Nothing needs "
              "a kernel.\n- Small data again\n")
    catalog = {"Small data": "小数据", "The network memorizes the labels.": "网络记住了标签。",
               "**Here.** Nothing needs a kernel.": "**在这里。** 不需要内核。",
               "Small data again": "再来小数据"}
    text, used = i18n.translate_markdown(source, catalog)
    assert text == ("## 小数据\n\n网络记住了标签。\n\n- **在这里。** 不需要内核。\n- 再来小数据\n")
    assert sorted(used) == sorted(catalog)
    # a message is replaced only as a whole unit, not inside a longer sentence
    longer = "Small data sets are cheap.\n"
    assert i18n.translate_markdown(longer, {"Small data": "小数据"}) == (longer, [])


def test_the_switcher_goes_to_the_same_page_in_the_other_edition() -> None:
    assert ext.switcher_url("book/dropout", "zh") == "../zh/book/dropout.html"
    assert ext.switcher_url("book/dropout", "..") == "../../book/dropout.html"
    assert ext.switcher_url("index", "zh") == "zh/index.html"


@pytest.mark.parametrize("text, template, numbers", [
    ("5 of 8 runs collapsed", "{0} of {1} runs collapsed", ["5", "8"]),
    ("helps: +12.1 points (95% CI -0.0 to +23.8)", "helps: {0} points ({1}% CI {2} to {3})",
     ["+12.1", "95", "-0.0", "+23.8"]),
    ("1,000 images, width 16, lr = 3e-4, 1.09x", "{0} images, width {1}, lr = {2}, {3}x",
     ["1,000", "16", "3e-4", "1.09"]),
    ("conv2d with {braces}", "conv2d with {{braces}}", []),
])
def test_a_glued_text_becomes_a_template_and_back(text: str, template: str,
                                                  numbers: list[str]) -> None:
    assert ext.glue_template(text) == (template, numbers)
    assert ext.fill_template(template, numbers) == text
    # a translation may move the numbers; each comes back where its hole is
    assert ext.fill_template("{1} 中的 {0}", ["5", "8"]) == "8 中的 5"


def test_the_glued_text_catalog_is_translated() -> None:
    problems = i18n.catalog_problems(i18n.GLUE)
    assert i18n.GLUE.exists() and not problems, "\n".join(map(str, problems[:20]))


def test_the_search_word_list_holds_the_glossarys_chinese_terms() -> None:
    terms = i18n.glossary_terms()
    for term in ("正则化", "批量归一化", "权重裁剪", "过拟合", "小批量", "卷积层"):
        assert term in terms
    assert not [t for t in terms if not re.search("[\u4e00-\u9fff]", t) or "、" in t]
