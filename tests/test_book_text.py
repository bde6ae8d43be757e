"""The book's prose: spelling (codespell) and links, without building the book or using the network.

Checked documents: ``book/*.md``, ``README.md`` and the markdown cells of ``notebooks/*.ipynb``.
Internal links (markdown links and images, ``{doc}``, ``{ref}``/``{numref}``/``{eq}`` roles,
``{figure}``/``{image}`` paths, ``{cite}`` keys) must point to files, labels (a notebook's figures
are labelled by their cell metadata, ``mystnb.figure.name``), headings and BibTeX entries that
exist; external links are only checked to be well formed. Words codespell wrongly flags go, lower
case and one per line, into ``tests/spelling_wordlist.txt`` (create it when the first one comes).
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORDLIST = Path(__file__).with_name("spelling_wordlist.txt")
BIBLIOGRAPHY = ROOT / "book" / "references.bib"


def documents() -> list[Path]:
    return (
        sorted(ROOT.glob("book/*.md"))
        + [ROOT / "README.md"]
        + sorted(ROOT.glob("notebooks/*.ipynb"))
    )


DOCUMENTS = [path for path in documents() if path.is_file()]


@cache
def markdown_of(path: Path) -> str:
    """The markdown of a document: the file itself, or a notebook's markdown cells."""
    if path.suffix != ".ipynb":
        return path.read_text(encoding="utf-8")
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n\n".join(
        "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        for cell in cells
        if cell["cell_type"] == "markdown"
    )


FENCE = re.compile(r"^(`{3,}|~{3,})(.*?)\n(.*?)^\1[ \t]*$", re.MULTILINE | re.DOTALL)
ROLE = re.compile(r"\{(doc|ref|numref|eq|cite(?::\w+)?)\}`([^`]+)`")
INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
BARE_URL = re.compile(r"(?<![(<\"'])\bhttps?://[^\s<>()\"'`\]]+")
LABEL = re.compile(
    r"^\(([^()\s]+)\)=\s*$|^:(?:label|name):\s*(\S+)|^.*\$\$\s*\(([^()\s]+)\)\s*$", re.MULTILINE
)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
HOST = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}(?::\d+)?", re.IGNORECASE)


def without_code(markdown: str) -> tuple[str, list[tuple[str, str]]]:
    """Drop code blocks (keeping directive bodies) and return the text and the directives'
    (name, argument)."""
    directives = []

    def replace(block: re.Match) -> str:
        info, body = block[2].strip(), block[3]
        directive = re.match(r"\{([\w:-]+)\}\s*(.*)", info)
        if directive is None:
            return "\n"
        directives.append((directive[1], directive[2].strip()))
        return body if directive[1] not in ("code-cell", "code-block", "code", "math") else "\n"

    return FENCE.sub(replace, markdown), directives


def slug(heading: str) -> str:
    """The anchor MyST and GitHub give a heading (lower case, punctuation dropped, spaces to
    '-')."""
    text = re.sub(r"[`*_]|\{[\w:]+\}", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


#: MyST gives headings anchors only when ``myst_heading_anchors`` is set; GitHub always does.
HEADING_ANCHORS = "heading_anchors" in (ROOT / "_config.yml").read_text(encoding="utf-8")


@cache
def anchors_of(path: Path) -> frozenset[str]:
    """Explicit labels, and heading anchors where the renderer makes them, of a document or
    notebook."""
    text, _ = without_code(markdown_of(path))
    labels = {next(group for group in match.groups() if group) for match in LABEL.finditer(text)}
    if HEADING_ANCHORS or path.name == "README.md":
        labels |= {slug(match[1]) for match in HEADING.finditer(text)}
    return frozenset(labels | figure_names(path))


def figure_names(path: Path) -> set[str]:
    """Names of a notebook's numbered figures (cell metadata ``mystnb.figure.name``)."""
    if path.suffix != ".ipynb":
        return set()
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    figures = [cell.get("metadata", {}).get("mystnb", {}).get("figure", {}) for cell in cells]
    return {figure["name"] for figure in figures if figure.get("name")}


@cache
def all_labels() -> frozenset[str]:
    return frozenset().union(*(anchors_of(path) for path in DOCUMENTS))


@cache
def bibtex_keys() -> frozenset[str]:
    return frozenset(
        re.findall(
            r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", BIBLIOGRAPHY.read_text(encoding="utf-8"), re.MULTILINE
        )
    )


def role_target(content: str) -> str:
    """``text <target>`` or ``target``."""
    explicit = re.search(r"<([^<>]+)>\s*$", content)
    return (explicit[1] if explicit else content).strip()


def resolve(document: Path, target: str) -> Path:
    return (ROOT / target.lstrip("/")) if target.startswith("/") else (document.parent / target)


def link_problems(document: Path, markdown: str) -> list[str]:
    """Every link, role, directive path and citation in ``document``'s markdown that does not
    resolve."""
    text, directives = without_code(markdown)
    problems = []
    for role, content in ROLE.findall(text):
        if role == "doc":
            target = role_target(content)
            if not any(
                resolve(document, target + suffix).is_file() for suffix in (".md", ".ipynb", "")
            ):
                problems.append(f"{{doc}}`{content}`: no document {target}(.md|.ipynb)")
        elif role.startswith("cite"):
            for key in (k.strip() for k in content.split(",")):
                if key not in bibtex_keys():
                    problems.append(
                        f"{{{role}}}`{key}`: no such entry in {BIBLIOGRAPHY.relative_to(ROOT)}"
                    )
        elif role_target(content) not in all_labels():
            problems.append(f"{{{role}}}`{content}`: no label {role_target(content)!r} in the book")
    for name, argument in directives:
        if name in ("figure", "image") and argument and not urlsplit(argument).scheme:
            if not resolve(document, argument).is_file():
                problems.append(f"{{{name}}} {argument}: no such file")
    prose = INLINE_CODE.sub(" ", ROLE.sub(" ", text))
    targets = LINK.findall(prose) + AUTOLINK.findall(prose)
    bare = BARE_URL.findall(LINK.sub(" ", AUTOLINK.sub(" ", prose)))
    for target in targets + [url.rstrip(".,;:!?") for url in bare]:
        parts = urlsplit(target)
        if parts.scheme in ("http", "https"):
            if not HOST.fullmatch(parts.netloc):
                problems.append(f"{target}: malformed URL (host {parts.netloc!r})")
        elif parts.scheme == "mailto":
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", parts.path, re.IGNORECASE):
                problems.append(f"{target}: malformed e-mail address")
        elif parts.scheme:
            problems.append(f"{target}: unexpected scheme {parts.scheme!r}")
        else:
            path = resolve(document, unquote(parts.path)) if parts.path else document
            if not path.exists():
                problems.append(
                    f"{target}: no such file "
                    f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                )
            elif (
                parts.fragment
                and path.suffix in (".md", ".ipynb")
                and unquote(parts.fragment) not in anchors_of(path)
            ):
                problems.append(f"{target}: no label or heading {parts.fragment!r} in {path.name}")
    return problems


def misspellings(path: Path, markdown: str, tmp_path: Path) -> str:
    """codespell's report on the document's markdown (empty when it finds nothing)."""
    from codespell_lib import main as codespell

    copy = tmp_path / (path.relative_to(ROOT).as_posix().replace("/", "__") + ".md")
    copy.write_text(markdown, encoding="utf-8")
    report = io.StringIO()
    with redirect_stdout(report):
        wordlist = ["--ignore-words", str(WORDLIST)] if WORDLIST.is_file() else []
        found = codespell(*wordlist, "--check-hidden", str(copy))
    return report.getvalue().replace(str(copy), str(path.relative_to(ROOT))) if found else ""


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_document_has_no_misspelling(document, tmp_path):
    report = misspellings(document, markdown_of(document), tmp_path)
    assert not report, f"{report}(a false alarm? add the word to {WORDLIST.relative_to(ROOT)})"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_document_links_resolve(document):
    problems = link_problems(document, markdown_of(document))
    assert not problems, "\n".join(problems)


def test_checks_catch_a_misspelling_and_broken_links(tmp_path):
    probe = ROOT / "book" / "probe.md"
    markdown = (
        "# Probe\n\nTeh model. See [missing](nowhere.md), [bad anchor](intro.md#no-such-heading), "
        "{doc}`../notebooks/99_none`, {cite}`no_such_key`, {ref}`no-such-label` and https://example.\n\n"
        "```python\nprint('[not a link](elsewhere.md)')\n```\n"
    )
    assert "Teh" in misspellings(probe, markdown, tmp_path)
    problems = "\n".join(link_problems(probe, markdown))
    for expected in (
        "nowhere.md: no such file",
        "no-such-heading",
        "99_none",
        "no_such_key",
        "no-such-label",
        "https://example: malformed URL",
    ):
        assert expected in problems
    assert "elsewhere.md" not in problems
