"""The repository has one address, ``[project.urls] Repository`` in ``pyproject.toml``; every other
place that names it (the book's configuration, the citation file, the README, the library, the
chapters' install line) says the same."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
URL = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"][
    "Repository"
]
#: Folders that hold no text of the project's own (environments, builds, caches, data).
SKIPPED = {".git", ".venv", "_build", "build", ".nox", "results", "__pycache__", ".pytest_cache"}
SKIPPED_SUFFIXES = {".pyc", ".png", ".npz", ".msgpack", ".gz", ".pth", ".pt", ".whl"}


def text_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        parts = path.relative_to(ROOT).parts
        if any(p in SKIPPED or p.endswith(".egg-info") for p in parts) or not path.is_file():
            continue
        if path.suffix in SKIPPED_SUFFIXES or path.stat().st_size > 50_000_000:
            continue
        found.append(path)
    return found


def read(path: Path) -> str:
    """The file as text, or nothing for a binary file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def test_the_repository_url_is_an_https_github_address() -> None:
    parts = urlsplit(URL)
    assert parts.scheme == "https" and parts.netloc == "github.com", URL
    assert re.fullmatch(r"/[\w.-]+/[\w.-]+", parts.path), URL


def test_the_book_configuration_links_the_repository() -> None:
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"]["url"] == URL


def test_the_citation_file_names_the_repository() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["repository-code"] == URL


def chapters() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", chapters(), ids=lambda p: p.stem)
def test_every_chapter_installs_the_library_from_the_repository(path: Path) -> None:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    setup = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    assert f"git+{URL}" in setup, f"{path.name}: the install line does not use {URL}"


def test_every_mention_of_the_repository_is_the_one_address() -> None:
    """Any ``github.com/<owner>/...`` link with the repository's owner is the address itself (or
    a page under it), in every text file of the project: no copy with another name or a typo."""
    owner = urlsplit(URL).path.split("/")[1]
    mention = re.compile(rf"(?:https?://)?github\.com/{re.escape(owner)}/[^\s\"'<>`)\]\\,;]*")
    wrong = []
    for path in text_files():
        for found in mention.findall(read(path)):
            address = found if found.startswith("http") else f"https://{found}"
            address = address.removesuffix(".git").rstrip(".")
            if address != URL and not address.startswith(URL + "/"):
                wrong.append(f"{path.relative_to(ROOT)}: {found}")
    assert not wrong, f"other addresses than {URL}:\n" + "\n".join(wrong)


def test_the_sweep_finds_the_known_mentions() -> None:
    """The check above reads something: the configuration and the chapters name the address."""
    names = {p.relative_to(ROOT).as_posix() for p in text_files() if URL in read(p)}
    assert {"_config.yml", "CITATION.cff", "README.md", "pyproject.toml"} <= names
    assert sum(n.startswith("notebooks/") for n in names) == len(chapters())
