"""Each chapter's run time: read from nbclient's execution stamps, merged with the smoke-scale
times of ``make nbtest``, recorded with provenance and shown in the book from that record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
import yaml

from qhd_lib import exec_times

ROOT = exec_times.ROOT

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite
name="pytest" errors="0" failures="1" skipped="0" tests="4" time="3.2"
timestamp="2026-12-07T01:33:30.473594+00:00" hostname="ci"><testcase
classname="notebooks.01_tiny.ipynb" name="Cell 0" time="0.625" /><testcase
classname="notebooks.01_tiny.ipynb" name="Cell 1" time="0.5"><failure message="x" /></testcase>
<testcase classname="notebooks.02_other.ipynb" name="Cell 0" time="2.0" /><testcase
classname="tests.test_x" name="test_y" time="9.0" /></testsuite></testsuites>"""


def stamped_cell(source: str, start: str, end: str, output: str | None = None):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["execution"] = {
        "iopub.status.busy": start,
        "iopub.execute_input": start,
        "shell.execute_reply": end,
        "iopub.status.idle": end,
    }
    if output is not None:
        cell.outputs = [
            nbformat.v4.new_output("execute_result", {"text/plain": output}, execution_count=1)
        ]
    return cell


def write_notebook(path: Path, spans: list[tuple[str, str]]) -> Path:
    """A chapter whose setup cell shows 'demo' and whose cells ran over ``spans`` (HH:MM:SS)."""
    nb = nbformat.v4.new_notebook()
    day = "2026-12-06T"
    (first_start, first_end), *rest = spans
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A chapter"),
        stamped_cell(
            "from qhd_lib.notebook import setup\nSCALE = setup(seed=0)\nSCALE",
            f"{day}{first_start}.000000Z",
            f"{day}{first_end}.000000Z",
            output="'demo'",
        ),
        *(stamped_cell("pass", f"{day}{s}.000000Z", f"{day}{e}.000000Z") for s, e in rest),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_times_are_read_from_the_execution_stamps_of_the_cells(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "01_tiny.ipynb", [("10:00:00", "10:00:01"), ("10:00:03", "10:00:13")]
    )
    times = exec_times.notebook_times(path)
    assert times["scale"] == "demo"
    assert times["executed_at"] == "2026-12-06T10:00:00Z"
    assert times["finished_at"] == "2026-12-06T10:00:13Z"
    assert times["wall_s"] == 13.0  # first start to last end, the gap between cells included
    assert times["cells_s"] == 11.0  # the cells' own times only
    assert times["code_cells"] == 2


def test_a_notebook_without_execution_stamps_is_refused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 + 1")]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    with pytest.raises(ValueError, match="make notebooks"):
        exec_times.notebook_times(tmp_path / "plain.ipynb")


def test_smoke_times_sum_the_cell_tests_of_each_notebook(tmp_path: Path) -> None:
    junit = tmp_path / "nbtest-junit.xml"
    junit.write_text(JUNIT)
    smoke = exec_times.smoke_times(junit)
    assert smoke["chapters"] == {
        "01_tiny": {"s": 1.125, "cells": 2, "failed": 1},
        "02_other": {"s": 2.0, "cells": 1, "failed": 0},
    }
    assert smoke["date"].startswith("2026-12-07") and smoke["scale"] == "smoke"


def test_durations_read_like_a_clock() -> None:
    assert [exec_times.duration(s) for s in (None, 0.4, 41.6, 185, 3725)] == [
        "–",
        "0 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
    ]


@pytest.fixture
def chapters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two executed chapters in a folder of their own; no JUnit file of the repository is read."""
    monkeypatch.setattr(exec_times, "JUNIT_FILE", tmp_path / "absent.xml")
    write_notebook(tmp_path / "nb" / "01_tiny.ipynb", [("10:00:00", "10:00:01")])
    write_notebook(tmp_path / "nb" / "02_other.ipynb", [("11:00:00", "11:01:05")])
    return tmp_path


def run_cli(root: Path, *extra: str) -> int:
    return exec_times.main(
        ["--notebooks", str(root / "nb"), "--out", str(root / "times.json")]
        + ["--page", str(root / "page.md"), *extra]
    )


def test_the_command_records_times_with_provenance_and_writes_the_page(chapters: Path) -> None:
    junit = chapters / "nbtest-junit.xml"
    junit.write_text(JUNIT)
    assert run_cli(chapters, "--junit", str(junit)) == 0
    data = json.loads((chapters / "times.json").read_text())
    assert list(data["chapters"]) == ["01_tiny", "02_other"]
    assert data["chapters"]["02_other"]["wall_s"] == 65.0
    assert data["chapters"]["01_tiny"]["smoke_s"] == 1.125
    assert f"{os.cpu_count()}-core CPU" in data["note"] and "shared" in data["note"]
    made = data["provenance"]
    assert made["command"].startswith("python -m qhd_lib.exec_times")
    for key in ("git_commit", "dirty", "date", "device", "packages"):
        assert key in made
    assert "load_average_1_5_15" in made["device"]
    page = (chapters / "page.md").read_text()
    assert page == exec_times.markdown(data)
    assert "| 1 min 05 s |" in page and "`make nbtest`" in page


def test_smoke_times_are_kept_when_no_junit_file_is_given(chapters: Path) -> None:
    junit = chapters / "nbtest-junit.xml"
    junit.write_text(JUNIT)
    run_cli(chapters, "--junit", str(junit))
    run_cli(chapters)
    data = json.loads((chapters / "times.json").read_text())
    assert data["chapters"]["02_other"]["smoke_s"] == 2.0
    assert data["smoke"]["date"].startswith("2026-12-07")


def test_check_fails_once_a_chapter_is_executed_again(chapters: Path) -> None:
    run_cli(chapters)
    assert run_cli(chapters, "--check") == 0
    write_notebook(chapters / "nb" / "01_tiny.ipynb", [("12:00:00", "12:00:02")])
    assert run_cli(chapters, "--check") == 1


def test_the_recorded_times_and_the_page_match_the_committed_chapters() -> None:
    notebooks = sorted((ROOT / exec_times.NOTEBOOKS).glob("*.ipynb"))
    problems = exec_times.stale(exec_times.load(), notebooks, exec_times.PAGE)
    assert not problems, "\n".join(problems)


def test_the_statistics_page_is_in_the_book_and_the_badges_are_built_in() -> None:
    assert "book/exec_times" in (ROOT / "_toc.yml").read_text()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "qhd_lib.sphinx_exec_times" in config["sphinx"]["extra_extensions"]


def test_the_run_time_badge_goes_right_under_the_chapter_title(monkeypatch) -> None:
    from docutils import nodes
    from docutils.frontend import get_default_settings
    from docutils.parsers.rst import Parser
    from docutils.utils import new_document

    from qhd_lib import sphinx_exec_times

    document = new_document("chapter", get_default_settings(Parser))
    section = nodes.section("", nodes.title(text="A chapter"), nodes.paragraph(text="Intro."))
    document += section

    class Env:
        docname = "notebooks/01_tiny"

        def note_dependency(self, path: str) -> None:
            self.dependency = path

    class App:
        env = Env()

    data = {"chapters": {"01_tiny": {"wall_s": 41.0, "scale": "demo", "smoke_s": 3.2}}}
    data["chapters"]["01_tiny"]["executed_at"] = "2026-12-06T10:00:00Z"
    data["provenance"] = {"device": {"cpu_count": 2}}
    monkeypatch.setattr(exec_times, "load", lambda *args: data)
    sphinx_exec_times.add_run_time(App(), document)
    badge = section[1]
    assert isinstance(badge, nodes.paragraph) and "exec-times" in badge["classes"]
    assert badge.astext().startswith("Run time 41 s at demo scale (2-core CPU, 2026-12-06)")
    assert "3 s at smoke scale (CI)" in badge.astext()
    assert section[2].astext() == "Intro."
    assert App.env.dependency == str(exec_times.RESULTS_FILE)
