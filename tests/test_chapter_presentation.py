"""What a reader of the rendered book sees of a chapter beyond its text: the set-up cell folded
away, numbered figures with captions, exercise hints folded until asked for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def figures(path: Path) -> list[tuple[dict, dict]]:
    """(cell, its ``mystnb.figure`` options) for every numbered figure of a chapter."""
    return [
        (cell, cell["metadata"]["mystnb"]["figure"])
        for cell in cells(path)
        if "figure" in cell.get("metadata", {}).get("mystnb", {})
    ]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_setup_cell_is_collapsed(path: Path) -> None:
    setup = next(c for c in cells(path) if c["cell_type"] == "code")
    assert "from qhd_lib.notebook import setup" in source(setup)
    assert "hide-input" in setup["metadata"].get("tags", []), (
        f"{path.name}: tag the set-up cell 'hide-input' so the book shows it folded"
    )


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_numbered_figures_with_a_caption_and_one_image_each(path: Path) -> None:
    found = figures(path)
    assert found, f"{path.name}: give its main figure a caption (cell metadata mystnb.figure)"
    for cell, figure in found:
        assert re.fullmatch(r"fig-[a-z0-9-]+", figure.get("name", "")), figure
        caption = figure.get("caption", "")
        assert caption.strip() and caption.rstrip().endswith("."), figure["name"]
        # MyST-NB wraps every displayed output of the cell in the figure: one image, nothing else,
        # or the figure's label would be defined twice
        shown = [
            o for o in cell["outputs"] if o["output_type"] in ("display_data", "execute_result")
        ]
        assert len(shown) == 1 and "image/png" in shown[0]["data"], figure["name"]


def test_figure_names_are_unique_in_the_book() -> None:
    names = [figure["name"] for path in CHAPTERS for _, figure in figures(path)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_exercise_hints_are_folded_in_dropdowns(path: Path) -> None:
    markdown = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    exercises = markdown.split("## Exercises", 1)[1]
    assert ":::{dropdown} Hint" in exercises, f"{path.name}: its exercises have no hint"
    outside = re.sub(r":::\{dropdown\}.*?\n\s*:::", "", exercises, flags=re.DOTALL)
    assert not re.search(r"\bHint:", outside), f"{path.name}: a hint outside a dropdown"
    assert exercises.count(":::{dropdown}") * 2 == exercises.count(":::"), "unclosed dropdown"
