"""The chapters' widgets: their controls, the live ipywidgets form and the kernel-free form the
book build makes of them (`qhd_lib.sphinx_explorers`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from qhd_lib import sphinx_explorers
from qhd_lib.circuits import make_ansatz
from qhd_lib.widgets import ANSATZ, EXPLORERS, Choice, Explorer, Slider, ansatz_views

ROOT = Path(__file__).resolve().parents[1]


def test_slider_book_values_step_from_the_default_and_keep_both_ends():
    t = Slider("t", 0, 999, 1, default=250, book_step=25)
    assert t.book_values() == (*range(0, 1000, 25), 999)
    theta = Slider("theta", -np.pi / 2, 3 * np.pi / 2, 0.05, default=0.6, book_step=0.2)
    values = np.array(theta.book_values())
    assert values[0] == -np.pi / 2 and values[-1] == 3 * np.pi / 2
    assert 0.6 in values and np.allclose(np.diff(values[1:-1]), 0.2)


def test_integer_slider_without_book_step_offers_every_step():
    assert Slider("layers", 1, 5, 1, default=3).book_values() == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_explorer_default_is_a_book_view_and_sliders_offer_at_most_41_values(name):
    explorer = EXPLORERS[name]
    assert explorer.default_view in list(explorer.book_views())
    assert all(len(control.book_values()) <= 41 for control in explorer.controls)


@pytest.mark.parametrize("name", sorted(EXPLORERS))
def test_explorer_is_called_by_one_code_cell_of_its_chapter(name):
    explorer = EXPLORERS[name]
    notebook = nbformat.read(ROOT / f"{explorer.chapter}.ipynb", as_version=4)
    calls = [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and re.search(rf"\b{name}\(", cell.source)
    ]
    assert len(calls) == 1


def test_ansatz_views_reject_exactly_the_strides_make_ansatz_rejects():
    patch = np.zeros(12, np.float32)
    for view in ANSATZ.book_views():
        try:
            make_ansatz(view["name"], stride=view["stride"], layers=view["layers"])
        except ValueError as expected:
            with pytest.raises(ValueError, match=re.escape(str(expected))):
                ansatz_views(patch, **view)


def fake_explorer(calls: list[dict]) -> Explorer:
    """Two controls; ``b = "bad"`` is rejected like an invalid stride; ``b = "text"`` is a text."""
    import matplotlib.pyplot as plt

    def render(a: int, b: str):
        calls.append({"a": a, "b": b})
        if b == "bad":
            raise ValueError(f"{a} does not go with bad")
        if b == "text":
            return f"a is {a}"
        fig, ax = plt.subplots(figsize=(1, 1))
        ax.plot([0, 1], [0, a])
        return fig, plt.subplots(figsize=(1, 1))[0]

    return Explorer(
        name="fake_explorer",
        chapter="notebooks/fake",
        controls=(Slider("a", 1, 3, 1, default=2), Choice("b", ("plot", "bad", "text"))),
        prepare=lambda: render,
    )


def test_book_views_render_each_combination_once_then_read_the_cache(tmp_path):
    calls: list[dict] = []
    explorer = fake_explorer(calls)
    views, computed = sphinx_explorers.book_views(explorer, tmp_path)
    assert computed == len(calls) == 9
    assert [(v.values["a"], v.values["b"]) for v in views] == [
        (a, b) for a in (1, 2, 3) for b in ("plot", "text")
    ]
    assert sphinx_explorers.book_views(explorer, tmp_path) == (views, 0)
    assert len(calls) == 9


def test_book_view_pictures_are_png_files_named_by_their_content(tmp_path):
    views, _ = sphinx_explorers.book_views(fake_explorer([]), tmp_path)
    plots = [view for view in views if view.text is None]
    assert all(len(view.images) == 2 for view in plots)
    # the second figure is the same empty one in every view: one file
    assert len({view.images[1] for view in plots}) == 1
    assert len({view.images[0] for view in plots}) == 3
    for name in {name for view in plots for name in view.images}:
        assert (tmp_path / "images" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [view.text for view in views if view.text] == ["a is 1", "a is 2", "a is 3"]


def test_explorer_html_shows_the_default_view_and_carries_every_valid_view(tmp_path):
    explorer = fake_explorer([])
    views, _ = sphinx_explorers.book_views(explorer, tmp_path)
    form = sphinx_explorers.explorer_html(explorer, views, "../_static/explorers")
    default = next(view for view in views if view.values == {"a": 2, "b": "plot"})
    shown = form.split('<div class="qhd-explorer-view">')[1].split("</div>")[0]
    assert re.findall(r'src="([^"]+)"', shown) == [
        f"../_static/explorers/{name}" for name in default.images
    ]
    data = json.loads(re.search(r"application/json[^>]*>(.*?)</script>", form)[1])
    assert data["default"] == [1, 0]
    assert [c["kind"] for c in data["controls"]] == ["range", "select"]
    assert sorted(tuple(view["at"]) for view in data["views"]) == [
        (a, b) for a in range(3) for b in (0, 2)
    ]


def test_live_widget_prints_the_library_error_for_a_rejected_combination(capsys):
    form = fake_explorer([]).live()
    slider, choice = form.children[:2]
    assert (slider.value, slider.min, slider.max, choice.options) == (
        2,
        1,
        3,
        ("plot", "bad", "text"),
    )
    choice.value = "bad"
    assert "2 does not go with bad" in capsys.readouterr().out
    choice.value = "text"
    assert capsys.readouterr().out.endswith("a is 2\n")  # after the terminal's clear codes


def test_widget_code_hash_ignores_comments_and_docstrings_not_code(tmp_path):
    code = tmp_path / "a.py"
    code.write_text('def f():\n    """Twice."""\n    return 2 * x  # double\n')
    before = sphinx_explorers.code_of(code)
    code.write_text('def f():\n    """Two times."""\n\n    return 2*x\n')
    assert sphinx_explorers.code_of(code) == before
    code.write_text('def f():\n    """Twice."""\n    return 3 * x\n')
    assert sphinx_explorers.code_of(code) != before


def test_widget_code_follows_imports_inside_functions_and_leaves_other_modules_out():
    files = {
        path.relative_to(sphinx_explorers.PACKAGE).as_posix()
        for path in sphinx_explorers.widget_sources()
    }
    assert {"widgets.py", "circuits/reference.py", "models/unet.py", "plotting.py"} <= files
    assert not {"train.py", "metrics.py", "sphinx_explorers.py"} & files
