"""Sphinx extension: the chapters' widgets (`qhd_lib.widgets`) respond in the rendered book.

The book has no kernel, so for each widget the build calls its render function, the same one the
live widget calls, for every valid combination of the controls' book values, and puts a small
form of plain selectors (``explorers-static/explorers.js``, no network) right after the code cell
that calls the widget; choosing values shows the matching pictures (or text).

Views are cached under ``<user cache>/qhd-book/explorers`` (``$QHD_EXPLORER_CACHE``), keyed by a
hash of the widget code (``qhd_lib/widgets.py`` and every ``qhd_lib`` module it imports, directly
or not), the versions of the packages that compute and draw, and the view: a second build renders
nothing. The same files are Sphinx dependencies of the chapters, so a change to them makes the
next build read those chapters again. Enabled in ``_config.yml`` under ``sphinx.extra_extensions``.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import html
import io
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.osutil import relative_uri

from qhd_lib.widgets import EXPLORERS, Choice, Explorer

logger = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent
STATIC = PACKAGE / "explorers-static"  # not a package name: setuptools ships it as data
IMAGES = "_static/explorers"  # in the HTML output
#: Packages whose versions can change a picture or a number of a view.
DRAWING_PACKAGES = ("numpy", "jax", "jaxlib", "flax", "matplotlib", "pennylane")


def cache_dir() -> Path:
    import platformdirs

    default = Path(platformdirs.user_cache_dir("qhd-book")) / "explorers"
    return Path(os.environ.get("QHD_EXPLORER_CACHE", default))


def module_file(module: str) -> Path | None:
    """The source file of a ``qhd_lib`` module (without importing it), None if there is none."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def widget_sources() -> tuple[Path, ...]:
    """``qhd_lib/widgets.py`` and the source of every ``qhd_lib`` module it imports, directly or
    not, at module level or inside a function (found by reading the imports, not running them)."""
    seen: dict[str, Path] = {}
    todo = ["qhd_lib.widgets"]
    while todo:
        module = todo.pop()
        path = module_file(module)
        if module in seen or path is None:
            continue
        seen[module] = path
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "qhd_lib":
                    todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return tuple(sorted(seen.values()))


def code_of(path: Path) -> str:
    """A module's code without its comments, docstrings and formatting (its AST, dumped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(body, list)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            body[0].value.value = ""
    return ast.dump(tree)


@functools.cache
def widget_code_hash() -> str:
    """Hash of the widget code (a change to a comment or docstring keeps it) and of the versions
    of the packages that compute and draw."""
    digest = hashlib.sha256()
    for path in widget_sources():
        digest.update(f"{path.relative_to(PACKAGE).as_posix()}\0{code_of(path)}\0".encode())
    for package in DRAWING_PACKAGES:
        digest.update(f"{package}=={version(package)}\0".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class BookView:
    """One valid view: its control values, its pictures (file names) or its text."""

    values: dict[str, Any]
    images: tuple[str, ...]
    text: str | None


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    partial.replace(path)


def render_view(render: Any, values: dict[str, Any], images: Path) -> dict[str, Any]:
    """Draw one view in the book's style; its figures become PNG files named by their hash.
    Returns the cache record: ``images`` and ``text``, or ``error`` (the library's message)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    from qhd_lib.plotting import use_book_style

    with mpl.rc_context():
        use_book_style()
        try:
            shown = render(**values)
        except ValueError as error:
            return {"error": str(error)}
        else:
            text = shown if isinstance(shown, str) else None
            figures = [] if text else shown if isinstance(shown, tuple) else (shown,)
            names = [save_png(figure, images) for figure in figures]
        finally:
            plt.close("all")
    return {"images": names, "text": text}


def save_png(figure: Any, images: Path) -> str:
    """Save ``figure`` under ``images`` as ``<hash of the PNG>.png`` and return that name."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    png = buffer.getvalue()
    name = hashlib.sha256(png).hexdigest()[:24] + ".png"
    if not (images / name).is_file():
        write_atomically(images / name, png)
    return name


def book_views(explorer: Explorer, cache: Path) -> tuple[list[BookView], int]:
    """Every valid view of ``explorer`` from the cache, rendering the missing ones; and how many
    combinations were rendered (or found invalid) now."""
    render = None
    views, rendered = [], 0
    for values in explorer.book_views():
        key = json.dumps([widget_code_hash(), explorer.name, values], sort_keys=True)
        record_file = cache / "views" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")
        if not record_file.is_file():
            render = render or explorer.prepare()
            record = render_view(render, values, cache / "images")
            write_atomically(record_file, json.dumps(record).encode())
            rendered += 1
        record = json.loads(record_file.read_text())
        if "error" not in record:
            views.append(BookView(values, tuple(record["images"]), record["text"]))
    return views, rendered


def label(value: Any) -> str:
    return format(value, ".3g") if isinstance(value, float) else str(value)


def explorer_html(explorer: Explorer, views: list[BookView], image_url: str) -> str:
    """The form: a caption, the default view (shown without JavaScript too) and the data the
    selectors switch between (``image_url``: the images folder relative to the page)."""
    controls = [
        {
            "name": control.name,
            "kind": "range"
            if not isinstance(control, Choice)
            else "checkbox"
            if control.options == (False, True)
            else "select",
            "labels": [label(value) for value in control.book_values()],
        }
        for control in explorer.controls
    ]
    positions = [{value: i for i, value in enumerate(c.book_values())} for c in explorer.controls]

    def at(view: BookView) -> list[int]:
        return [p[view.values[c.name]] for p, c in zip(positions, explorer.controls)]

    def alt(view: BookView) -> str:
        return ", ".join(f"{name} = {label(value)}" for name, value in view.values.items())

    data = {
        "name": explorer.name,
        "controls": controls,
        "default": at(BookView(explorer.default_view, (), None)),
        "views": [
            {
                "at": at(view),
                "images": [f"{image_url}/{name}" for name in view.images],
                "text": view.text,
                "alt": alt(view),
            }
            for view in views
        ],
    }
    default = next((view for view in views if view.values == explorer.default_view), None)
    if default is None:
        raise ValueError(f"{explorer.name}: its default view {explorer.default_view} is rejected")
    shown = "".join(
        f'<img src="{html.escape(image_url)}/{name}" alt="{html.escape(alt(default))}">'
        for name in default.images
    )
    if default.text is not None:
        shown += f"<pre>{html.escape(default.text)}</pre>"
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        f'<div class="qhd-explorer" data-explorer="{explorer.name}">'
        f'<p class="qhd-explorer-caption">Computed when the book was built: {len(views)} '
        f"views. Run the chapter in Jupyter or Colab to redraw it live.</p>"
        f'<div class="qhd-explorer-controls"></div>'
        f'<div class="qhd-explorer-view">{shown}</div>'
        f'<script type="application/json" class="qhd-explorer-data">{payload}</script>'
        f"</div>"
    )


def calling_cells(doctree: nodes.document, explorer: Explorer) -> list[nodes.Element]:
    """The notebook code cells of a page whose source calls ``explorer``'s function."""
    return [
        cell
        for cell in doctree.findall(nodes.container)
        if cell.get("nb_element") == "cell_code"
        and any(
            f"{explorer.name}(" in block.astext() for block in cell.findall(nodes.literal_block)
        )
    ]


def place_explorers(app: Sphinx, doctree: nodes.document) -> None:
    """After the cell that calls a widget, insert its form; copy its pictures to the output."""
    docname = app.env.docname
    for explorer in EXPLORERS.values():
        if explorer.chapter != docname or app.builder.format != "html":
            continue
        for path in widget_sources():
            app.env.note_dependency(str(path))
        cells = calling_cells(doctree, explorer)
        if len(cells) != 1:
            logger.warning(
                f"{explorer.name}: expected one code cell calling it, found {len(cells)}",
                location=docname,
            )
            continue
        cache = cache_dir()
        started = time.perf_counter()
        views, rendered = book_views(explorer, cache)
        logger.info(
            f"{explorer.name}: {len(views)} views; {rendered} combinations computed now "
            f"({time.perf_counter() - started:.1f} s), the rest read from {cache}"
        )
        out = Path(app.outdir, IMAGES)
        out.mkdir(parents=True, exist_ok=True)
        for name in {name for view in views for name in view.images}:
            if not (out / name).is_file():
                shutil.copyfile(cache / "images" / name, out / name)
        page = app.builder.get_target_uri(docname)
        form = explorer_html(explorer, views, relative_uri(page, IMAGES))
        cell = cells[0]
        cell.parent.insert(cell.parent.index(cell) + 1, nodes.raw("", form, format="html"))


def check_chapters(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn about a widget whose chapter is not in the book (its form would never appear)."""
    for explorer in EXPLORERS.values():
        if explorer.chapter not in env.all_docs:
            logger.warning(f"{explorer.name}: its chapter {explorer.chapter} is not in the book")


def add_static_path(app: Sphinx, config: Any) -> None:
    config.html_static_path.append(str(STATIC))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", add_static_path)
    app.add_js_file("explorers.js")
    app.add_css_file("explorers.css")
    app.connect("doctree-read", place_explorers)
    app.connect("env-check-consistency", check_chapters)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
