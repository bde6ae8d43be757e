"""The real-vs-real floor of FID and KID: ``n`` test images measured against ``n`` training images.

A generator that drew fresh images from the true distribution would score about this, so it is the
floor under every FID in the book. Also records how long Inception features take on this machine.
Writes ``results/real_vs_real/<dataset>_n<n>.json`` (the epoch-1 experiment reads it as its floor);
the training-set features it computes are cached and reused by ``qhd_lib.metrics.evaluate`` (same
dataset, ``n`` and resize mode).

    python scripts/real_vs_real.py --dataset mnist --n 1000
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qhd_lib import io, metrics, provenance
from qhd_lib.errors import ProvenanceError
from qhd_lib.provenance import ROOT, device_info


def device() -> dict[str, object]:
    """CPU, cores, load average and torch threads (timings on a shared CPU need them)."""
    return {
        "device": "cpu (torch)",
        **device_info(jax_devices=False),
        "torch_threads": metrics._torch().get_num_threads(),
    }


def timed_features(dataset: str, split: str, n: int, resize: str, batch_size: int) -> tuple:
    """Cached real features, wall and CPU seconds, and whether they were computed now (not read)."""
    computed = not metrics.real_features_path(dataset, split, n, resize).is_file()
    start, cpu_start = time.perf_counter(), time.process_time()
    feats = metrics.real_features(dataset, split, n, resize=resize, batch_size=batch_size)
    return feats, time.perf_counter() - start, time.process_time() - cpu_start, computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument(
        "--n", type=int, default=7000, help="images per set (the paper measures 7 000)"
    )
    parser.add_argument("--resize", default=metrics.DEFAULT_RESIZE, choices=metrics.RESIZE_MODES)
    parser.add_argument("--seed", type=int, default=0, help="seed of KID's subsets")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--out", type=Path, help="default: results/real_vs_real/<dataset>_n<n>.json"
    )
    provenance.add_arguments(parser)
    args = parser.parse_args()
    if args.out is None:
        args.out = ROOT / "results" / "real_vs_real" / f"{args.dataset}_n{args.n}.json"
    try:
        started_at = provenance.apply_arguments(args, args.out)
    except ProvenanceError as error:  # refused before any work
        parser.error(str(error))

    start = time.perf_counter()
    test, test_s, test_cpu, test_computed = timed_features(
        args.dataset, "test", args.n, args.resize, args.batch_size
    )
    train, train_s, train_cpu, train_computed = timed_features(
        args.dataset, "train", args.n, args.resize, args.batch_size
    )
    kid_mean, kid_std = metrics.kid_from_features(
        train, test, subset_size=min(100, args.n), seed=args.seed
    )
    computed_s = test_s * test_computed + train_s * train_computed
    computed_cpu = test_cpu * test_computed + train_cpu * train_computed
    computed_n = args.n * (test_computed + train_computed)
    result = {
        "what": f"FID/KID of the first {args.n} {args.dataset} test images against the first "
        f"{args.n} training images (the real-vs-real floor)",
        "dataset": args.dataset,
        "n_per_set": args.n,
        "fid": metrics.fid_from_features(train, test),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": min(100, args.n),
        "kid_subsets": 100,
        "resize": args.resize,
        "weights_sha256": metrics.FEATURES_SHA256,
        "feature_seconds": {
            "test": test_s,
            "train": train_s,
            "computed_now": {"test": test_computed, "train": train_computed},
        },
        "seconds_per_1000_images": 1000 * computed_s / computed_n if computed_n else None,
        "cpu_seconds_per_1000_images": 1000 * computed_cpu / computed_n if computed_n else None,
        "provenance": provenance.record(
            provenance.python_command(),
            seed=args.seed,
            wall_s=time.perf_counter() - start,
            packages=("torch", "torchmetrics", "numpy"),
            device=device(),
            allow_dirty=args.allow_dirty,
            found=started_at,
        ),
    }
    io.write_json(args.out, result, sort_keys=False)
    print(
        json.dumps(
            {k: result[k] for k in ("fid", "kid_mean", "kid_std", "seconds_per_1000_images")}
        )
    )


if __name__ == "__main__":
    main()
