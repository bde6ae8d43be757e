"""Every file the library writes goes through here: atomic bytes, JSON and uint8 image archives.

Atomic means written to a temporary file in the target's folder, flushed to disk and renamed over
the target, so a killed run leaves either the old file or the new one, never half of one. Images
are stored as ``uint8`` (what FID/KID measure and what a PNG holds), converted once by
:func:`to_uint8`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from qhd_lib.errors import DataError

IMAGES_KEY = "images"


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_default(obj: Any) -> Any:
    """JSON for what ``json`` cannot write: numpy scalars and arrays, paths, dataclasses."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON; convert it to a dict first")


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = True) -> Path:
    """Write ``obj`` as indented JSON atomically; numpy values become numbers, paths strings.

    Keys are sorted unless ``sort_keys=False`` keeps the writer's order (a table that a chapter
    prints row by row, in the paper's column order).
    """
    text = json.dumps(obj, indent=1, sort_keys=sort_keys, default=_json_default) + "\n"
    return write_bytes(path, text.encode())


def sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (weights and parameter files are large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def as_json(obj: Any) -> Any:
    """``obj`` as it reads back from a file :func:`write_json` wrote (tuples become lists, numpy
    values numbers), so a value can be compared with a saved one."""
    return json.loads(json.dumps(obj, default=_json_default))


def read_json(path: str | Path) -> Any:
    """The JSON value stored at ``path``."""
    return json.loads(Path(path).read_text())


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Grayscale images as ``uint8`` (N, H, W): floats in the model's range [-1, 1] are rounded
    to 0..255 (values outside are clipped), ``uint8`` images are returned unchanged.

    Rounding (not truncation) makes ``uint8 -> [-1, 1] -> uint8`` the identity. A NaN or infinite
    pixel raises :class:`~qhd_lib.errors.DataError`: it means the sampler diverged.
    """
    images = _grayscale(np.asarray(images))
    if images.dtype == np.uint8:
        return images
    if not np.issubdtype(images.dtype, np.floating):
        raise DataError(
            f"expected uint8 images in [0, 255] or floats in [-1, 1], got dtype {images.dtype}"
        )
    bad = int(np.size(images) - np.count_nonzero(np.isfinite(images)))
    if bad:
        raise DataError(
            f"{bad} of {images.size} pixels are NaN or infinite; the model or sampler diverged: "
            "check the training log and sample from an earlier epoch's parameters"
        )
    pixels = np.rint((images.astype(np.float64) + 1.0) * 127.5)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _grayscale(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 1) or (N, H, W) images as (N, H, W); any other shape is an error."""
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise DataError(
            f"expected grayscale images of shape (N, H, W) or (N, H, W, 1), got {images.shape}"
        )
    return images


def save_images(path: str | Path, images: np.ndarray) -> Path:
    """Store images as a compressed ``.npz`` (key ``images``, uint8 (N, H, W)), atomically."""
    buffer = BytesIO()
    np.savez_compressed(buffer, **{IMAGES_KEY: to_uint8(images)})
    return write_bytes(path, buffer.getvalue())


def load_images(path: str | Path) -> np.ndarray:
    """The uint8 images (N, H, W) stored by :func:`save_images`."""
    with np.load(path) as archive:
        if IMAGES_KEY not in archive:
            raise DataError(
                f"{path} has no '{IMAGES_KEY}' array; write it with qhd_lib.io.save_images"
            )
        images = archive[IMAGES_KEY]
    if images.dtype != np.uint8:
        raise DataError(f"{path} holds {images.dtype} images, expected uint8; rewrite it")
    return _grayscale(images)
