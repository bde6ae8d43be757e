"""Benchmark every U-Net configuration on CPU: one training step and one sampling forward pass.

Train step = forward + backward + Adam update at batch 128 (the paper's batch); sampling = one
forward pass at batch 1 000 (one DDPM step for 1 000 images). Every model is compiled first
(compile time reported apart), then timed in ``--repeats`` rounds, each round calling every model
once in turn; the best call per model is kept, and the ratios are also given round by round. On
a shared machine whose speed drifts, interleaving puts every model under the same conditions,
where timing one model after the other would compare one period's speed with another's. Besides
the paper's columns it times two
variants of the classical U-Net as references:

- ``classical-attention-free``: every attention block replaced by the identity, the floor that
  the classical step is compared with (``train_step_vs_attention_free``);
- ``classical-direct-attention``: attention as first written (``tests/attention_oracle.py``: q,
  k and v by a 1×1 conv, then the output conv), the "before" of the library's rearranged
  attention, with the same parameters and numbers.

For the classical U-Net it also times every top-level block alone (forward + backward at batch
128) beside two floors: its bytes at this machine's copy bandwidth and its FLOPs at the rate of
a large matrix product, both measured in the same process.

    python scripts/bench_models.py                       # everything
    python scripts/bench_models.py --models classical quanvunet --repeats 2 --no-blocks

Writes ``results/bench_models.json``.

``--device-form`` is the GPU's benchmark (issue 19; the first thing a GPU slot runs, see
``scripts/device_campaign.py slot``): per model, in the paper's column order, the train step at
batch 128 and the sampling forward at batch 1 000 and 7 000, each beside its floor
(`qhd_lib.floors`: XLA's bytes at the device's copy bandwidth, its FLOPs at its matmul rate) and
its planned memory, at float32 "highest" matmul precision. An item that would pass
``--deadline-s`` (judged by the last item's time) is skipped and listed; the JSON is written after
every item. ``--tiny`` (CPU tests) measures a small classical U-Net at small batches.

    JAX_PLATFORMS=cuda python scripts/bench_models.py --device-form --deadline-s 200 \\
        --out OUT/bench_models_gpu.json --commit SHA
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from qhd_lib import io, provenance  # noqa: E402
from qhd_lib.deadline import Deadline  # noqa: E402
from qhd_lib.errors import ProvenanceError  # noqa: E402
from qhd_lib.floors import floor_seconds, machine_rates, peak_bytes, xla_cost  # noqa: E402
from qhd_lib.models import MODEL_NAMES, UNet, count_params, dummy_inputs, layers, make_model  # noqa: E402
from qhd_lib.provenance import ROOT  # noqa: E402

TARGET_VS_ATTENTION_FREE = 1.5  # classical train step (and forward) ÷ the attention-free variant
REFERENCES = ("classical-attention-free", "classical-direct-attention")


def adam_step(model: nn.Module, tx: optax.GradientTransformation) -> Callable:
    """The benchmarked train step: MSE noise loss, its gradient, one optimizer update."""

    def train_step(params, opt_state, x, t, noise):
        def loss(p):
            return jnp.mean((model.apply({"params": p}, x, t) - noise) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return train_step


def timed(fn: Callable, *args: Any, repeats: int) -> tuple[float, float]:
    """(first call incl. compile, best of ``repeats`` further calls), in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return first, float(min(times))


def _identity_attention(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Method interceptor: every `AttnBlock` returns its input unchanged."""
    if isinstance(context.module, layers.AttnBlock) and context.method_name == "__call__":
        return args[0]
    return next_fun(*args, **kwargs)


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """Trace the U-Net as one of the reference variants (nothing changes for other names)."""
    if name == "classical-attention-free":
        with nn.intercept_methods(_identity_attention):
            yield
    elif name == "classical-direct-attention":
        sys.path.insert(0, str(ROOT))
        from tests.attention_oracle import DirectAttention, DirectLinearAttention

        saved = layers.LinearAttention, layers.Attention
        layers.LinearAttention, layers.Attention = DirectLinearAttention, DirectAttention
        try:
            yield
        finally:
            layers.LinearAttention, layers.Attention = saved
    elif name == "unchunked":  # for XLA's costs: it counts a loop's body once
        saved_chunk = layers.POSITIONS_PER_CHUNK
        layers.POSITIONS_PER_CHUNK = 2**62
        try:
            yield
        finally:
            layers.POSITIONS_PER_CHUNK = saved_chunk
    else:
        yield


@dataclasses.dataclass
class Compiled:
    """One configuration, compiled: its train step and sampling forward with their inputs."""

    step: Callable
    step_args: tuple
    forward: Callable
    forward_args: tuple
    info: dict


def compile_model(name: str, batch: int, sample_batch: int) -> Compiled:
    """Compile the train step and sampling forward of one configuration and call each once
    (first-call times); also its XLA cost and planned memory."""
    model = make_model("classical" if name in REFERENCES else name)
    key = jax.random.key(0)
    x, t = dummy_inputs(model.config, batch)
    x = jax.random.normal(key, x.shape)
    t = jax.random.randint(key, t.shape, 0, 1000)
    noise = jax.random.normal(jax.random.key(1), x.shape)
    xs = jax.random.normal(key, (sample_batch,) + x.shape[1:])
    ts = jnp.full((sample_batch,), 500, jnp.int32)
    tx = optax.adam(1e-3, b1=0.9, b2=0.99, eps=1e-8)
    with variant(name):
        params = jax.jit(model.init)(key, x[:1], t[:1])["params"]
        opt_state = tx.init(params)

        train_step = adam_step(model, tx)
        step = jax.jit(train_step).lower(params, opt_state, x, t, noise).compile()
        forward = (
            jax.jit(lambda p, x, t: model.apply({"params": p}, x, t))
            .lower(params, xs, ts)
            .compile()
        )
        with variant("unchunked"):  # a new function, so that jit traces it again
            cost = xla_cost(
                jax.jit(lambda *a: train_step(*a)).lower(params, opt_state, x, t, noise).compile()
            )
    step_args, forward_args = (params, opt_state, x, t, noise), (params, xs, ts)
    info = {
        "params": count_params(params),
        "train_step_first_call_s": round(call_seconds(step, step_args), 2),
        "forward_first_call_s": round(call_seconds(forward, forward_args), 2),
        "train_step_peak_mib": round(peak_bytes(step) / 2**20, 1),
        "train_step_xla": cost,
    }
    return Compiled(step, step_args, forward, forward_args, info)


def call_seconds(fn: Callable, args: tuple) -> float:
    """Wall time of one call, until its results are ready."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def timings(compiled: Compiled, rounds: dict[str, list[float]]) -> dict:
    """A model's record: its compile-time info, best and median of the rounds, every round."""
    out = dict(compiled.info)
    for kind in ("train_step", "forward"):
        times = rounds[kind]
        out[f"{kind}_s"] = round(min(times), 4)
        out[f"{kind}_median_s"] = round(float(np.median(times)), 4)
        out[f"{kind}_rounds_s"] = [round(v, 4) for v in times]
    return out


def bench_blocks(batch: int, repeats: int, rates: dict) -> dict:
    """Every top-level block of the classical U-Net alone: forward + backward time at ``batch``
    with the inputs it sees in the network, its share of the sum, and its floor: the larger of
    its XLA bytes at the copy bandwidth and its XLA FLOPs at the large matmul's rate."""
    model = make_model("classical")
    x, t = dummy_inputs(model.config, batch)
    x = jax.random.normal(jax.random.key(0), x.shape)
    t = jax.random.randint(jax.random.key(0), t.shape, 0, 1000)
    params = jax.jit(model.init)(jax.random.key(0), x[:1], t[:1])["params"]
    calls: dict[str, tuple[nn.Module, tuple]] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and isinstance(module.parent, UNet):
            calls.setdefault(module.name, (module.clone(parent=None, name=None), args))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply({"params": params}, x, t)
    blocks = {}
    for name, (block, args) in calls.items():

        def loss(p, *args, block=block):
            return jnp.sum(jnp.sin(block.apply({"params": p}, *args)))

        argnums = tuple(i + 1 for i, a in enumerate(args) if jnp.issubdtype(a.dtype, jnp.floating))
        grad = jax.grad(loss, argnums=(0, *argnums))
        _, seconds = timed(
            jax.jit(grad).lower(params[name], *args).compile(), params[name], *args, repeats=repeats
        )
        with variant("unchunked"):  # a new function, so that jit traces it again
            cost = xla_cost(
                jax.jit(lambda *a, grad=grad: grad(*a)).lower(params[name], *args).compile()
            )
        floor = floor_seconds(cost, rates)
        blocks[name] = {
            "forward_backward_s": round(seconds, 4),
            **cost,
            "floor_s": round(floor, 5),
            "vs_floor": round(seconds / floor, 1),
        }
    total = sum(b["forward_backward_s"] for b in blocks.values())
    for b in blocks.values():
        b["share"] = round(b["forward_backward_s"] / total, 3)
    return blocks


DEVICE_PLAN = (("train_step", 128), ("forward", 1000), ("forward", 7000))
TINY_PLAN = (("train_step", 2), ("forward", 4), ("forward", 8))
TINY_MODEL = {"dim_mults": (1, 2)}  # a two-level classical U-Net: it compiles in seconds
TINY_RATES = (1, 512, 16)  # repeats, matmul size, copy MiB: rates in a second, for tests
MIN_ITEM_S = 5.0  # what an item is taken to cost before one has been timed


def device_program(name: str, kind: str, batch: int, tiny: bool) -> tuple[Callable, tuple]:
    """The train step (forward + backward + Adam) or the sampling forward of model ``name`` at
    ``batch``, uncompiled, and its arguments."""
    model = make_model(name, **(TINY_MODEL if tiny else {}))
    key = jax.random.key(0)
    x, t = dummy_inputs(model.config, batch)
    x = jax.random.normal(key, x.shape)
    params = jax.jit(model.init)(key, x[:1], t[:1])["params"]
    if kind == "forward":

        def forward(p, x, t):
            return model.apply({"params": p}, x, t)

        return forward, (params, x, jnp.full((batch,), 500, jnp.int32))
    t = jax.random.randint(key, t.shape, 0, 1000)
    noise = jax.random.normal(jax.random.key(1), x.shape)
    tx = optax.adam(1e-3, b1=0.9, b2=0.99, eps=1e-8)

    train_step = adam_step(model, tx)
    return train_step, (params, tx.init(params), x, t, noise)


def device_item(name: str, kind: str, batch: int, rates: dict, repeats: int, tiny: bool) -> dict:
    """One program timed (best of ``repeats`` calls after the first) beside its floor."""
    t0 = time.perf_counter()
    fn, args = device_program(name, kind, batch, tiny)
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    first = call_seconds(compiled, args)
    best = min(call_seconds(compiled, args) for _ in range(repeats))
    with variant("unchunked"):  # a new function, so that jit traces it again
        cost = xla_cost(jax.jit(lambda *a: fn(*a)).lower(*args).compile())
    floor = floor_seconds(cost, rates)
    return {
        "seconds": round(best, 5),
        "floor_s": round(floor, 6),
        "vs_floor": round(best / floor, 2) if floor else None,
        "first_call_s": round(first, 3),
        "compile_s": round(compile_s, 2),
        "peak_mib": round(peak_bytes(compiled) / 2**20, 1),
        "xla": cost,
    }


def device_form(args: argparse.Namespace, argv: list[str], started_at: provenance.Commit) -> dict:
    """The GPU benchmark (see the module doc), to ``args.deadline_s``; written after each item."""
    start = time.perf_counter()
    deadline = Deadline(args.deadline_s)
    plan = TINY_PLAN if args.tiny else DEVICE_PLAN
    models = ["classical"] if args.tiny else list(args.models)
    report: dict = {
        "description": "seconds per call on JAX's default device (best of --repeats calls after "
        "the first, compilation apart) of the train step (forward+backward+Adam) and the sampling "
        "forward, beside its floor: max(XLA bytes / copy bandwidth, XLA FLOPs / matmul rate), "
        "rates measured here, costs of the program traced without chunking loops; items that "
        "would pass the deadline (judged by the last item's wall time) are listed as skipped",
        "matmul_precision": "highest",
        "tiny": args.tiny,
        "items": [],
        "skipped": [],
    }

    def write() -> None:
        report["provenance"] = provenance.record(
            provenance.python_command(argv),
            wall_s=round(time.perf_counter() - start, 1),
            packages=("jax", "jaxlib", "flax", "optax", "numpy"),
            allow_dirty=args.allow_dirty,
            found=started_at,
        )
        io.write_json(args.out, report, sort_keys=False)

    with jax.default_matmul_precision("highest"):
        report["machine"] = rates = machine_rates(*TINY_RATES if args.tiny else (args.repeats,))
        write()
        last = MIN_ITEM_S
        for name in models:
            for kind, batch in plan:
                what = {"model": name, "kind": kind, "batch": batch}
                if not deadline.allows(last):
                    left = f"{deadline.left():.0f} s left, the last item took {last:.0f} s"
                    report["skipped"].append(what | {"reason": left})
                    continue
                t0 = time.monotonic()
                try:
                    report["items"].append(
                        what | device_item(name, kind, batch, rates, args.repeats, args.tiny)
                    )
                except (jax.errors.JaxRuntimeError, MemoryError) as err:  # e.g. out of memory
                    report["items"].append(what | {"error": str(err).splitlines()[0][:300]})
                last = max(MIN_ITEM_S, time.monotonic() - t0)
                print(json.dumps(report["items"][-1]), flush=True)
                write()
    write()
    return report


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--sample-batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--no-blocks", action="store_true", help="skip the per-block timing")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_models.json")
    parser.add_argument("--device-form", action="store_true", help="the GPU form (module doc)")
    parser.add_argument("--deadline-s", type=float, help="--device-form: seconds it may take")
    parser.add_argument("--tiny", action="store_true", help="--device-form: a tiny U-Net (tests)")
    provenance.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        started_at = provenance.apply_arguments(args, args.out)
    except ProvenanceError as error:  # refused before any work
        parser.error(str(error))
    if args.device_form:
        return device_form(args, [sys.argv[0], *argv], started_at)
    models = ["classical", *REFERENCES] + [m for m in args.models if m != "classical"]

    start = time.perf_counter()
    load_before = os.getloadavg()
    rates = machine_rates(args.repeats)
    print("machine", rates, flush=True)
    compiled: dict[str, Compiled] = {}
    for name in tqdm(models, desc="compile"):
        compiled[name] = compile_model(name, args.batch, args.sample_batch)
    rounds = {name: {"train_step": [], "forward": []} for name in models}
    report: dict = {}
    for _ in tqdm(range(args.repeats), desc="rounds"):
        for name, c in compiled.items():
            rounds[name]["train_step"].append(call_seconds(c.step, c.step_args))
            rounds[name]["forward"].append(call_seconds(c.forward, c.forward_args))
        results = {name: timings(c, rounds[name]) for name, c in compiled.items()}
        report = write_report(
            args, rates, results, None, load_before, [sys.argv[0], *argv], start, started_at
        )
    for name, r in results.items():
        print(f"{name:28s} train step {r['train_step_s']:.3f} s  forward {r['forward_s']:.3f} s")
    if not args.no_blocks:
        blocks = bench_blocks(args.batch, args.repeats, rates)
        report = write_report(
            args, rates, results, blocks, load_before, [sys.argv[0], *argv], start, started_at
        )
    return report


def write_report(
    args: argparse.Namespace,
    rates: dict,
    results: dict[str, dict],
    blocks: dict | None,
    load_before: tuple,
    argv: list[str],
    start: float,
    started_at: provenance.Commit,
) -> dict:
    """Write what has been measured so far (after every model: a long run keeps its results)."""
    base = results["classical"]
    for r in results.values():
        r["train_step_vs_classical"] = round(r["train_step_s"] / base["train_step_s"], 2)
        r["forward_vs_classical"] = round(r["forward_s"] / base["forward_s"], 2)
    summary = {}
    floor = results.get("classical-attention-free")
    if floor:
        summary["train_step_vs_attention_free"] = round(
            base["train_step_s"] / floor["train_step_s"], 2
        )
        summary["forward_vs_attention_free"] = round(base["forward_s"] / floor["forward_s"], 2)
        for kind in ("train_step", "forward"):  # the same ratio within each round
            summary[f"{kind}_vs_attention_free_by_round"] = [
                round(a / b, 2) for a, b in zip(base[f"{kind}_rounds_s"], floor[f"{kind}_rounds_s"])
            ]
    before = results.get("classical-direct-attention")
    if before:
        summary["train_step_speedup_vs_direct_attention"] = round(
            before["train_step_s"] / base["train_step_s"], 2
        )
        summary["forward_speedup_vs_direct_attention"] = round(
            before["forward_s"] / base["forward_s"], 2
        )
    summary["train_step_gflops"] = {  # XLA's FLOPs of the step (see xla_cost) per second
        name: round(r["train_step_xla"]["flops"] / r["train_step_s"] / 1e9, 1)
        for name, r in results.items()
        if name.startswith("classical")
    }
    report = {
        "description": "CPU time of one training step (forward+backward+Adam, batch "
        f"{args.batch}) and of one forward pass at batch {args.sample_batch} (one sampling "
        f"step), best of {args.repeats} interleaved rounds after compilation; peak = XLA's "
        "planned memory",
        "target": {
            "train_step_vs_attention_free_max": TARGET_VS_ATTENTION_FREE,
            "forward_vs_attention_free_max": TARGET_VS_ATTENTION_FREE,
            "applies_to": "classical",
        },
        "machine": rates,
        "summary": summary,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "models": results,
        "blocks": blocks,
        "provenance": provenance.record(
            provenance.python_command(argv),
            wall_s=round(time.perf_counter() - start, 1),
            packages=("jax", "jaxlib", "flax", "optax", "numpy"),
            allow_dirty=args.allow_dirty,
            found=started_at,
        ),
    }
    io.write_json(args.out, report, sort_keys=False)  # models in the paper's column order
    return report


if __name__ == "__main__":
    main()
