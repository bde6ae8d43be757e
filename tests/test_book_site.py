"""The built book, as a reader's browser sees it: headless Chromium opens every page.

For each HTML page of the build (``$QHD_BOOK_HTML``, default ``_build/html``) it checks that no
JavaScript error or failed resource load happens, that every image loaded, that every equation was
typeset by MathJax (no raw TeX, no MathJax error), that every widget rendered, and that every link
to the book itself reaches an existing page and anchor; external links are only checked to be well
formed (the network is closed). A full-page screenshot of each page goes to ``screenshots/`` next
to the HTML folder (``_build/screenshots``) for a person to look at.

The pages load MathJax, require.js and the Jupyter widget manager from CDNs that are unreachable
here, so the local server rewrites those URLs to the same npm packages, fetched once with
``npm pack`` into ``<user cache>/qhd-book/cdn``; Chromium resolves no other host than 127.0.0.1.
Chromium is Debian's ``chromium`` (``$QHD_CHROMIUM`` to use another binary), driven through the
DevTools protocol with ``websocket-client``.

Skipped when the book is not built; when Chromium or npm is missing it is skipped on a
developer's machine and fails in CI (``CI`` set), where they must be installed.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML_DIR = Path(os.environ.get("QHD_BOOK_HTML", ROOT / "_build" / "html")).resolve()
SCREENSHOT_DIR = HTML_DIR.parent / "screenshots"
PAGE_TIMEOUT_S = 60.0
VIEWPORT = (1280, 900)
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


# --- the local mirror of the CDN packages --------------------------------------------------------


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


def rewrite_cdn_urls(html: str) -> str:
    """Point the page's CDN scripts at ``/_cdn/<package>/`` and drop their SRI attributes.

    npm ships require.js unminified, so the cdnjs file's integrity hash cannot match.
    """
    html = re.sub(
        r"<script[^>]*>",
        lambda tag: INTEGRITY.sub("", tag[0]) if "https://" in tag[0] else tag[0],
        html,
    )
    html = CDNJS_REQUIREJS.sub(r"/_cdn/requirejs@\1/require.js", html)
    html = JSDELIVR_NPM.sub(r"/_cdn/\1/", html)
    return html.replace(
        'data-jupyter-widgets-cdn="https://cdn.jsdelivr.net/npm/"',
        'data-jupyter-widgets-cdn="/_cdn/"',
    )


class BookHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the HTML folder, with CDN URLs rewritten, and the npm mirror under ``/_cdn/``."""

    mirror: Path

    def send_head(self):  # type: ignore[override]
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/_cdn/"):
            file = (self.mirror / path.removeprefix("/_cdn/")).resolve()
            if not file.is_relative_to(self.mirror) or not file.is_file():
                self.send_error(404, f"not in the npm mirror: {path}")
                return None
            return self._send(file.read_bytes(), self.guess_type(str(file)))
        local = Path(self.translate_path(self.path))
        if local.is_dir():
            local = local / "index.html"
        if local.suffix == ".html" and local.is_file():
            return self._send(
                rewrite_cdn_urls(local.read_text(encoding="utf-8")).encode(),
                "text/html; charset=utf-8",
            )
        return super().send_head()

    def _send(self, body: bytes, content_type: str) -> io.BytesIO:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)

    def log_message(self, *args: object) -> None:
        pass


# --- a minimal DevTools protocol client ----------------------------------------------------------


class DevTools:
    """Commands and events over Chromium's browser WebSocket (flattened sessions)."""

    def __init__(self, url: str):
        import websocket

        self.timeout_error = websocket.WebSocketTimeoutException
        self.ws = websocket.create_connection(url, timeout=PAGE_TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(
            e.get("method") == method and e.get("sessionId") == session for e in self.events
        ):
            self.ws.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except self.timeout_error:
                raise TimeoutError(f"no {method} within {timeout} s") from None
            finally:
                self.ws.settimeout(PAGE_TIMEOUT_S)

    def evaluate(self, session: str, expression: str) -> object:
        result = self.call(
            "Runtime.evaluate",
            session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            timeout=PAGE_TIMEOUT_S * 1000,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")


@contextlib.contextmanager
def chromium() -> Iterator[DevTools]:
    """Headless Chromium with an empty profile, no background traffic and no host but 127.0.0.1."""
    binary = (
        os.environ.get("QHD_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    require(binary is not None, "Chromium is not installed; on Debian: apt-get install -y chromium")
    with tempfile.TemporaryDirectory(prefix="qhd-chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--mute-audio",
            "--no-default-browser-check",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        with open(Path(profile) / "chromium.log", "w") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + PAGE_TIMEOUT_S
            while not (port_file.is_file() and len(port_file.read_text().split()) == 2):
                if process.poll() is not None or time.monotonic() > deadline:
                    log_text = (Path(profile) / "chromium.log").read_text()[-2000:]
                    pytest.fail(f"Chromium did not start ({' '.join(command)}):\n{log_text}")
                time.sleep(0.1)
            port, path = port_file.read_text().split()
            devtools = DevTools(f"ws://127.0.0.1:{port}{path}")
            try:
                yield devtools
            finally:
                devtools.ws.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def serve(mirror: Path) -> Iterator[str]:
    """Serve the book on a free port of 127.0.0.1; yield its base URL."""
    handler = functools.partial(
        type("Handler", (BookHandler,), {"mirror": mirror.resolve()}), directory=str(HTML_DIR)
    )
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/"
        finally:
            server.shutdown()
            thread.join()


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


def page_errors(events: list[dict]) -> list[str]:
    """JavaScript exceptions, console errors and failed loads among a page's DevTools events."""
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            errors.append(
                f"exception: {text} ({details.get('url', '')}:{details.get('lineNumber', '')})"
            )
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(
                str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
            )
            errors.append(f"console.{params['type']}: {text}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
    return [
        error for error in errors if not any(re.search(known, error) for known in KNOWN_HARMLESS)
    ]


def visit(devtools: DevTools, base_url: str, page: str) -> PageReport:
    """Open ``page`` in a new tab, let it settle, report what happened and save a screenshot."""
    url = base_url + page
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log"):
            devtools.call(f"{domain}.enable", session)
        devtools.events = [e for e in devtools.events if e.get("sessionId") != session]
        devtools.call("Page.navigate", session, url=url)
        devtools.wait_for("Page.loadEventFired", session, PAGE_TIMEOUT_S)
        facts = devtools.evaluate(session, SETTLE_AND_REPORT)
        size = devtools.call("Page.getLayoutMetrics", session)["cssContentSize"]
        devtools.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=VIEWPORT[0],
            deviceScaleFactor=1,
            height=max(VIEWPORT[1], min(int(size["height"]), MAX_SCREENSHOT_HEIGHT)),
            mobile=False,
        )
        png = devtools.call("Page.captureScreenshot", session, format="png")
        screenshot = SCREENSHOT_DIR / (page.removesuffix(".html").replace("/", "__") + ".png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(png["data"]))
        errors = page_errors([e for e in devtools.events if e.get("sessionId") == session])
    finally:
        devtools.call("Target.closeTarget", targetId=target)
        devtools.events = [e for e in devtools.events if e.get("sessionId") != session]
    return PageReport(
        url=url,
        errors=errors,
        broken_images=facts["broken_images"],
        math_count=facts["math_count"],
        untypeset_math=facts["untypeset_math"],
        math_errors=facts["math_errors"],
        widgets_expected=facts["widgets_expected"],
        widgets_rendered=facts["widgets_rendered"],
        ids=set(facts["ids"]),
        links=facts["links"],
        screenshot=screenshot,
    )


@dataclass
class Site:
    """The served book and what the browser saw on each page."""

    base_url: str
    pages: dict[str, PageReport]

    def local_path(self, link: str) -> str | None:
        """The path inside the book a link points to (``""`` for the root), None if it leaves
        the book."""
        if not link.startswith(self.base_url):
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
    mirror = npm_mirror(cdn_packages(PAGES))
    with serve(mirror) as base_url, chromium() as devtools:
        return Site(base_url, {page: visit(devtools, base_url, page) for page in PAGES})


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
