"""Pretrained EMA parameters that ship with the library, loadable in one call.

``load("mnist", "classical")`` returns the EMA parameters of a U-Net trained by the book's own
runs (`experiments`, 10 epochs at the paper's settings; the run that made each file is named in
`PRETRAINED`). The files are package data of `qhd_lib`, so installing the library (pip, a git
install on Colab) brings them; each is checked against the SHA-256 recorded here before use, and
against the shapes of the model it claims to be.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import flax.serialization

from qhd_lib.errors import ConfigError, DataError
from qhd_lib.train import param_mismatches

DIRECTORY = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """One shipped parameter file: what it is, where it came from, its checksum."""

    dataset: str
    model: str
    epochs: int
    file: str  # inside `DIRECTORY`
    sha256: str
    run: str  # the results/ directory of the run that made it (provenance, metrics)


PRETRAINED: dict[tuple[str, str], Pretrained] = {
    # written by scripts/ship_pretrained.py from the EMA parameters at the run's last evaluation
    ("mnist", "classical"): Pretrained(
        "mnist",
        "classical",
        10,
        "mnist_classical.msgpack",
        "e7dccd42ebf24c365a67f6deea2138001398a48718f89c9f109be0de988c786a",
        "results/epoch1/mnist_classical_seed42",
    ),
    ("mnist", "fullhqconv"): Pretrained(
        "mnist",
        "fullhqconv",
        10,
        "mnist_fullhqconv.msgpack",
        "5b301e3548fc4465b0a4950b85abf3afb34c87d31f1e5818cbe448e41f7ee43b",
        "results/epoch1/mnist_fullhqconv_seed42",
    ),
}


def available() -> list[tuple[str, str]]:
    """The (dataset, model) pairs with shipped parameters."""
    return sorted(PRETRAINED)


def load_file(path: str | Path, expected_sha256: str) -> Any:
    """The parameter tree in ``path`` (msgpack, as `qhd_lib.train.save_params` writes it), after
    checking its SHA-256."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"pretrained parameters {path} are missing: reinstall qhd-book (pip "
            "install --force-reinstall) or restore the file with `git checkout -- "
            f"{path.name}` in a clone"
        )
    raw = path.read_bytes()
    found = hashlib.sha256(raw).hexdigest()
    if found != expected_sha256:
        raise DataError(
            f"pretrained parameters {path} are corrupt (SHA-256 {found[:16]}…, "
            f"expected {expected_sha256[:16]}…): reinstall qhd-book or restore the file"
        )
    return flax.serialization.msgpack_restore(raw)


def entry(dataset: str, model: str) -> Pretrained:
    """The registry entry of (dataset, model), or a `ConfigError` listing what exists."""
    try:
        return PRETRAINED[(dataset, model)]
    except KeyError:
        have = ", ".join(f"{d}/{m}" for d, m in available()) or "none yet"
        raise ConfigError(f"no pretrained {model} U-Net for {dataset}; available: {have}") from None


def load(dataset: str, model: str) -> Any:
    """EMA parameters of the pretrained ``model`` for ``dataset``, checked (checksum, shapes)."""
    from qhd_lib.models import make_model, param_shapes

    item = entry(dataset, model)
    params = load_file(DIRECTORY / item.file, item.sha256)
    check_shapes(params, param_shapes(make_model(model)), f"{dataset}/{model}")
    return params


def check_shapes(params: Any, expected: Any, what: str) -> None:
    """Raise `DataError` naming every parameter path whose presence or shape differs."""
    problems = param_mismatches(params, expected)
    if problems:
        raise DataError(
            f"pretrained parameters {what} do not fit the model: {'; '.join(problems[:3])} "
            f"({len(problems)} paths missing, unexpected or of another shape): reinstall qhd-book"
        )
