"""Finite-shot estimates of ⟨Z⟩: what a quantum computer returns after S measurements.

Each ⟨Z_q⟩ is estimated from S shots drawn from that qubit's exact single-qubit marginal
``p_q(0) = (1 + ⟨Z_q⟩)/2``: the number of 0 outcomes is Binomial(S, p_q(0)) and the estimate is
``2·n₀/S − 1``, so it is unbiased with variance ``(1 − ⟨Z_q⟩²)/S``.

**Correlations between the estimates are not modelled.** Hardware (and PennyLane with
``shots=``) measures all qubits in the same shot, so the estimates of entangled qubits are
correlated through the joint outcome distribution; here every qubit (and every input) draws its
own binomial. Each estimate alone has exactly the right distribution, but the covariance between
two estimates of the same circuit is zero instead of ``(⟨Z_a Z_b⟩ − ⟨Z_a⟩⟨Z_b⟩)/S``.

Randomness is keyed (`jax.random`): the same key, inputs and θ give the same estimates (in the
same mode: a jitted and an eager call can differ by one shot where float32 rounding of ⟨Z⟩
moved p across a sampling threshold). Counts are float32, exact up to S = 2^24 shots.
Gradients are straight-through: the estimate's derivative is that of the exact ⟨Z⟩ (the
estimate is unbiased, so this is the expected gradient; the shot noise of a parameter-shift
gradient on hardware is not modelled).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

import jax
import jax.numpy as jnp

from qhd_lib.circuits.ansatz import Ansatz
from qhd_lib.circuits.noise import check_probability, simulate_noisy
from qhd_lib.circuits.simulator import simulate
from qhd_lib.errors import ConfigError

Executor = Callable[[Ansatz, jax.Array, jax.Array], jax.Array]


def check_shots(shots: object) -> int:
    """The number of shots as a Python int ≥ 1 (it fixes the estimates' grid, so it is static)."""
    try:
        value = None if isinstance(shots, bool) else operator.index(shots)
    except TypeError:
        value = None
    if value is None or value < 1:
        raise ConfigError(
            f"shots must be a positive integer (measurements per ⟨Z⟩ estimate), got {shots!r}; "
            "pass it as a Python int (static under jax.jit: static_argnums=(0, 3))"
        )
    return value


def as_key(key: jax.Array | int) -> jax.Array:
    """A `jax.random` key: a key array as given, or ``jax.random.key(seed)`` for an integer seed
    (a Python int, or a scalar integer array: what an int becomes under `jax.jit`)."""
    if isinstance(key, int) or (jnp.ndim(key) == 0 and jnp.issubdtype(key.dtype, jnp.integer)):
        return jax.random.key(key)
    return key


@jax.custom_jvp
def _straight_through(exact: jax.Array, estimate: jax.Array) -> jax.Array:
    """The estimate's value with the exact value's derivative."""
    del exact
    return estimate


@_straight_through.defjvp
def _straight_through_jvp(primals: tuple, tangents: tuple) -> tuple[jax.Array, jax.Array]:
    exact, estimate = primals
    return estimate, tangents[0]


@jax.jit
def _sample(key: jax.Array, exact: jax.Array, shots: jax.Array) -> jax.Array:
    """Binomial estimates, jitted with ``shots`` traced: one compilation per shape, any S."""
    p_zero = jnp.clip((1.0 + exact) / 2.0, 0.0, 1.0)
    zeros = jax.random.binomial(key, shots, p_zero, shape=exact.shape, dtype=exact.dtype)
    return (2.0 * zeros - shots) / shots


def estimate_from_expectations(exact: jax.Array, shots: int, key: jax.Array | int) -> jax.Array:
    """S-shot estimates of ⟨Z⟩ values ``exact`` (any shape), one binomial draw per entry."""
    shots = check_shots(shots)
    exact = jnp.asarray(exact, jnp.float32)
    estimate = _sample(as_key(key), jax.lax.stop_gradient(exact), jnp.float32(shots))
    return _straight_through(exact, estimate)


def simulate_shots(
    ansatz: Ansatz,
    inputs: jax.Array,
    theta: jax.Array,
    shots: int,
    key: jax.Array | int,
    *,
    p_depolarizing: float | jax.Array = 0.0,
    readout_error: float | jax.Array = 0.0,
) -> jax.Array:
    """S-shot estimates of every ⟨Z_q⟩ (module docstring): same contract as `simulate`, inputs
    (..., n_qubits) → (..., n_qubits), each entry on the grid ``2k/S − 1``.

    ``key``: a `jax.random` key or an int seed. With ``p_depolarizing`` or ``readout_error``
    other than a literal 0 the shots sample the noisy marginals of `simulate_noisy`. Jit with
    ``static_argnums=(0, 3)``.
    """
    noiseless = all(isinstance(v, int | float) and v == 0 for v in (p_depolarizing, readout_error))
    if noiseless:
        exact = simulate(ansatz, inputs, theta)
    else:
        exact = simulate_noisy(ansatz, inputs, theta, p_depolarizing, readout_error)
    return estimate_from_expectations(exact, shots, key)


def _digest(*arrays: jax.Array) -> jax.Array:
    """A uint32 fingerprint of float arrays (their bits, position-weighted), to fold into a key."""
    total = jnp.uint32(0)
    for i, a in enumerate(arrays):
        bits = jax.lax.bitcast_convert_type(
            jax.lax.stop_gradient(jnp.asarray(a, jnp.float32)), jnp.uint32
        ).reshape(-1)
        weights = (jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2) + jnp.uint32(1)) * (
            jnp.uint32(0x9E3779B1) + jnp.uint32(i)
        )
        total = total ^ jnp.sum(bits * weights, dtype=jnp.uint32)
    return total


def shots_executor(
    shots: int,
    key: jax.Array | int = 0,
    p_depolarizing: float = 0.0,
    readout_error: float = 0.0,
) -> Executor:
    """`simulate_shots` as an executor ``(ansatz, inputs, theta) → ⟨Z⟩`` (the signature of
    `simulate`, jitted with the ansatz static) for `qhd_lib.models.quantum`.

    A model calls its executor many times with one fixed key, so each call folds a fingerprint
    of its inputs and θ into ``key``: two circuits (different θ), two patches or two diffusion
    steps (different inputs) draw different shots, while a repeated call repeats its estimates.
    """
    shots = check_shots(shots)
    check_probability("p_depolarizing", p_depolarizing)
    check_probability("readout_error", readout_error)
    noise = {}
    if p_depolarizing or readout_error:
        noise = {"p_depolarizing": float(p_depolarizing), "readout_error": float(readout_error)}

    def run(ansatz: Ansatz, inputs: jax.Array, theta: jax.Array) -> jax.Array:
        # an int seed becomes a key here, in each call's trace: made once in `shots_executor`,
        # which a model may call while tracing, it would leak from that trace
        call_key = jax.random.fold_in(as_key(key), _digest(inputs, theta))
        return simulate_shots(ansatz, inputs, theta, shots, call_key, **noise)

    run_jit = jax.jit(run, static_argnums=0)

    def executor(ansatz: Ansatz, inputs: jax.Array, theta: jax.Array) -> jax.Array:
        return run_jit(ansatz, inputs, theta)

    return executor
