"""The deviations page is the library's table, and every row says where the book shows it."""

from __future__ import annotations

import re
from pathlib import Path

from qhd_lib import deviations

ROOT = Path(__file__).resolve().parents[1]


def test_the_page_is_written_from_the_library_table() -> None:
    assert deviations.PAGE.read_text() == deviations.markdown(), (
        "book/deviations.md is stale: run python -m qhd_lib.deviations"
    )


def test_every_row_links_a_chapter_that_has_the_named_section_or_says_there_is_none() -> None:
    import nbformat

    for row in deviations.DEVIATIONS:
        assert row.who in ("released code", "paper", "book")
        if row.shown_in.startswith("stated"):
            continue
        found = re.fullmatch(r"\{doc\}`\.\./notebooks/(\w+)`, \*(.+)\*", row.shown_in)
        assert found, row.shown_in
        chapter, section = found.groups()
        notebook = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
        headings = {
            line.lstrip("#").strip()
            for cell in notebook.cells
            if cell.cell_type == "markdown"
            for line in cell.source.splitlines()
            if line.startswith("#")
        }
        assert section in headings, (chapter, section)


def test_the_page_is_in_the_book() -> None:
    assert "book/deviations" in (ROOT / "_toc.yml").read_text()
