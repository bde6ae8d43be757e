"""Sphinx extension: each chapter's run time as a badge under its title.

Read at build time from ``results/exec_times.json`` (written by ``python -m qhd_lib.exec_times``),
so the notebooks' outputs stay as they were executed. The badges use sphinx-design's classes
(loaded by Jupyter Book) and link to the book's page of execution statistics. Enabled in
``_config.yml`` under ``sphinx.extra_extensions``.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx

from qhd_lib import exec_times

STATISTICS_PAGE = "/book/exec_times"  # the page's docname, absolute from the book's root


def run_time_paragraph(texts: list[str]) -> nodes.paragraph:
    """A paragraph of badges, one per text, and a link to the statistics page."""
    paragraph = nodes.paragraph(classes=["exec-times"])
    for i, text in enumerate(texts):
        kind = "info" if i == 0 else "secondary"
        paragraph += nodes.inline(
            text=text, classes=["sd-badge", f"sd-bg-{kind}", f"sd-bg-text-{kind}"]
        )
        paragraph += nodes.Text(" ")
    link = addnodes.pending_xref(
        "", refdomain="std", reftype="doc", reftarget=STATISTICS_PAGE, refexplicit=True
    )
    link += nodes.inline(text="execution statistics", classes=["xref", "std", "std-doc"])
    paragraph += link
    return paragraph


def add_run_time(app: Sphinx, doctree: nodes.document) -> None:
    """Insert the badge after the title of a chapter that has recorded times."""
    docname = app.env.docname
    if not docname.startswith(f"{exec_times.NOTEBOOKS}/"):
        return
    app.env.note_dependency(str(exec_times.RESULTS_FILE))
    data = exec_times.load()
    texts = exec_times.badge(data, docname.rsplit("/", 1)[-1]) if data else None
    section = next(iter(doctree.findall(nodes.section)), None)
    if not texts or section is None or not isinstance(section[0], nodes.title):
        return
    section.insert(1, run_time_paragraph(texts))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("doctree-read", add_run_time)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
