"""The one writer: atomic files, JSON of numpy values, uint8 image archives."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from qhd_lib import io
from qhd_lib.errors import DataError


def test_write_bytes_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "new" / "file.bin"
    io.write_bytes(path, b"one")
    io.write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["file.bin"]


def test_a_failed_write_keeps_the_old_file_whole(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "file.bin"
    io.write_bytes(path, b"old")

    def killed(*args: object) -> None:
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


@dataclasses.dataclass(frozen=True)
class Config:
    epochs: float
    seeds: tuple[int, ...]


def test_json_holds_numpy_values_paths_and_dataclasses(tmp_path: Path) -> None:
    value = {
        "b": np.float32(0.5),
        "a": np.arange(3),
        "path": Path("results/x"),
        "config": Config(1.0, (42,)),
        "n": np.int64(7),
    }
    io.write_json(tmp_path / "x.json", value)
    assert io.read_json(tmp_path / "x.json") == {
        "a": [0, 1, 2],
        "b": 0.5,
        "config": {"epochs": 1.0, "seeds": [42]},
        "n": 7,
        "path": "results/x",
    }
    assert list(io.read_json(tmp_path / "x.json")) == ["a", "b", "config", "n", "path"]


def test_json_keeps_the_writers_key_order_when_asked(tmp_path: Path) -> None:
    io.write_json(tmp_path / "x.json", {"classical": 1, "1hqconv": 2}, sort_keys=False)
    assert list(io.read_json(tmp_path / "x.json")) == ["classical", "1hqconv"]


def test_json_refuses_objects_it_cannot_write(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot write object"):
        io.write_json(tmp_path / "x.json", {"x": object()})


def test_model_range_rounds_to_uint8_and_clips_beyond_it() -> None:
    images = np.array([-1.0, -0.5, 0.0, 1.0, 1.2, -3.0], np.float32).reshape(1, 2, 3, 1)
    pixels = io.to_uint8(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 2, 3)
    assert pixels.ravel().tolist() == [0, 64, 128, 255, 255, 0]


def test_uint8_images_come_back_unchanged() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert io.to_uint8(pixels) is pixels
    np.testing.assert_array_equal(io.to_uint8(pixels[..., None]), pixels)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_are_refused(bad: float) -> None:
    images = np.zeros((2, 4, 4, 1), np.float32)
    images[1, 2, 3, 0] = bad
    with pytest.raises(DataError, match="1 of 32 pixels are NaN or infinite"):
        io.to_uint8(images)


def test_saved_images_load_back_as_uint8_grayscale(tmp_path: Path) -> None:
    images = np.random.default_rng(0).uniform(-1, 1, (5, 28, 28, 1)).astype(np.float32)
    path = io.save_images(tmp_path / "samples.npz", images)
    loaded = io.load_images(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (5, 28, 28)
    np.testing.assert_array_equal(loaded, io.to_uint8(images))


def test_colour_images_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\(N, H, W\) or \(N, H, W, 1\), got \(2, 4, 4, 3\)"):
        io.save_images(tmp_path / "x.npz", np.zeros((2, 4, 4, 3), np.uint8))


def test_an_archive_without_images_names_the_writer(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", features=np.zeros(3))
    with pytest.raises(DataError, match="no 'images' array"):
        io.load_images(tmp_path / "other.npz")
