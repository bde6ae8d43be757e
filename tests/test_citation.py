"""``CITATION.cff`` cites the book as it is (title, version, address) and the paper it reproduces
as the bibliography does; the book and the README say how to cite both."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CFF_REQUIRED = ("cff-version", "message", "title", "authors")


def citation() -> dict:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def bib_entry(key: str) -> dict[str, str]:
    """The fields of one entry of ``book/references.bib`` (braces and TeX accents kept)."""
    text = (ROOT / "book" / "references.bib").read_text(encoding="utf-8")
    body = re.search(rf"@\w+\{{{key},(.*?)\n\}}", text, re.DOTALL)
    assert body, f"no entry {key} in book/references.bib"
    return {
        name.lower(): value.strip()
        for name, value in re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?\s*$", body[1], re.MULTILINE)
    }


def test_citation_file_is_valid_cff_with_the_required_keys() -> None:
    cff = citation()
    for key in CFF_REQUIRED:
        assert cff.get(key), f"CITATION.cff lacks {key!r}"
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] in ("software", "dataset")
    for author in cff["authors"]:
        assert author.get("name") or author.get("family-names"), author
    for reference in cff.get("references", []):
        assert reference.get("type") and reference.get("title") and reference.get("authors")


def test_citation_names_the_book_and_its_version() -> None:
    cff = citation()
    assert cff["authors"] == [{"name": "The qhd-book authors"}]
    assert str(cff["version"]) == pyproject()["project"]["version"], (
        "CITATION.cff's version differs from pyproject.toml's"
    )
    book = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert cff["title"] == book["title"]
    assert cff["license"] == pyproject()["project"]["license"]


def test_citation_references_the_paper_as_the_bibliography_does() -> None:
    (paper,) = [r for r in citation()["references"] if "Diffusion" in r["title"]]
    bib = bib_entry("defalco2024qhd")
    assert paper["title"] == bib["title"]
    assert str(paper["year"]) == bib["year"]
    assert paper["doi"] == bib["doi"]
    assert paper["journal"] == bib["journal"].replace('{\\"u}', "ü")
    names = [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]]
    assert " and ".join(names) == bib["author"]


def test_the_book_and_the_readme_say_how_to_cite_the_book_and_the_paper() -> None:
    doi = bib_entry("defalco2024qhd")["doi"]
    for document in ("book/intro.md", "README.md"):
        text = (ROOT / document).read_text(encoding="utf-8")
        section = text.split("## How to cite", 1)
        assert len(section) == 2, f"{document} has no 'How to cite' section"
        cite = section[1].split("\n## ", 1)[0]
        assert "The qhd-book authors" in cite and "CITATION.cff" in cite, document
        assert doi in cite, f"{document}: the paper's DOI is missing from 'How to cite'"
