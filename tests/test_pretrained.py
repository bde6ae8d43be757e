"""The pretrained-parameter loader: checksum, shapes and clear errors (tiny files made here)."""

from __future__ import annotations

import flax.serialization
import jax
import numpy as np
import pytest

from qhd_lib import io, pretrained
from qhd_lib.errors import ConfigError, DataError
from qhd_lib.models import make_model, param_shapes


def zeros_like_model(model: str) -> dict:
    return jax.tree_util.tree_map(
        lambda s: np.zeros(s.shape, np.float32), param_shapes(make_model(model))
    )


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A registry with one file, in a temporary package directory."""
    params = zeros_like_model("classical")
    path = tmp_path / "mnist_classical.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(params))
    item = pretrained.Pretrained(
        "mnist",
        "classical",
        10,
        path.name,
        io.sha256(path),
        "results/epoch1/mnist_classical_seed42",
    )
    monkeypatch.setattr(pretrained, "DIRECTORY", tmp_path)
    monkeypatch.setattr(pretrained, "PRETRAINED", {("mnist", "classical"): item})
    return path


def test_load_returns_the_shipped_parameters(shipped) -> None:
    params = pretrained.load("mnist", "classical")
    assert sum(np.size(x) for x in jax.tree_util.tree_leaves(params)) == 483_321
    assert pretrained.available() == [("mnist", "classical")]


def test_unknown_pair_names_what_is_available(shipped) -> None:
    with pytest.raises(ConfigError, match="available: mnist/classical"):
        pretrained.load("fashion_mnist", "quanvunet")


def test_missing_file_names_the_fix(shipped) -> None:
    shipped.unlink()
    with pytest.raises(DataError, match="missing: reinstall"):
        pretrained.load("mnist", "classical")


def test_corrupt_file_is_refused(shipped) -> None:
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 1
    shipped.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt"):
        pretrained.load("mnist", "classical")


def test_parameters_of_another_model_are_refused_with_their_paths(tmp_path, monkeypatch) -> None:
    path = tmp_path / "wrong.msgpack"
    path.write_bytes(flax.serialization.msgpack_serialize(zeros_like_model("fullhqconv")))
    item = pretrained.Pretrained("mnist", "classical", 10, path.name, io.sha256(path), "")
    monkeypatch.setattr(pretrained, "DIRECTORY", tmp_path)
    monkeypatch.setattr(pretrained, "PRETRAINED", {("mnist", "classical"): item})
    with pytest.raises(DataError, match=r"mid\.resblock_0/.*(missing|unexpected)"):
        pretrained.load("mnist", "classical")


def test_every_registered_file_is_shipped_and_matches_its_checksum() -> None:
    for item in pretrained.PRETRAINED.values():
        assert io.sha256(pretrained.DIRECTORY / item.file) == item.sha256, item.file
