"""How long each chapter takes to run, read from the executed notebooks themselves.

When nbclient executes a notebook (``make notebooks`` does, at demo scale) it stamps every code
cell's metadata with the moment its execution started (``execution.iopub.execute_input``) and the
moment the kernel replied (``execution.shell.execute_reply``). :func:`notebook_times` reads those
stamps: the *wall time* from the first cell's start to the last cell's end, and the *cell time*,
the sum of the cells' own times (the rest is the time between cells; the kernel's start-up is in
neither). ``make nbtest`` runs the chapters at smoke scale under pytest and writes a JUnit XML
(``_build/nbtest-junit.xml``); :func:`smoke_times` sums its per-cell durations by notebook.

``python -m qhd_lib.exec_times`` writes both into ``results/exec_times.json``, with the provenance
every result carries, and writes the book's page ``book/exec_times.md`` from that file; ``--check``
says whether the two are current (a test checks the same). The Sphinx extension
:mod:`qhd_lib.sphinx_exec_times` puts each chapter's time under its title when the book is built.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from qhd_lib import io, provenance

ROOT = provenance.ROOT
RESULTS_FILE = ROOT / "results" / "exec_times.json"
PAGE = ROOT / "book" / "exec_times.md"
JUNIT_FILE = ROOT / "_build" / "nbtest-junit.xml"
NOTEBOOKS = "notebooks"
START, END = "iopub.execute_input", "shell.execute_reply"
PACKAGES = ("qhd-book", "jax", "jaxlib", "flax", "numpy", "nbclient", "nbval", "ipykernel")


def note(cores: int | None) -> str:
    """What the times are and are not, for a file written on a machine with ``cores`` cores."""
    machine = f"a {cores}-core CPU" if cores else "a CPU"
    return (
        "Demo-scale times are read from the execution stamps nbclient wrote into each committed "
        "notebook when it last executed it; they run from the start of the first code cell to the "
        f"end of the last and leave out the kernel's start-up. They were taken on {machine} that "
        "may have been shared with background runs (the book's training runs, other jobs), and a "
        "notebook does not record the machine's load while it ran: provenance.device describes "
        "the machine and its load when this file was written (`make notebooks` writes it right "
        "after executing the chapters), not necessarily during the runs. Smoke-scale times are "
        "the per-cell test durations of `make nbtest` (pytest --nbval-lax, QHD_SCALE=smoke) "
        "summed per notebook, kernel start-up included."
    )


def _stamp(value: str) -> dt.datetime:
    """A Jupyter timestamp (ISO 8601, ``Z`` for UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _scale_of(cells: Iterable[Mapping[str, Any]]) -> str | None:
    """The scale the setup cell displayed (its last line is ``SCALE``), None if it shows none."""
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = "".join(cell.get("source", ""))
        if "setup(" not in source:
            continue
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/plain")
            if text:
                return "".join(text).strip().strip("'\"")
        return None
    return None


def notebook_times(path: str | Path) -> dict[str, Any]:
    """Wall time and summed cell time of one executed notebook, from its cells' stamps.

    Returns ``notebook`` (the path relative to the repository where it lies inside it), ``scale``
    (what the setup cell displayed), ``executed_at`` and ``finished_at`` (UTC), ``wall_s``,
    ``cells_s`` and ``code_cells`` (how many code cells carry both stamps). Raises ``ValueError``
    when no code cell carries them, i.e. the notebook was saved without being executed by nbclient.
    """
    path = Path(path)
    notebook = json.loads(path.read_text(encoding="utf-8"))
    spans = []
    for cell in notebook["cells"]:
        execution = cell.get("metadata", {}).get("execution", {})
        if cell["cell_type"] == "code" and START in execution and END in execution:
            spans.append((_stamp(execution[START]), _stamp(execution[END])))
    if not spans:
        raise ValueError(
            f"{path}: no code cell carries nbclient's execution stamps ({START}, {END}); "
            "execute it with `make notebooks` (jupyter nbconvert --execute) first"
        )
    start, end = min(s for s, _ in spans), max(e for _, e in spans)
    resolved = path.resolve()
    return {
        "notebook": resolved.relative_to(ROOT).as_posix()
        if resolved.is_relative_to(ROOT)
        else str(path),
        "scale": _scale_of(notebook["cells"]),
        "executed_at": _utc(start),
        "finished_at": _utc(end),
        "wall_s": round((end - start).total_seconds(), 3),
        "cells_s": round(sum((e - s).total_seconds() for s, e in spans), 3),
        "code_cells": len(spans),
    }


def smoke_times(junit: str | Path) -> dict[str, Any]:
    """Per-notebook smoke-scale times from the JUnit XML of ``make nbtest``.

    nbval makes one test per code cell, named ``Cell N`` with class ``notebooks.<stem>.ipynb``;
    their durations are summed per notebook (the first cell's includes the kernel's start-up).
    Returns ``source``, ``date`` (the test session's start), ``host`` and ``chapters``:
    ``{stem: {"s", "cells", "failed"}}``.
    """
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    chapters: dict[str, dict[str, Any]] = {}
    for suite in suites:
        for case in suite.iter("testcase"):
            classname = case.get("classname", "")
            if not classname.endswith(".ipynb"):
                continue
            stem = classname.removesuffix(".ipynb").rsplit(".", 1)[-1]
            entry = chapters.setdefault(stem, {"s": 0.0, "cells": 0, "failed": 0})
            entry["s"] += float(case.get("time", 0.0))
            entry["cells"] += 1
            entry["failed"] += any(child.tag in ("failure", "error") for child in case)
    for entry in chapters.values():
        entry["s"] = round(entry["s"], 3)
    junit = Path(junit).resolve()
    return {
        "source": junit.relative_to(ROOT).as_posix() if junit.is_relative_to(ROOT) else str(junit),
        "scale": "smoke",
        "command": "make nbtest",
        "date": suites[0].get("timestamp") if suites else None,
        "host": suites[0].get("hostname") if suites else None,
        "chapters": chapters,
    }


def measure(notebooks: Iterable[Path], smoke: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The times of ``notebooks`` (``chapters``, by stem) and of the smoke run (``smoke``)."""
    chapters = {}
    for path in notebooks:
        times = notebook_times(path)
        found = (smoke or {}).get("chapters", {}).get(path.stem)
        times["smoke_s"] = found["s"] if found else None
        chapters[path.stem] = times
    smoke_info = None
    if smoke:
        smoke_info = {k: v for k, v in smoke.items() if k != "chapters"}
        known = smoke["chapters"]
        smoke_info["chapters"] = {stem: known[stem] for stem in chapters if stem in known}
    return {"chapters": chapters, "smoke": smoke_info}


def load(path: str | Path = RESULTS_FILE) -> dict[str, Any] | None:
    """The recorded times, None when the file does not exist."""
    path = Path(path)
    return io.read_json(path) if path.is_file() else None


def duration(seconds: float | None) -> str:
    """``41 s``, ``3 min 05 s`` or ``1 h 02 min``; an en dash when unknown."""
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def machine(data: Mapping[str, Any]) -> str:
    """``2-core CPU`` (the cores of the machine that wrote the file), or ``CPU``."""
    cores = (data.get("provenance") or {}).get("device", {}).get("cpu_count")
    return f"{cores}-core CPU" if cores else "CPU"


def badge(data: Mapping[str, Any], stem: str) -> list[str] | None:
    """The short texts shown under a chapter's title: its demo time, and its smoke time if known."""
    chapter = data.get("chapters", {}).get(stem)
    if chapter is None:
        return None
    texts = [
        f"Run time {duration(chapter['wall_s'])} at {chapter['scale'] or 'unknown'} scale "
        f"({machine(data)}, {chapter['executed_at'][:10]})"
    ]
    if chapter.get("smoke_s") is not None:
        texts.append(f"{duration(chapter['smoke_s'])} at smoke scale (CI)")
    return texts


def markdown(data: Mapping[str, Any]) -> str:
    """The book's page ``book/exec_times.md``, written from the recorded times."""
    chapters = data["chapters"]
    lines = [
        "# Execution statistics",
        "",
        "How long each chapter took the last time it was executed. *Wall time* runs from the "
        "start of a chapter's first code cell to the end of its last, *cell time* is the sum of "
        "the cells' own times (the rest is the time between cells), and neither includes the "
        "kernel's start-up. The times are read from the committed notebooks by "
        "`python -m qhd_lib.exec_times`, which `make notebooks` runs after executing every "
        "chapter; it writes `results/exec_times.json` and this page.",
        "",
        f"The demo-scale runs were made on a {machine(data)} that may have been shared with "
        "background runs, such as the book's training runs; a "
        "notebook does not record the machine's load while it ran, so read small differences "
        "between chapters with care.",
        "",
        "| chapter | scale | executed (UTC) | wall time | cell time | code cells "
        "| smoke scale (CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for stem, c in chapters.items():
        lines.append(
            f"| {{doc}}`../{NOTEBOOKS}/{stem}` | {c['scale'] or '–'} | "
            f"{c['executed_at'][:16].replace('T', ' ')} | {duration(c['wall_s'])} | "
            f"{duration(c['cells_s'])} | {c['code_cells']} | {duration(c.get('smoke_s'))} |"
        )
    smoke_total = [c.get("smoke_s") for c in chapters.values()]
    lines.append(
        f"| all chapters | | | {duration(sum(c['wall_s'] for c in chapters.values()))} | "
        f"{duration(sum(c['cells_s'] for c in chapters.values()))} | "
        f"{sum(c['code_cells'] for c in chapters.values())} | "
        f"{duration(sum(smoke_total)) if None not in smoke_total else '–'} |"
    )
    lines.append("")
    smoke = data.get("smoke")
    if smoke:
        lines.append(
            f"Smoke-scale times come from `{smoke['source']}`, written by `{smoke['command']}` "
            f"(pytest --nbval-lax with `QHD_SCALE=smoke`, one test per code cell) on "
            f"{(smoke.get('date') or 'an unknown date')[:10]}: the sum of a chapter's cell tests, "
            "the kernel's start-up included."
        )
    else:
        lines.append(
            "Smoke-scale times (CI) are not recorded yet: `make nbtest` writes "
            "`_build/nbtest-junit.xml`, and `python -m qhd_lib.exec_times` then adds them here."
        )
    return "\n".join(lines) + "\n"


def build(
    notebooks: Iterable[Path], junit: Path | None, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The times of ``notebooks``; smoke times from ``junit``, else kept from ``previous``."""
    smoke = smoke_times(junit) if junit is not None else (previous or {}).get("smoke")
    return measure(notebooks, smoke)


def stale(data: Mapping[str, Any] | None, notebooks: list[Path], page: Path) -> list[str]:
    """What is out of date: the recorded times against the notebooks, the page against them."""
    fix = "run `python -m qhd_lib.exec_times`"
    if data is None:
        return [f"no times are recorded: {fix}"]
    problems = []
    recorded = data.get("chapters", {})
    if sorted(recorded) != sorted(p.stem for p in notebooks):
        problems.append(f"the recorded chapters are not those in {NOTEBOOKS}/: {fix}")
    for path in notebooks:
        now = notebook_times(path)
        then = {k: v for k, v in recorded.get(path.stem, {}).items() if k in now}
        if then != now:
            problems.append(f"{path.name} was executed again since its times were recorded: {fix}")
    if not page.is_file() or page.read_text(encoding="utf-8") != markdown(data):
        problems.append(f"{page} is not written from the recorded times: {fix}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Record the times and write the page (``--check``: only say whether both are current)."""
    parser = argparse.ArgumentParser(
        prog="python -m qhd_lib.exec_times",
        description="Write each chapter's run time to results/exec_times.json and the book's "
        "page book/exec_times.md, read from the executed notebooks and, when present, the JUnit "
        "XML of `make nbtest`.",
    )
    parser.add_argument(
        "--junit",
        type=Path,
        help="JUnit XML of `make nbtest` (default: _build/nbtest-junit.xml when it exists; "
        "without one, the smoke times already recorded are kept)",
    )
    parser.add_argument(
        "--notebooks", type=Path, default=ROOT / NOTEBOOKS, help="folder of the chapters"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_FILE, help="the JSON file to write")
    parser.add_argument("--page", type=Path, default=PAGE, help="the Markdown page to write")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 unless the file matches the notebooks and the page the file",
    )
    provenance.add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    notebooks = sorted(args.notebooks.glob("*.ipynb"))
    previous = load(args.out)
    if args.check:
        problems = stale(previous, notebooks, args.page)
        print("\n".join(problems) or f"{args.out} and {args.page} are current")
        return 1 if problems else 0
    junit = args.junit or (JUNIT_FILE if JUNIT_FILE.is_file() else None)
    found = provenance.apply_arguments(args, args.out)
    device = provenance.device_info(jax_devices=False)
    data = {"note": note(device["cpu_count"]), **build(notebooks, junit, previous)}
    data["provenance"] = provenance.record(
        ["python", "-m", "qhd_lib.exec_times", *(sys.argv[1:] if argv is None else argv)],
        device=device,
        packages=PACKAGES,
        allow_dirty=args.allow_dirty,
        found=found,
    )
    io.write_json(args.out, data, sort_keys=False)
    args.page.write_text(markdown(data), encoding="utf-8")
    print(f"wrote {args.out} and {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
