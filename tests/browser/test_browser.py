"""The built site as a reader's browser sees it: Playwright drives Debian's Chromium over every
page, served on 127.0.0.1, with no network beyond that origin.

One crawl (module fixture ``visits``) loads every page once, waits for MathJax and the widget
manager, records every request, response and console message, moves every static slider and
saves a full-page screenshot to ``_build/screenshots/`` (beside the site's ``html/``); the
tests below each judge one aspect of those records, so a failure names the page and what went wrong.

The Chinese edition (``zh/``) is crawled the same way, and its own checks compare each Chinese
page with its English one: Chinese prose, a CJK font that renders, the same glued values, a
language switcher that round-trips, the theme's strings in Chinese, and search in Chinese.

Skipped (with the reason) only where Chromium is not installed; a missing site fails.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import yaml

from .conftest import ROOT, check_site, load_script

i18n = load_script("i18n")

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update"]
# Logged on every jupyter-book 1.0.4 page (sphinx-thebe declares THEBE_JS_URL twice; the theme's
# mode switch): known and harmless (see shared/GUIDE.md). Anything else fails.
KNOWN_CONSOLE_ERRORS = ("Identifier 'THEBE_JS_URL' has already been declared",
                        "Got invalid theme mode")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
TIMEOUT_MS = 60_000


@dataclass
class Visit:
    """What one page did in the browser."""

    page: str  # path of the page in the site, e.g. book/dropout.html
    doc: str | None  # the chapter's document name when the page is a chapter
    lang: str = "en"  # "zh" for the Chinese edition's pages (under zh/)
    bad_status: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    offsite: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # errors other than the known ones
    broken_images: list[str] = field(default_factory=list)
    figures: int = 0  # loaded images in output cells, figures and sliders
    sliders: int = 0
    slider_problems: list[str] = field(default_factory=list)
    colab: list[str] = field(default_factory=list)  # hrefs of Colab launch links
    widget_problems: list[str] = field(default_factory=list)
    widget_views: int = 0
    overflow: list[str] = field(default_factory=list)  # outputs wider than the text column
    narrow_sliders: list[str] = field(default_factory=list)  # slider frames narrower than it
    dead_controls: list[str] = field(default_factory=list)  # widget buttons without a kernel
    own_bytes: int = 0  # bytes loaded from outside _static/ (the page's own weight)
    glued: list[str] = field(default_factory=list)  # the glued values shown, in page order
    switcher: str | None = None  # the language switcher's target, as an absolute URL
    english: list[str] = field(default_factory=list)  # prose blocks with no Chinese in them
    cjk_renders: bool = False  # two different CJK characters draw differently (a font has them)
    html_lang: str = ""
    search_label: str = ""  # the theme's search button, as a reader sees it
    screenshot: Path | None = None
    error: str | None = None  # the crawl itself failed on this page


def _chromium() -> str:
    path = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    if not path:
        pytest.skip(f"Chromium is not installed ({CHROMIUM}; Debian: apt-get install chromium, "
                    "or bash scripts/system-deps.sh); `playwright install` cannot download "
                    "a browser here")
    return path


# JavaScript run in the page once it has settled.
_PAGE_FACTS = """(viewType) => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                     .map(i => (i.getAttribute('src') || '').slice(0, 120));
  const figs = Array.from(document.querySelectorAll(
      'main .cell_output img, main figure img, main .cnnlab-slider img'))
      .filter(i => i.complete && i.naturalWidth > 0);
  const views = Array.from(document.querySelectorAll(`script[type="${viewType}"]`));
  const widgetProblems = [];
  views.forEach((v, k) => {
    let subs = 0, prev = v.previousElementSibling;
    while (prev && prev.classList.contains('widget-subarea')) {
      const r = prev.getBoundingClientRect();
      if (!(r.width > 0 && r.height > 0)) widgetProblems.push(`widget ${k} rendered empty`);
      subs += 1; prev = prev.previousElementSibling;
    }
    if (subs !== 1) widgetProblems.push(`widget ${k} rendered ${subs} times (expected once)`);
  });
  const text = document.body.innerText;
  if (text.includes('"model_id"') || text.includes('"version_major"'))
    widgetProblems.push('raw widget JSON is visible on the page');
  const colab = Array.from(document.querySelectorAll('a[href*="colab.research.google.com"]'))
      .map(a => a.href);
  // The text column, and every output that is wider than it or scrolls sideways.
  const column = document.querySelector('article.bd-article') || document.querySelector('main');
  const colBox = column.getBoundingClientRect();
  const overflow = [];
  document.querySelectorAll('div.cell_output, div.cell_output pre, div.cell_output table')
    .forEach((el, k) => {
      const r = el.getBoundingClientRect();
      const what = `${el.tagName.toLowerCase()} ${k} ("${el.innerText.slice(0, 40)}")`;
      if (r.right > colBox.right + 1)
        overflow.push(`${what} ends ${Math.round(r.right - colBox.right)} px past the column`);
      else if (el.scrollWidth > el.clientWidth + 1)
        overflow.push(`${what} is ${el.scrollWidth - el.clientWidth} px wider than its box`);
    });
  // Static slider frames: as wide as the column, and rendered from at least that many pixels.
  const narrow = [];
  document.querySelectorAll('.cnnlab-slider').forEach((root, k) => {
    const img = Array.from(root.querySelectorAll('img.cnnlab-slider-img'))
        .find(i => getComputedStyle(i).display !== 'none');
    if (!img) { narrow.push(`slider ${k} shows no image`); return; }
    const w = img.getBoundingClientRect().width, cw = root.parentElement.clientWidth;
    if (w < 0.98 * cw) narrow.push(`slider ${k}: image ${Math.round(w)} px in a ${cw} px column`);
    if (img.naturalWidth < cw)
      narrow.push(`slider ${k}: frame rendered ${img.naturalWidth} px, upscaled to ${cw} px`);
  });
  const dead = Array.from(document.querySelectorAll(
      'button.jupyter-button, .widget-button, .jupyter-widgets button'))
      .map(b => `ipywidgets button "${b.innerText.trim()}"`);
  // The Chinese edition: glued values, the switcher, prose blocks without any Chinese (code,
  // formulas, glued values and outputs aside), and whether a CJK font draws two characters.
  const article = document.querySelector('article.bd-article') || document.body;
  const glued = Array.from(article.querySelectorAll('.pasted-text')).map(e => e.textContent);
  const sw = document.querySelector('a.btn-cnnlab-lang');
  const cjk = /[\u3400-\u9fff]/;
  const english = [];
  article.querySelectorAll('p, li, h1, h2, h3, h4, th, td, .admonition-title, summary, caption')
    .forEach(el => {
      if (el.closest('.cell_output, .cell_input, pre, .highlight, dl.py, .notranslate'))
        return;
      const c = el.cloneNode(true);
      c.querySelectorAll('code, .pasted-text, .math, mjx-container, script, ul, ol, p, ' +
                         '.headerlink').forEach(n => n.remove());
      const t = c.textContent.trim();
      if ((t.match(/[A-Za-z]{3,}/g) || []).length >= 4 && !cjk.test(t))
        english.push(t.slice(0, 90));
    });
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 48;
  const g = canvas.getContext('2d');
  const family = getComputedStyle(article.querySelector('p') || document.body).fontFamily;
  const draw = ch => { g.clearRect(0, 0, 48, 48); g.font = `36px ${family}`;
                       g.fillText(ch, 4, 40); return g.getImageData(0, 0, 48, 48).data.join(); };
  const search = document.querySelector('.search-button-field, button.search-button');
  return {broken, figures: figs.length, views: views.length, widgetProblems, colab,
          sliders: document.querySelectorAll('.cnnlab-slider').length,
          overflow, narrow, dead, glued, switcher: sw ? sw.href : null, english,
          cjkRenders: draw('中') !== draw('国'), htmlLang: document.documentElement.lang,
          searchLabel: search ? (search.innerText || search.title || '').trim() : ''};
}"""

_VISIBLE_FRAME = """(root) => {
  const shown = Array.from(root.querySelectorAll('img.cnnlab-slider-img'))
      .filter(i => getComputedStyle(i).display !== 'none');
  return shown.map(i => ({src: i.currentSrc || i.src,
                          ok: i.complete && i.naturalWidth > 0
                              && i.getBoundingClientRect().height > 0}));
}"""


def _move_sliders(page, visit: Visit) -> None:
    """Move each static slider one step, as a reader would (keyboard), and check that another
    loaded image is shown in its place."""
    roots = page.locator(".cnnlab-slider")
    for k in range(roots.count()):
        root = roots.nth(k)
        slider = root.locator("input.cnnlab-slider-input")
        before = root.evaluate(_VISIBLE_FRAME)
        value, top = slider.evaluate("i => [Number(i.value), Number(i.max)]")
        slider.scroll_into_view_if_needed()
        slider.focus()
        page.keyboard.press("ArrowLeft" if value >= top else "ArrowRight")
        after = root.evaluate(_VISIBLE_FRAME)
        moved = slider.evaluate("i => Number(i.value)")
        name = f"slider {k}"
        if top < 1:
            visit.slider_problems.append(f"{name} has a single frame: moving it changes nothing")
        elif moved == value:
            visit.slider_problems.append(f"{name} did not move (value stays {value})")
        elif len(before) != 1 or len(after) != 1:
            visit.slider_problems.append(f"{name} shows {len(before)} then {len(after)} "
                                         "images (expected exactly one)")
        elif not after[0]["ok"]:
            visit.slider_problems.append(f"{name}: the image shown after moving is not loaded")
        elif after[0]["src"] == before[0]["src"]:
            visit.slider_problems.append(f"{name}: the image did not change when moved "
                                         f"from {value} to {moved}")


def _quiet(page, inflight: dict, quiet_ms: int = 500, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until no request of the page has been in flight for ``quiet_ms``. (Playwright's
    "networkidle" can miss requests served from Chromium's memory cache and then never fire.)"""
    waited, still = 0, 0
    while still < quiet_ms:
        if waited > timeout_ms:
            raise TimeoutError(f"requests still in flight after {timeout_ms} ms: "
                               f"{sorted(inflight.values())[:5]}")
        page.wait_for_timeout(100)
        waited += 100
        still = 0 if inflight else still + 100


def _visit(browser, base: str, site: Path, path: Path, doc: str | None, shots: Path) -> Visit:
    """Visit one page in a fresh browser context (as a first-time reader: nothing cached)."""
    rel = path.relative_to(site).as_posix()
    visit = Visit(rel, doc, "zh" if rel.startswith("zh/") else "en")
    origin = urlsplit(base).netloc
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(r) -> None:
        # Nothing leaves the machine: off-origin requests are recorded (below) and aborted.
        if urlsplit(r.request.url).netloc in ("", origin):
            r.continue_()
        else:
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    inflight: dict[int, str] = {}

    def on_request(request) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        inflight[id(request)] = request.url
        if parts.netloc != origin:
            visit.offsite.append(request.url)

    def on_done(request) -> None:
        inflight.pop(id(request), None)

    def on_response(response) -> None:
        parts = urlsplit(response.url)
        if parts.netloc != origin:
            return
        if response.status != 200:
            visit.bad_status.append(f"{response.status} {parts.path}")
        # each edition (English at the root, Chinese under zh/) has its own shared assets
        if not re.match(r"/(zh/)?(_static/|searchindex\.js$)", parts.path):
            visit.own_bytes += int(response.headers.get("content-length", 0))

    def on_failed(request) -> None:
        inflight.pop(id(request), None)
        if urlsplit(request.url).netloc == origin:
            visit.failed.append(f"{request.failure} {request.url}")

    def on_console(msg) -> None:
        if msg.type == "error" and not any(k in msg.text for k in KNOWN_CONSOLE_ERRORS):
            visit.console.append(f"console.error: {msg.text}")

    def on_pageerror(exc) -> None:
        if not any(k in str(exc) for k in KNOWN_CONSOLE_ERRORS):
            visit.console.append(f"uncaught: {exc}")

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("requestfinished", on_done)
    page.on("console", on_console)
    page.on("pageerror", on_pageerror)
    redirect = [url for tag, url in check_site.parse(path).refs if tag == "meta"]
    try:
        if redirect:
            # A redirect page (index.html): it must land on the page it names, which is
            # checked on its own visit.
            target = urljoin(base + rel, redirect[0]).split("#")[0]
            page.goto(base + rel, wait_until="commit", timeout=TIMEOUT_MS)
            page.wait_for_url(target, wait_until="load", timeout=TIMEOUT_MS)
            page.wait_for_timeout(200)
            return visit
        page.goto(base + rel, wait_until="load", timeout=TIMEOUT_MS)
        _quiet(page, inflight)
        page.evaluate("() => (window.MathJax && MathJax.startup && MathJax.startup.promise)"
                      " ? MathJax.startup.promise.then(() => true) : true")
        views = page.locator(f'script[type="{WIDGET_VIEW}"]').count()
        if views:
            try:
                page.wait_for_function(
                    "n => document.querySelectorAll('.widget-subarea').length >= n",
                    arg=views, timeout=30_000)
            except Exception:  # noqa: BLE001 - reported below as a widget problem
                pass
        page.evaluate("() => document.fonts.ready.then(() => true)")
        _quiet(page, inflight)
        try:
            page.wait_for_function("() => Array.from(document.images).every(i => i.complete)",
                                   timeout=15_000)
        except Exception:  # noqa: BLE001 - the incomplete images are reported as broken
            pass
        page.wait_for_timeout(300)  # the theme's layout transitions, before the screenshot
        facts = page.evaluate(_PAGE_FACTS, WIDGET_VIEW)
        visit.broken_images = facts["broken"]
        visit.figures = facts["figures"]
        visit.widget_views = facts["views"]
        visit.widget_problems = facts["widgetProblems"]
        visit.colab = facts["colab"]
        visit.sliders = facts["sliders"]
        visit.overflow = facts["overflow"]
        visit.narrow_sliders = facts["narrow"]
        visit.dead_controls = facts["dead"]
        visit.glued, visit.switcher, visit.english = (facts["glued"], facts["switcher"],
                                                      facts["english"])
        visit.cjk_renders, visit.html_lang = facts["cjkRenders"], facts["htmlLang"]
        visit.search_label = facts["searchLabel"]
        shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
        page.screenshot(path=str(shot), full_page=True)
        visit.screenshot = shot
        _move_sliders(page, visit)
        page.wait_for_timeout(200)  # let a late request or console error arrive
    except Exception as exc:  # noqa: BLE001 - every page is visited; the failure is reported
        visit.error = f"{type(exc).__name__}: {exc}"
    finally:
        context.close()
    return visit


@pytest.fixture(scope="module")
def visits(site: Path, server: str, chapters: list[str]) -> dict[str, Visit]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    docs = {f"{lang}{d}.html": d for d in chapters for lang in ("", "zh/")}
    shots = site.parent / "screenshots"
    if shots.exists():
        shutil.rmtree(shots)
    shots.mkdir(parents=True)
    out: dict[str, Visit] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        for path in check_site.html_files(site):
            rel = path.relative_to(site).as_posix()
            out[rel] = _visit(browser, server, site, path, docs.get(rel), shots)
        browser.close()
    return out


def _fail(visits: dict[str, Visit], attr: str, what: str) -> None:
    bad = {p: getattr(v, attr) for p, v in visits.items() if getattr(v, attr)}
    if bad:
        lines = [f"{p}: {x}" for p, items in bad.items() for x in items[:10]]
        pytest.fail(f"{what} on {len(bad)} page(s):\n" + "\n".join(lines), pytrace=False)


def test_every_page_loads(visits: dict[str, Visit], chapters: list[str]) -> None:
    errors = [f"{p}: {v.error}" for p, v in visits.items() if v.error]
    assert not errors, "the browser could not visit:\n" + "\n".join(errors)
    missing = [d for d in chapters if f"{d}.html" not in visits]
    assert not missing, f"chapters with no page: {missing}"


def test_every_response_is_200(visits: dict[str, Visit]) -> None:
    _fail(visits, "bad_status", "responses other than 200")


def test_no_failed_request(visits: dict[str, Visit]) -> None:
    _fail(visits, "failed", "failed requests")


def test_nothing_is_loaded_from_outside_the_site(visits: dict[str, Visit]) -> None:
    _fail(visits, "offsite", "requests that leave the origin")


def test_no_console_errors(visits: dict[str, Visit]) -> None:
    _fail(visits, "console", "console errors (other than the two known jupyter-book ones)")


def test_no_broken_images(visits: dict[str, Visit]) -> None:
    _fail(visits, "broken_images", "broken images")


def _is_notebook(doc: str) -> bool:
    """Executable chapters are notebooks; a markdown page (the outlook essay) has no code to run,
    so it needs neither a figure nor a Colab button."""
    return (ROOT / f"{doc}.ipynb").is_file()


def test_every_chapter_shows_a_figure(visits: dict[str, Visit]) -> None:
    bare = [p for p, v in visits.items()
            if v.doc and _is_notebook(v.doc) and v.figures == 0 and not v.error]
    if bare:
        pytest.fail(f"chapter pages without a figure (a loaded image in an output, a figure or "
                    f"a slider): {bare}", pytrace=False)


def test_widgets_render_as_widgets(visits: dict[str, Visit]) -> None:
    _fail(visits, "widget_problems", "widgets that did not render as widgets")


def test_no_output_is_wider_than_the_column(visits: dict[str, Visit]) -> None:
    _fail(visits, "overflow", "outputs wider than the text column")


def test_static_sliders_fill_the_column(visits: dict[str, Visit]) -> None:
    _fail(visits, "narrow_sliders", "static sliders narrower than the column")


def test_no_control_that_needs_a_kernel(visits: dict[str, Visit]) -> None:
    _fail(visits, "dead_controls", "controls that do nothing on the static page")


def test_static_sliders_change_their_figure(visits: dict[str, Visit]) -> None:
    _fail(visits, "slider_problems", "static sliders that do not work")


def test_colab_links_point_at_the_chapter_notebook(visits: dict[str, Visit]) -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf8"))
    repo = config["repository"]
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    org_repo = urlsplit(repo["url"]).path.strip("/").removesuffix(".git")
    prefix = f"{colab}/github/{org_repo}/blob/{repo.get('branch', 'main')}/"
    book = (repo.get("path_to_book") or "").strip("/")
    problems = []
    for page, v in visits.items():
        if not v.doc:
            continue
        # A Chinese page opens the Chinese notebook (scripts/i18n.py writes it from the catalogs).
        notebook = (f"{i18n.NOTEBOOKS.relative_to(ROOT).as_posix()}/{v.doc}.ipynb"
                    if v.lang == "zh" else f"{book}/{v.doc}.ipynb".lstrip("/"))
        if not _is_notebook(v.doc):
            if not (ROOT / f"{v.doc}.md").is_file():
                problems.append(f"{page}: neither {v.doc}.ipynb nor {v.doc}.md exists")
            elif v.colab:
                problems.append(f"{page}: a markdown page with Colab links: {v.colab}")
            continue
        if len(v.colab) != 1:
            problems.append(f"{page}: {len(v.colab)} Colab links (expected 1): {v.colab}")
        elif not v.colab[0].endswith("/" + notebook) or v.colab[0] != prefix + notebook:
            problems.append(f"{page}: Colab link {v.colab[0]} is not {prefix + notebook}")
    assert not problems, "\n".join(problems)


def test_chapter_weight_as_loaded(visits: dict[str, Visit]) -> None:
    """What the browser actually loaded per chapter, shared _static/ assets excluded."""
    limit = check_site.MAX_PAGE_MB * check_site.MB
    for p, v in sorted(visits.items()):
        if v.doc:
            print(f"{p}: {v.own_bytes / check_site.MB:.2f} MB loaded besides _static/")
    heavy = [f"{p}: {v.own_bytes / check_site.MB:.2f} MB" for p, v in visits.items()
             if v.doc and v.own_bytes > limit]
    assert not heavy, f"chapters over {check_site.MAX_PAGE_MB} MB as loaded: {heavy}"


def test_screenshots_saved(visits: dict[str, Visit]) -> None:
    missing = [p for p, v in visits.items() if v.doc and not (v.screenshot and
                                                              v.screenshot.is_file())]
    assert not missing, f"no screenshot of: {missing}"


# ----------------------------------------------------------------------- the Chinese edition
def _pairs(visits: dict[str, Visit]) -> list[tuple[Visit, Visit]]:
    """(English page, Chinese page) for every page of the site that has both."""
    return [(v, visits[f"zh/{p}"]) for p, v in visits.items()
            if v.lang == "en" and v.doc and f"zh/{p}" in visits]


def test_every_page_has_its_chinese_page(visits: dict[str, Visit], chapters: list[str]) -> None:
    missing = [d for d in chapters if f"zh/{d}.html" not in visits]
    assert not missing, f"pages with no Chinese page: {missing} (make book builds zh/)"


def test_chinese_pages_are_in_chinese(visits: dict[str, Visit]) -> None:
    _fail({p: v for p, v in visits.items() if v.lang == "zh"}, "english",
          "paragraphs of English prose on Chinese pages")


def test_a_cjk_font_renders_on_chinese_pages(visits: dict[str, Visit]) -> None:
    bad = [p for p, v in visits.items() if v.lang == "zh" and v.doc and not v.cjk_renders]
    assert not bad, f"'中' and '国' draw the same (no CJK font, boxes instead) on: {bad}"


def test_the_switcher_round_trips(visits: dict[str, Visit], server: str) -> None:
    problems = []
    for en, zh in _pairs(visits):
        if en.switcher != server + zh.page:
            problems.append(f"{en.page}: the switcher goes to {en.switcher}, not {zh.page}")
        if zh.switcher != server + en.page:
            problems.append(f"{zh.page}: the switcher goes to {zh.switcher}, not {en.page}")
    assert _pairs(visits) and not problems, "\n".join(problems)


def test_glued_values_are_the_same_in_both_editions(visits: dict[str, Visit]) -> None:
    """Every number pasted into the English prose appears on the Chinese page too, from the same
    execution (a worded result is in Chinese words there, with the same numbers; the order of
    the values may change with the sentence)."""
    def numbers(v: Visit) -> list[str]:
        return sorted(n for text in v.glued for n in i18n.glue_template(text)[1])

    problems = []
    for en, zh in _pairs(visits):
        a, b = numbers(en), numbers(zh)
        if len(en.glued) != len(zh.glued) or a != b:
            problems.append(f"{zh.page}: {len(zh.glued)} glued values, {len(en.glued)} in "
                            f"English; numbers only in English: {sorted(set(a) - set(b))[:8]}, "
                            f"only in Chinese: {sorted(set(b) - set(a))[:8]}")
    assert not problems, "\n".join(problems)
    assert any(en.glued for en, _ in _pairs(visits)), "no glued value found on any page"


def test_chinese_pages_use_the_themes_chinese_strings(visits: dict[str, Visit]) -> None:
    cjk = re.compile(r"[\u3400-\u9fff]")
    bad = [f"{p}: lang={v.html_lang!r}, search button {v.search_label!r}"
           for p, v in visits.items() if v.lang == "zh" and v.doc
           and not (v.html_lang.startswith("zh") and cjk.search(v.search_label))]
    assert not bad, "Chinese pages with the theme's English strings:\n" + "\n".join(bad)


@pytest.mark.parametrize("word", ["正则化", "批量归一化"])
def test_search_finds_chinese_words(site: Path, server: str, word: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(f"{server}zh/search.html?q={word}", wait_until="load", timeout=TIMEOUT_MS)
        page.wait_for_function("() => document.querySelectorAll('#search-results li').length"
                               " > 0 || /\\d/.test((document.querySelector('#search-results "
                               "p') || {}).innerText || '')", timeout=TIMEOUT_MS)
        hits = page.locator("#search-results li").count()
        browser.close()
    assert hits > 0, f"searching the Chinese edition for {word} finds nothing"
