"""The built book, as a reader's browser sees it: headless Chromium opens every page.

For each HTML page of the build (``$QHD_BOOK_HTML``, default ``_build/html``) it checks that no
JavaScript error or failed resource load happens, that every image loaded, that every equation was
typeset by MathJax (no raw TeX, no MathJax error), that every Jupyter widget rendered, and that
every link to the book itself reaches an existing page and anchor; external links are only checked
to be well formed (the network is closed). Every kernel-free widget (`qhd_lib.sphinx_explorers`)
must respond: changing each of its selectors shows other pictures (or another text), all loaded.
A full-page screenshot of each page goes to ``screenshots/`` next to the HTML folder
(``_build/screenshots``) for a person to look at.

The browser asks for everything at ``http://book.test/``, answered from the HTML folder, and the
pages' CDN scripts (MathJax; require.js and the Jupyter widget manager where a page has widgets)
are answered from the same npm packages, fetched once with ``npm pack`` into
``<user cache>/qhd-book/cdn``; any other request is refused. Chromium is Debian's ``chromium``
(``$QHD_CHROMIUM`` to use another binary), driven by Playwright, which downloads no browser here.

Skipped when the book is not built; when Chromium, Playwright or npm is missing it is skipped on a
developer's machine and fails in CI (``CI`` set), where they must be installed.
"""

from __future__ import annotations

import importlib.util
import json
import mimetypes
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

from qhd_lib.widgets import EXPLORERS

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Route

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = Path(os.environ.get("QHD_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SCREENSHOT_DIR = HTML_DIR.parent / "screenshots"
BASE_URL = "http://book.test/"
PAGE_TIMEOUT_MS = 60_000
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 16_000  # Chromium cannot capture taller images in one piece

#: CDN URL prefixes in the built pages and the npm package (name@version-or-range) that serves them.
JSDELIVR_NPM = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[\w.-]+/)?[\w.-]+@[\w.^~-]+)/")
CDNJS_REQUIREJS = re.compile(
    r"https://cdnjs\.cloudflare\.com/ajax/libs/require\.js/([\d.]+)/require\.min\.js"
)
INTEGRITY = re.compile(r'\s(?:integrity|crossorigin)="[^"]*"')

#: Messages the browser shows for every Jupyter Book 1.x site, harmless and not ours to fix.
KNOWN_HARMLESS = {
    r"Identifier 'THEBE_JS_URL' has already been declared": (
        "sphinx-thebe 0.3.1 on Sphinx 7.4 writes its inline config twice; the first copy works"
    ),
    r"/@jupyter-widgets/html-manager/dist/\w+\.(woff2?|ttf|eot|svg)$": (
        "html-manager 1.0.6 looks for its icon fonts next to the page (404 on any host); "
        "widgets still work"
    ),
    r"/favicon\.ico$": "the browser asks for a favicon the book does not have",
}
REDIRECT = re.compile(r'<meta http-equiv="Refresh" content="0; url=([^"]+)"')


def html_files() -> list[str]:
    """The HTML files of the build, relative to its root (``_static`` and ``_sources`` hold
    none of ours)."""
    if not HTML_DIR.is_dir():
        return []
    return sorted(
        path.relative_to(HTML_DIR).as_posix()
        for path in HTML_DIR.rglob("*.html")
        if not path.relative_to(HTML_DIR).parts[0].startswith("_")
    )


def is_redirect(page: str) -> bool:
    return REDIRECT.search((HTML_DIR / page).read_text(encoding="utf-8")) is not None


PAGES = [page for page in html_files() if not is_redirect(page)]
REDIRECTS = [page for page in html_files() if is_redirect(page)]


def require(condition: bool, reason: str) -> None:
    """Skip on a developer's machine, fail in CI: the browser check must run there."""
    if not condition:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)


# --- what the browser is answered ----------------------------------------------------------------


def cdn_packages(pages: list[str]) -> set[str]:
    """The npm packages the pages load from CDNs (``mathjax@3``, ``requirejs@2.3.4``, ...)."""
    specs = set()
    for page in pages:
        text = (HTML_DIR / page).read_text(encoding="utf-8")
        specs.update(JSDELIVR_NPM.findall(text))
        specs.update(f"requirejs@{version}" for version in CDNJS_REQUIREJS.findall(text))
    return specs


def npm_mirror(specs: set[str]) -> Path:
    """Unpack each npm package into ``<user cache>/qhd-book/cdn/<spec>/`` (once) and return
    the folder."""
    import platformdirs

    mirror = Path(platformdirs.user_cache_dir("qhd-book")) / "cdn"
    for spec in sorted(specs):
        target = mirror / spec
        if target.is_dir():
            continue
        require(
            shutil.which("npm") is not None, f"npm is needed to mirror {spec} from the npm registry"
        )
        with tempfile.TemporaryDirectory() as scratch:
            packed = subprocess.run(
                ["npm", "pack", "--json", spec],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert packed.returncode == 0, f"`npm pack {spec}` failed: {packed.stderr}"
            tarball = Path(scratch) / json.loads(packed.stdout)[0]["filename"]
            with tarfile.open(tarball) as tar:
                tar.extractall(Path(scratch) / "x", filter="data")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(Path(scratch) / "x" / "package", target)
    return mirror


def local_file(url: str, mirror: Path) -> Path | None:
    """The file that answers ``url``: from the book, from the npm mirror, or None (refused)."""
    if url.startswith(BASE_URL):
        root, path = HTML_DIR, unquote(urlsplit(url).path).removeprefix("/")
        path = path + "index.html" if path == "" or path.endswith("/") else path
    elif match := JSDELIVR_NPM.match(url):
        root, path = mirror, match[1] + "/" + urlsplit(url[match.end() :]).path
    elif match := CDNJS_REQUIREJS.match(url):
        root, path = mirror, f"requirejs@{match[1]}/require.js"
    else:
        return None
    file = (root / path).resolve()
    return file if file.is_relative_to(root) else None


def answer(route: Route, mirror: Path) -> None:
    """Answer one request of the browser from disk; HTML loses its scripts' SRI attributes (npm
    ships require.js unminified, so the cdnjs file's integrity hash cannot match)."""
    file = local_file(route.request.url, mirror)
    if file is None:
        route.abort("blockedbyclient")
    elif not file.is_file():
        route.fulfill(status=404, body=f"no such file: {route.request.url}")
    elif file.suffix == ".html":
        text = file.read_text(encoding="utf-8")
        html = re.sub(r"<script[^>]*>", lambda tag: INTEGRITY.sub("", tag[0]), text)
        route.fulfill(body=html, content_type="text/html; charset=utf-8")
    else:
        kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        route.fulfill(body=file.read_bytes(), content_type=kind)


# --- visiting a page -----------------------------------------------------------------------------

#: Runs in the page once it has loaded: waits for MathJax, images and widgets, then reports.
SETTLE_AND_REPORT = """
(async () => {
  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
  const deadline = Date.now() + 30000;
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const pending = Array.from(document.images, img => {
    img.loading = 'eager';
    return img.complete ? null : new Promise(resolve => { img.onload = img.onerror = resolve; });
  });
  await Promise.race([Promise.all(pending), sleep(20000)]);
  const views = document.querySelectorAll(
    'script[type="application/vnd.jupyter.widget-view+json"]');
  const rendered = () => Array.from(
    views, v => v.parentElement.querySelector('.jupyter-widgets') !== null);
  while (rendered().includes(false) && Date.now() < deadline) await sleep(100);
  const math = Array.from(document.querySelectorAll('.math'));
  return {
    broken_images: Array.from(document.images)
      .filter(i => i.naturalWidth === 0)
      .map(i => i.currentSrc || i.src),
    math_count: math.length,
    untypeset_math: math
      .filter(m => m.querySelector('mjx-container') === null)
      .map(m => m.textContent.slice(0, 80)),
    math_errors: Array.from(
      document.querySelectorAll('mjx-merror'),
      e => e.getAttribute('data-mjx-error') || e.textContent),
    widgets_expected: views.length,
    widgets_rendered: rendered().filter(Boolean).length,
    ids: Array.from(
      document.querySelectorAll('[id], a[name]'), e => e.id || e.getAttribute('name')),
    links: Array.from(document.querySelectorAll('a[href]'), a => a.href),
  };
})()
"""

#: What a kernel-free widget shows now: its pictures (once loaded) and its text.
EXPLORER_VIEW = """
async root => {
  const images = Array.from(root.querySelectorAll('.qhd-explorer-view img'));
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  return {
    shown: images.map(img => img.getAttribute('src'))
      .concat(Array.from(root.querySelectorAll('.qhd-explorer-view pre'), p => p.textContent)),
    broken: images.filter(img => img.naturalWidth === 0).map(img => img.src),
  };
}
"""


@dataclass
class SelectorChange:
    """One selector of a kernel-free widget set to another value, and the views before and
    after."""

    explorer: str
    control: str
    before: list[str]
    after: list[str]
    broken_images: list[str]


@dataclass
class PageReport:
    """What the browser saw on one page."""

    url: str
    errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    math_count: int = 0
    untypeset_math: list[str] = field(default_factory=list)
    math_errors: list[str] = field(default_factory=list)
    widgets_expected: int = 0
    widgets_rendered: int = 0
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    selector_changes: list[SelectorChange] = field(default_factory=list)


def change_each_selector(tab: Page) -> list[SelectorChange]:
    """Set every selector of every kernel-free widget on the page to another value, as a reader
    would (the last value of a range or the first if it is there already, another option, the
    other state of a checkbox)."""
    changes = []
    for root in tab.locator(".qhd-explorer").all():
        explorer = root.get_attribute("data-explorer")
        for control in root.locator("[data-control]").all():
            before = root.evaluate(EXPLORER_VIEW)
            kind = control.evaluate("e => e.type")
            if kind == "range":
                at_end = control.input_value() == control.get_attribute("max")
                control.fill("0" if at_end else control.get_attribute("max"))
            elif kind == "checkbox":
                control.click()
            else:
                other = control.evaluate("e => Array.from(e.options).findIndex(o => !o.selected)")
                control.select_option(index=other)
            after = root.evaluate(EXPLORER_VIEW)
            name = control.get_attribute("data-control")
            changes.append(
                SelectorChange(explorer, name, before["shown"], after["shown"], after["broken"])
            )
    return changes


def visit(context: BrowserContext, page: str) -> PageReport:
    """Open ``page`` in a new tab, let it settle, save a screenshot, try its kernel-free widgets
    and report what happened."""
    tab = context.new_page()
    errors = []

    def console(message: ConsoleMessage) -> None:  # failed loads are console errors too
        if message.type in ("error", "assert"):
            errors.append(f"console.{message.type}: {message.text} {message.location['url']}")

    tab.on("console", console)
    tab.on("pageerror", lambda error: errors.append(f"exception: {error}"))
    try:
        tab.goto(BASE_URL + page, wait_until="load")
        facts = tab.evaluate(SETTLE_AND_REPORT)
        screenshot = SCREENSHOT_DIR / (page.removesuffix(".html").replace("/", "__") + ".png")
        height = min(tab.evaluate("document.documentElement.scrollHeight"), MAX_SCREENSHOT_HEIGHT)
        clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height}
        tab.screenshot(path=screenshot, full_page=True, clip=clip)
        changes = change_each_selector(tab)
    finally:
        tab.close()
    return PageReport(
        url=BASE_URL + page,
        errors=[e.strip() for e in errors if not any(re.search(k, e) for k in KNOWN_HARMLESS)],
        broken_images=facts["broken_images"],
        math_count=facts["math_count"],
        untypeset_math=facts["untypeset_math"],
        math_errors=facts["math_errors"],
        widgets_expected=facts["widgets_expected"],
        widgets_rendered=facts["widgets_rendered"],
        ids=set(facts["ids"]),
        links=facts["links"],
        screenshot=screenshot,
        selector_changes=changes,
    )


@dataclass
class Site:
    """The book and what the browser saw on each page."""

    pages: dict[str, PageReport]

    @staticmethod
    def local_path(link: str) -> str | None:
        """The path inside the book a link points to (``index.html`` for the root), None if it
        leaves the book."""
        if not link.startswith(BASE_URL):
            return None
        path = unquote(urlsplit(link).path).removeprefix("/")
        return path + "index.html" if path == "" or path.endswith("/") else path

    def ids_of(self, path: str) -> set[str]:
        if path in self.pages:
            return self.pages[path].ids
        return set(
            re.findall(r'\b(?:id|name)="([^"]+)"', (HTML_DIR / path).read_text(encoding="utf-8"))
        )


@pytest.fixture(scope="module")
def site() -> Site:
    """Every page of the built book, visited once in Chromium."""
    if not PAGES:
        pytest.skip(
            f"the book is not built (no pages in {HTML_DIR}); run `make book` or set QHD_BOOK_HTML"
        )
    binary = (
        os.environ.get("QHD_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    require(binary is not None, "Chromium is not installed; on Debian: apt-get install -y chromium")
    require(
        importlib.util.find_spec("playwright") is not None,
        "Playwright is not installed (pinned in requirements.txt; it uses this Chromium)",
    )
    from playwright.sync_api import sync_playwright

    mirror = npm_mirror(cdn_packages(PAGES)).resolve()
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary,
            args=["--no-sandbox", "--disable-gpu", "--host-resolver-rules=MAP * ~NOTFOUND"],
        )
        try:
            context = browser.new_context(viewport=VIEWPORT, service_workers="block")
            context.set_default_timeout(PAGE_TIMEOUT_MS)
            context.route("**/*", lambda route: answer(route, mirror))
            return Site({page: visit(context, page) for page in PAGES})
        finally:
            browser.close()


page_parameter = pytest.mark.parametrize("page", PAGES or ["(book not built)"])


@page_parameter
def test_page_has_no_javascript_error_or_failed_load(site, page):
    errors = site.pages[page].errors
    assert not errors, "\n".join(errors)


@page_parameter
def test_page_images_are_all_loaded(site, page):
    broken = site.pages[page].broken_images
    assert not broken, "images that did not load:\n" + "\n".join(broken)


@page_parameter
def test_page_equations_are_typeset_by_mathjax(site, page):
    report = site.pages[page]
    assert not report.untypeset_math, "raw TeX left (did MathJax run?):\n" + "\n".join(
        report.untypeset_math
    )
    assert not report.math_errors, "MathJax could not typeset:\n" + "\n".join(report.math_errors)


def test_book_has_equations_at_all(site):
    assert sum(report.math_count for report in site.pages.values()) > 0


@page_parameter
def test_page_widgets_render(site, page):
    report = site.pages[page]
    assert report.widgets_rendered == report.widgets_expected


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_kernel_free_widget_shows_other_pictures_for_each_selector(site, name):
    explorer = EXPLORERS[name]
    changes = [
        change
        for report in site.pages.values()
        for change in report.selector_changes
        if change.explorer == name
    ]
    assert [c.control for c in changes] == [c.name for c in explorer.controls], (
        f"{name}: expected one selector per control in {explorer.chapter}.html"
    )
    for change in changes:
        assert change.after != change.before, f"{name}: {change.control} changed nothing"
        assert not change.broken_images, f"{name}: {change.control}: {change.broken_images}"


def test_kernel_free_widgets_are_only_in_their_chapters(site):
    placed = {
        (page, change.explorer)
        for page, report in site.pages.items()
        for change in report.selector_changes
    }
    assert placed == {(f"{e.chapter}.html", e.name) for e in EXPLORERS.values()}


@page_parameter
def test_page_links_into_the_book_reach_a_page_and_anchor(site, page):
    broken = []
    for link in site.pages[page].links:
        path = site.local_path(link)
        if path is None:
            continue
        fragment = urldefrag(link).fragment
        if not (HTML_DIR / path).is_file():
            broken.append(f"{link}: no file {path}")
        elif fragment and path.endswith(".html") and unquote(fragment) not in site.ids_of(path):
            broken.append(f"{link}: no id {unquote(fragment)!r} in {path}")
    assert not broken, "\n".join(broken)


@page_parameter
def test_page_external_links_are_well_formed(site, page):
    malformed = []
    for link in site.pages[page].links:
        if site.local_path(link) is not None:
            continue
        parts = urlsplit(link)
        if parts.scheme == "mailto":
            ok = "@" in parts.path
        else:
            ok = (
                parts.scheme in ("http", "https")
                and re.fullmatch(r"[\w.-]+\.[a-z]{2,}(:\d+)?", parts.netloc) is not None
            )
        if not ok and not link.startswith("javascript:"):
            malformed.append(link)
    assert not malformed, "\n".join(malformed)


@pytest.mark.parametrize("page", REDIRECTS)
def test_redirect_page_points_to_an_existing_page(page):
    target = REDIRECT.search((HTML_DIR / page).read_text(encoding="utf-8"))[1]
    assert (HTML_DIR / page).parent.joinpath(target).is_file()


@page_parameter
def test_page_screenshot_is_saved(site, page):
    screenshot = site.pages[page].screenshot
    assert screenshot is not None and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
