"""Speed of the fast simulator vs PennyLane default.qubit (jit + vmap, backprop) on this CPU.

Writes results/bench_circuits.json. Cases: HQConv and FQConv (3 layers, 12 qubits), batch 128
(one vertex call) and 6 272 (128 images × 49 patches, one QuanvU-Net call), forward and
forward + backward (gradients w.r.t. inputs and θ); plus HQConv forward at batch 343 000 (one
QuanvU-Net call while sampling 7 000 images) on the fast simulator only.

Usage: JAX_PLATFORMS=cpu python scripts/bench_circuits.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import jax
import jax.numpy as jnp

from qhd_lib.circuits import init_params, make_ansatz, simulate
from qhd_lib.provenance import ROOT, device_info, git_commit, package_versions

# PennyLane's forward+backward at batch 6 272 did not finish in an attempt on the shared 2-core
# machine (load average ~10): killed after more than 15 minutes (compilation included). It is
# therefore not timed again; the speed-up for those cases is a lower bound.
PENNYLANE_BIG_BACKWARD_LOWER_BOUND_S = 900.0
PENNYLANE_BIG_BACKWARD_NOTE = (
    "PennyLane not timed: an attempt (HQConv, 2026-11-25, load average ~10) ran for more than "
    "15 min without finishing; speedup_lower_bound = 900 s / fast time")


def time_call(fn, *args, repeats: int) -> dict:
    """Compile (first call) and then time ``repeats`` calls; seconds per call."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    times = times or [compile_s]  # repeats=0: the first call, compilation included
    return {"seconds": min(times), "median_seconds": sorted(times)[len(times) // 2],
            "repeats": repeats, "first_call_seconds": compile_s}


def fast_fns(ansatz):
    def forward(x, theta):
        return simulate(ansatz, x, theta)

    def loss(x, theta):
        return jnp.sum(jnp.sin(simulate(ansatz, x, theta)))

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def pennylane_fns(ansatz):
    from qhd_lib.circuits.reference import make_qnode

    qnode = make_qnode(ansatz, diff_method="backprop")

    def forward(x, theta):
        return jax.vmap(lambda xi: jnp.stack(qnode(xi, theta)))(x)

    def loss(x, theta):
        return jnp.sum(jnp.sin(forward(x, theta)))

    return jax.jit(forward), jax.jit(jax.grad(loss, argnums=(0, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 128 only, no 343 000")
    args = parser.parse_args()
    # PennyLane in single precision casts its complex128 matrices to complex64 and says so
    warnings.filterwarnings("ignore", message=".*complex128.*complex64.*")
    warnings.filterwarnings("ignore", message=".*[Cc]asting.*complex.*")

    wall = time.perf_counter()
    load_before = os.getloadavg()
    batches = [128] if args.quick else [128, 6272]
    cases = []
    for name in ("hqconv", "fqconv"):
        ansatz = make_ansatz(name)
        theta = init_params(jax.random.key(0), ansatz)
        fast = fast_fns(ansatz)
        reference = pennylane_fns(ansatz)
        for batch in batches:
            x = jax.random.uniform(jax.random.key(1), (batch, ansatz.n_qubits), minval=-3, maxval=3)
            for mode, index in (("forward", 0), ("forward+backward", 1)):
                big = batch > 1000
                f = time_call(fast[index], x, theta, repeats=3 if big else 10)
                case = {"ansatz": name, "batch": batch, "mode": mode, "fast": f}
                if big and index == 1:
                    case.update(pennylane=None, speedup=None, note=PENNYLANE_BIG_BACKWARD_NOTE)
                    if name == "hqconv":  # the case the timed-out attempt measured
                        case["speedup_lower_bound"] = PENNYLANE_BIG_BACKWARD_LOWER_BOUND_S / f["seconds"]
                else:
                    p = time_call(reference[index], x, theta, repeats=1 if big else 3)
                    case.update(pennylane=p, speedup=p["seconds"] / f["seconds"])
                print(f"{name:7s} {batch:6d} {mode:17s} fast {f['seconds']:.4f}s  "
                      f"speedup {case['speedup'] or 0:.0f}x", flush=True)
                cases.append(case)
    if not args.quick:
        ansatz = make_ansatz("hqconv")
        theta = init_params(jax.random.key(0), ansatz)
        x = jax.random.uniform(jax.random.key(1), (343_000, 12), minval=-3, maxval=3)
        f = time_call(fast_fns(ansatz)[0], x, theta, repeats=0)
        print(f"hqconv  343000 forward           fast {f['seconds']:.2f}s", flush=True)
        cases.append({"ansatz": "hqconv", "batch": 343_000, "mode": "forward", "fast": f,
                      "pennylane": None, "speedup": None,
                      "note": "one QuanvU-Net circuit call while sampling 7 000 images"})

    result = {
        "what": "12-qubit ansaetze, 3 layers: fast JAX simulator vs PennyLane default.qubit "
                "(jit + vmap, backprop, single precision); seconds per call (best of repeats); "
                "forward+backward = gradient of a scalar loss w.r.t. inputs and theta",
        "cases": cases,
        "provenance": {
            "command": " ".join([Path(sys.executable).name] + sys.argv),
            "git_commit": git_commit(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "device": device_info(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "load_note": "the 2-core machine is shared with other jobs: absolute times are "
                         "noisy, the speed-up (same run, same load) is the robust figure",
            "packages": package_versions(("jax", "jaxlib", "pennylane", "numpy")),
            "wall_seconds": time.perf_counter() - wall,
        },
    }
    out = ROOT / "results" / "bench_circuits.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
