"""Every chapter listed in the table of contents exists and follows the book's conventions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def notebooks() -> list[Path]:
    return [ROOT / f"{f}.ipynb" for f in toc_files() if f.startswith("notebooks/")]


def cells(path: Path, kind: str) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == kind]


@pytest.mark.parametrize("entry", toc_files())
def test_every_toc_entry_exists(entry: str) -> None:
    assert (ROOT / f"{entry}.md").exists() or (ROOT / f"{entry}.ipynb").exists(), entry


def test_every_notebook_is_in_the_toc() -> None:
    listed = {p.name for p in notebooks()}
    on_disk = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= listed, f"not in _toc.yml: {sorted(on_disk - listed)}"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_chapter_has_one_title_a_summary_and_exercises(path: Path) -> None:
    markdown = "\n".join(cells(path, "markdown"))
    titles = re.findall(r"^# \S", markdown, flags=re.M)
    assert len(titles) == 1, "a chapter has exactly one H1 title"
    assert re.search(r"^## Summary\s*$", markdown, flags=re.M), "missing '## Summary'"
    assert re.search(r"^## Exercises\s*$", markdown, flags=re.M), "missing '## Exercises'"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_chapter_starts_with_the_shared_setup_cell(path: Path) -> None:
    """Every chapter installs and sets up the same way: the library's ``SETUP_CELL``, verbatim."""
    from qhd_lib.notebook import SETUP_CELL

    assert cells(path, "code")[0] == SETUP_CELL


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_chapter_is_committed_executed(path: Path) -> None:
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    unexecuted = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unexecuted, f"code cells without outputs (run `make notebooks`): {unexecuted}"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, "a committed chapter must not show an error"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_live_widget_output_is_removed_not_left_dead(path: Path) -> None:
    """A live widget needs a kernel: the rendered book drops its output and shows the widget's
    kernel-free form (`qhd_lib.sphinx_explorers`) after the cell instead."""
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "strip the saved widget state"
    for cell in nb["cells"]:
        views = [
            o
            for o in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
        ]
        if views:
            assert "remove-output" in cell["metadata"].get("tags", []), "".join(cell["source"])[:80]


def shown_sources(path: Path) -> list[str]:
    """The plain-text outputs of the chapter's ``show_source(...)`` cells."""
    nb = json.loads(path.read_text())
    shown = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "show_source(" in "".join(cell["source"]):
            for output in cell.get("outputs", []):
                text = output.get("data", {}).get("text/plain")
                if text:
                    shown.append("".join(text))
    return shown


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.stem)
def test_shown_library_source_is_current(path: Path) -> None:
    """Source a chapter shows with ``show_source`` is the library's source today, not stale."""
    library = "\n".join(p.read_text() for p in sorted((ROOT / "qhd_lib").rglob("*.py")))
    stale = [text.splitlines()[0] for text in shown_sources(path) if text not in library]
    assert not stale, f"re-execute the chapter (`make notebooks`): stale source of {stale}"


def test_show_source_outputs_are_found() -> None:
    """The check above reads something: the chapters show library source in plain text."""
    assert sum(len(shown_sources(p)) for p in notebooks()) >= 5
