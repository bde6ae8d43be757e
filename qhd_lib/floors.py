"""What a compiled program cannot beat on this device: its XLA cost beside the device's own rates.

The benchmarks (``scripts/bench_models.py``, ``scripts/bench_circuits.py``) set each measured
time beside a floor: the larger of the program's bytes accessed at the device's copy bandwidth and
its FLOPs at the rate of a large matrix product, both rates measured in the same process
(:func:`machine_rates`) and the costs counted by XLA (:func:`xla_cost`). XLA counts a loop's body
once, so a caller takes costs from a program traced without its chunking loops.
"""

from __future__ import annotations

import time
from typing import Any

import jax


def best_seconds(fn: Any, *args: Any, calls: int) -> float:
    """Best wall time of ``calls`` calls of ``fn`` (after one warm-up call), until ready."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return min(times)


def machine_rates(repeats: int, size: int = 2048, copy_mib: int = 256) -> dict[str, float]:
    """This process's large f32 matmul rate (GFLOP/s, at the current matmul precision, of a
    ``size`` square product) and copy bandwidth (GB/s, read + write, of ``copy_mib`` MiB) on
    JAX's default device. The key names the size only at the default (2048): smaller sizes,
    for tests, are not the rates of a large product."""
    a = jax.random.normal(jax.random.key(0), (size, size))
    matmul_s = best_seconds(jax.jit(lambda a: a @ a), a, calls=repeats + 2)
    big = jax.random.normal(jax.random.key(1), (copy_mib * 2**18,))
    copy_s = best_seconds(jax.jit(lambda v: v + 1.0), big, calls=repeats + 2)
    return {
        "matmul_2048_gflops": round(2 * size**3 / matmul_s / 1e9, 1),
        "copy_gb_per_s": round(2 * big.nbytes / copy_s / 1e9, 1),
    }


def xla_cost(compiled: Any) -> dict[str, float]:
    """FLOPs and bytes accessed that XLA counts for a compiled program (a loop body once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def floor_seconds(cost: dict[str, float], rates: dict[str, float]) -> float:
    """The larger of ``cost``'s bytes at the copy bandwidth and its FLOPs at the matmul rate."""
    return max(
        cost["bytes"] / (rates["copy_gb_per_s"] * 1e9),
        cost["flops"] / (rates["matmul_2048_gflops"] * 1e9),
    )


def peak_bytes(compiled: Any) -> int:
    """XLA's planned memory of a compiled program: arguments + outputs + temporaries."""
    m = compiled.memory_analysis()
    return int(
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
