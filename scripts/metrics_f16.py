"""The float16 Inception weights against the exact ones: FID and KID of the same images with each.

A GPU lent in slots (issue 19) can take 64 MiB along; the f32 Inception file is 84 MB. Its float16
copy (`qhd_lib.metrics.write_f16_weights`, 42 MB), upcast to float32 when loaded, can travel. This
measures what the rounding of the weights does: the 1 000 samples of chapter 8's classical run
(seed 43) against the first 1 000 training images, FID and KID with (a) the exact f32 weights and
(b) the f16 copy upcast; the relative FID difference must stay below `TARGET_RELATIVE_FID`. Also:
the Fréchet distance between the f32 and the f16 features of the same real images (what the
rounding alone moves), the largest feature difference, both files' sizes, and this CPU's time for
an Inception pass (measured on 1 000 images, scaled to 7 000: one paper evaluation).

    python scripts/metrics_f16.py            # writes the f16 file and results/metrics_f16.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qhd_lib import data, io, metrics, provenance  # noqa: E402
from qhd_lib.errors import ProvenanceError  # noqa: E402

TARGET_RELATIVE_FID = 1e-3  # |FID(f16) - FID(f32)| / FID(f32)
SAMPLES = ROOT / "results" / "epoch1" / "mnist_classical_seed43" / "samples_epoch1.npz"
PAPER_SAMPLES = 7_000


def _relative(path: Path) -> str:
    """``path`` relative to the repository where it lies in it (as results name files)."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def timed_features(images: np.ndarray, weights: str) -> tuple[np.ndarray, float]:
    """Inception features of ``images`` with ``weights`` on the CPU, and the seconds they took
    (the network's loading excluded: it is loaded before the clock starts)."""
    metrics.inception(weights=weights)
    t0 = time.perf_counter()
    feats = metrics.features(images, weights=weights, progress=False)
    return feats, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES, help="uint8 samples (.npz)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--n-real", type=int, default=1_000, help="first N training images")
    parser.add_argument("--seed", type=int, default=43, help="KID's subset draws (the run's seed)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "metrics_f16.json")
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        started_at = provenance.apply_arguments(args, args.out)
    except ProvenanceError as error:  # refused before any work
        parser.error(str(error))
    start = time.perf_counter()
    load_before = os.getloadavg()
    written = metrics.write_f16_weights()
    if written["sha256"] != metrics.F16_SHA256:
        parser.error(
            f"the float16 file has sha256 {written['sha256']}, not qhd_lib.metrics.F16_SHA256 "
            f"{metrics.F16_SHA256}: another torch writes other bytes; use requirements.txt"
        )
    fake = io.load_images(args.samples)
    real = data.load(args.dataset, "train")[0][: args.n_real]
    found: dict[str, dict] = {}
    feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for weights in metrics.WEIGHTS:
        fake_f, fake_s = timed_features(fake, weights)
        real_f, real_s = timed_features(real, weights)
        feats[weights] = real_f, fake_f
        kid_mean, kid_std = metrics.kid_from_features(real_f, fake_f, seed=args.seed)
        found[weights] = {
            "weights": metrics.WEIGHTS_USED[weights],
            "weights_sha256": metrics.weights_sha256(weights),
            "fid": metrics.fid_from_features(real_f, fake_f),
            "kid_mean": kid_mean,
            "kid_std": kid_std,
            "inception_s": {"fake": round(fake_s, 1), "real": round(real_s, 1)},
        }
        print(weights, found[weights], flush=True)
    exact, upcast = found["f32"], found["f16"]
    relative = abs(upcast["fid"] - exact["fid"]) / exact["fid"]
    per_image_s = exact["inception_s"]["fake"] / len(fake)
    (real32, fake32), (real16, fake16) = feats["f32"], feats["f16"]
    both32, both16 = np.concatenate([real32, fake32]), np.concatenate([real16, fake16])
    result = {
        "what": "FID/KID of the same samples against the same real images with the exact f32 "
        "Inception weights and with the weights stored as float16 and upcast to float32 "
        "(qhd_lib.metrics, resize tf1); target: relative FID difference < "
        f"{TARGET_RELATIVE_FID:g}",
        "samples": _relative(args.samples),
        "n_fake": len(fake),
        "real": f"first {len(real)} {args.dataset} training images",
        "f32": exact,
        "f16": upcast,
        "fid_relative_difference": relative,
        "fid_absolute_difference": abs(upcast["fid"] - exact["fid"]),
        "kid_absolute_difference": abs(upcast["kid_mean"] - exact["kid_mean"]),
        "passes": relative < TARGET_RELATIVE_FID,
        "target_relative_fid": TARGET_RELATIVE_FID,
        "fid_f32_vs_f16_features_of_the_real_images": metrics.fid_from_features(real32, real16),
        "feature_max_abs_difference": float(np.max(np.abs(both32 - both16))),
        "feature_max_abs": float(np.max(np.abs(both32))),
        "files": {
            "f32_bytes": metrics.features_weights_path().stat().st_size,
            "f16_bytes": written["bytes"],
            "f16_file": metrics.F16_FILE,
            "f16_sha256": written["sha256"],
        },
        "cpu_inception": {
            "seconds_per_1000_images": round(1000 * per_image_s, 1),
            "seconds_per_7000_images": round(PAPER_SAMPLES * per_image_s, 1),
            "how": f"the f32 pass over the {len(fake)} samples (batches of 50, network loaded "
            f"before timing), scaled to {PAPER_SAMPLES} images; torch threads: "
            f"{metrics._torch().get_num_threads()}",
        },
        "provenance": {
            **provenance.record(
                provenance.python_command([sys.argv[0], *(sys.argv[1:] if argv is None else argv)]),
                seed=args.seed,
                wall_s=round(time.perf_counter() - start, 1),
                packages=("qhd-book", "torch", "numpy"),
                allow_dirty=args.allow_dirty,
                found=started_at,
                device=provenance.device_info(jax_devices=False),
            ),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
    }
    io.write_json(args.out, result, sort_keys=False)
    print(f"relative FID difference {relative:.2e} (< {TARGET_RELATIVE_FID:g}?); {args.out}")
    return result


if __name__ == "__main__":
    main()
