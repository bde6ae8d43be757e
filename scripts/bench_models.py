"""Benchmark every U-Net configuration on CPU: one training step and one sampling forward pass.

Train step = forward + backward + Adam update at batch 128 (the paper's batch); sampling = one
forward pass at batch 1 000 (one DDPM step for 1 000 images). Each model is compiled once
(compile time reported apart), then timed ``--repeats`` times; the median is kept. All models run
in one process, one after the other, so their ratios to the classical U-Net are comparable.

    python scripts/bench_models.py                       # the paper's columns
    python scripts/bench_models.py --models classical quanvunet --repeats 2

Writes ``results/bench_models.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from qhd_lib.models import MODEL_NAMES, count_params, dummy_inputs, make_model  # noqa: E402
from qhd_lib.provenance import ROOT, device_info, git_commit, package_versions  # noqa: E402
TARGET_RATIO = 1.3  # hybrid/classical train-step time the book aims for (Full vertex, QuanvU-Net)


def provenance(argv: list[str], wall_s: float) -> dict:
    """Command, commit, device, date, package versions, wall time."""
    return {
        "command": " ".join(["python", *argv]),
        "git_commit": git_commit(),
        "device": device_info(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "packages": package_versions(("jax", "jaxlib", "flax", "optax", "numpy")),
        "wall_s": round(wall_s, 1),
    }


def timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, median of ``repeats`` further calls), in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(np.median(times))


def bench_model(name: str, batch: int, sample_batch: int, repeats: int) -> dict:
    """Train-step and sampling-forward times of one configuration."""
    model = make_model(name)
    key = jax.random.key(0)
    x, t = dummy_inputs(model.config, batch)
    x = jax.random.normal(key, x.shape)
    t = jax.random.randint(key, t.shape, 0, 1000)
    params = jax.jit(model.init)(key, x[:1], t[:1])["params"]
    tx = optax.adam(1e-3, b1=0.9, b2=0.99, eps=1e-8)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, t, noise):
        def loss(p):
            return jnp.mean((model.apply({"params": p}, x, t) - noise) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    noise = jax.random.normal(jax.random.key(1), x.shape)
    first, step = timed(train_step, params, opt_state, x, t, noise, repeats=repeats)

    forward = jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
    xs = jax.random.normal(key, (sample_batch,) + x.shape[1:])
    ts = jnp.full((sample_batch,), 500, jnp.int32)
    first_fwd, fwd = timed(forward, params, xs, ts, repeats=repeats)
    return {
        "params": count_params(params),
        "train_step_s": round(step, 4),
        "train_step_first_call_s": round(first, 2),
        "forward_s": round(fwd, 4),
        "forward_first_call_s": round(first_fwd, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_models.json")
    args = parser.parse_args(argv)
    models = ["classical"] + [m for m in args.models if m != "classical"]

    start = time.perf_counter()
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    report: dict = {}
    for name in models:
        results[name] = bench_model(name, args.batch, args.sample_batch, args.repeats)
        print(name, results[name], flush=True)
        report = write_report(args, results, load_before, [sys.argv[0], *argv], start)
    return report


def write_report(args: argparse.Namespace, results: dict[str, dict], load_before: tuple,
                 argv: list[str], start: float) -> dict:
    """Write what has been measured so far (after every model: a long run keeps its results)."""
    base = results["classical"]
    for r in results.values():
        r["train_step_vs_classical"] = round(r["train_step_s"] / base["train_step_s"], 2)
        r["forward_vs_classical"] = round(r["forward_s"] / base["forward_s"], 2)
    report = {
        "description": "CPU time of one training step (forward+backward+Adam, batch "
        f"{args.batch}) and of one forward pass at batch {args.sample_batch} (one sampling "
        f"step), median of {args.repeats} calls after compilation",
        "target": {"train_step_vs_classical_max": TARGET_RATIO,
                   "applies_to": ["fullhqconv", "fullfqconv", "quanvunet"]},
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "models": results,
        "provenance": provenance(argv, time.perf_counter() - start),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report

if __name__ == "__main__":
    main()
