"""Scoring samples: FID, KID and IS of a run's evaluation or of a ``.npz`` made elsewhere.

:func:`evaluate_samples` scores a file that ``experiments sample`` wrote, so that samples drawn on
one machine (say a GPU) can be scored on another, where the Inception weights are.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from qhd_lib import io, provenance
from qhd_lib.errors import ConfigError, DataError


def measure(
    images: np.ndarray,
    dataset: str,
    n_real: int,
    seed: int,
    real_split: str = "train",
    progress: bool = True,
    *,
    weights: str = "f32",
    device: str = "cpu",
) -> dict[str, Any]:
    """FID, KID ± std, IS ± std of ``images`` (torch is imported only here), with the Inception
    ``weights`` ("f32" exact, "f16" upcast) on the torch ``device``; the result names both."""
    from qhd_lib import metrics

    return metrics.evaluate(
        images,
        dataset,
        n_real=n_real,
        real_split=real_split,
        seed=seed,
        progress=progress,
        weights=weights,
        device=device,
    )


def evaluate_samples(
    samples: str | Path,
    dataset: str,
    *,
    n_real: int = 7_000,
    seed: int = 42,
    real_split: str = "train",
    out: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """FID/KID/IS of a ``.npz`` of samples; written to ``out`` (default: beside the samples)."""
    samples = Path(samples)
    if not samples.is_file():
        raise DataError(f"samples file {samples} does not exist; draw it with `experiments sample`")
    if n_real < 2:
        raise ConfigError(f"n_real must be at least 2, got {n_real}")
    images = io.load_images(samples)
    t = time.perf_counter()
    result = {
        "samples_file": str(samples),
        "metrics": measure(images, dataset, n_real, seed, real_split, progress),
    }
    result["metrics_wall_s"] = time.perf_counter() - t
    result["provenance"] = provenance.record(command or "(called from Python)", seed=seed)
    out = Path(out) if out is not None else samples.with_name(samples.stem + "_metrics.json")
    io.write_json(out, result)
    return result
