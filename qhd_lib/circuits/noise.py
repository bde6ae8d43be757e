"""Noisy circuits as exact expectation values: a density-matrix simulator in pure JAX.

The noise model is what PennyLane's ``default.mixed`` computes for the same gate list with

- ``qml.DepolarizingChannel(p, wires=w)`` on **each** wire ``w`` of every two-qubit gate (CRZ,
  CRX, CNOT), right after the gate: independent single-qubit depolarising channels
  ``ρ → (1 − p)ρ + p/3 (XρX + YρY + ZρZ)`` on the control and on the target, not the two-qubit
  depolarising channel (15 Paulis). Single-qubit gates (the RX encoding, BasicEntangler's RX)
  are noiseless.
- a symmetric readout error ε on every qubit: ``qml.BitFlip(ε)`` before measuring, so
  ``⟨Z⟩ → (1 − 2ε)⟨Z⟩`` (what ``default.mixed``'s ``readout_prob`` does; PennyLane 0.45.1
  fails on ``readout_prob`` for expectation values, so the reference applies the BitFlip).

Each depolarising channel is written ``ρ → (1 − λ)ρ + λ · I/2 ⊗ Tr_w ρ`` with ``λ = 4p/3`` (the
same channel: the X and Y terms cancel the off-diagonal part, all three mix the diagonal).

Why it stays small: qubits that no gate connects never share a density matrix (`_components`),
and within a component each qubit starts as its own 2×2 ρ, merged with others only when a gate
first couples them (as `simulator.run_dense` does for state vectors). FQConv's 12 qubits are 4
independent 3-qubit components (64 entries each). HQConv is one 12-qubit chain: its ρ holds
4^12 ≈ 16.8 M complex64 entries, 128 MiB per input, from its first B block on. A chain of channel
tensors (as `simulate` uses) would save little: a noiseless CRZ + CRX pair between two channels
has operator-Schmidt rank 4 as a superoperator (a bond of 2 for ket, 2 for bra), but with the
control depolarised between the two gates the rank is 6, so three layers need bonds of up to
6³ = 216 instead of 4³ = 64, and the middle channel's tensor (216 × 4^4 × 216 ≈ 11.9 M entries)
is 70 % of the dense ρ. Components above `MAX_NOISY_QUBITS` are refused. (3-layer HQConv takes
about 2 s per input on a 2-core CPU; FQConv milliseconds.)

Gates are fused into blocks of at most two qubits (a gate's noise acts on its own wires, so
fusion's commutation argument still holds) and each block becomes one 16×16 superoperator, built
once per θ and shared by the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib.circuits.ansatz import Ansatz
from qhd_lib.circuits.simulator import (
    DTYPE,
    Block,
    _apply_on_axes,
    _components,
    check_arguments,
    encode,
    fuse_blocks,
    gate_matrix,
    simulate,
)
from qhd_lib.errors import ConfigError

MAX_NOISY_QUBITS = 12  # per component: 4^12 complex64 entries = 128 MiB of ρ per input
NOISY_BLOCK_QUBITS = 2  # superoperators of at most 16×16
NOISY_CHUNK_BYTES = 2**27  # inputs simulated at once: their largest ρ stays within 128 MiB

Executor = Callable[[Ansatz, jax.Array, jax.Array], jax.Array]


@dataclass(frozen=True)
class NoisyPlan:
    """One connected component: its qubits and its gates fused into small blocks."""

    qubits: tuple[int, ...]
    blocks: tuple[Block, ...]


@functools.cache
def compile_noisy_plan(ansatz: Ansatz) -> tuple[NoisyPlan, ...]:
    """The components of an ansatz and their blocks (cached per ansatz).

    Raises `ConfigError` for a component of more than `MAX_NOISY_QUBITS` qubits, whose ρ would
    need 4^n entries per input.
    """
    plans = []
    for qubits in _components(ansatz):
        if len(qubits) > MAX_NOISY_QUBITS:
            mib = 4 ** len(qubits) * np.dtype(DTYPE).itemsize / 2**20
            raise ConfigError(
                f"{ansatz.name} couples {len(qubits)} qubits into one component; its density "
                f"matrix would need {mib:,.0f} MiB per input, over the limit of "
                f"MAX_NOISY_QUBITS = {MAX_NOISY_QUBITS} qubits: use fewer qubits or the "
                "noiseless `simulate`"
            )
        members = set(qubits)
        gates = tuple(g for g in ansatz.gates if g.target in members)
        plans.append(NoisyPlan(qubits, tuple(fuse_blocks(gates, NOISY_BLOCK_QUBITS))))
    return tuple(plans)


def depolarizing_matrix(p: jax.Array) -> jax.Array:
    """PennyLane's ``DepolarizingChannel(p)`` as a 4×4 matrix on one qubit's (ket, bra) axes.

    ``(1 − λ)·1 + λ/2 |δ⟩⟨δ|`` with ``λ = 4p/3`` and ``δ = (1, 0, 0, 1)``: off-diagonal entries
    shrink by ``1 − λ``, the diagonal moves towards ``Tr ρ / 2``.
    """
    lam = 4.0 * jnp.asarray(p, jnp.float32) / 3.0
    delta = jnp.array([1.0, 0.0, 0.0, 1.0], jnp.float32)
    return ((1.0 - lam) * jnp.eye(4) + lam / 2.0 * jnp.outer(delta, delta)).astype(DTYPE)


def block_superoperator(block: Block, angles: jax.Array, depolarizing: jax.Array) -> jax.Array:
    """The block's channel as a (4^k, 4^k) matrix on (ket qubits, bra qubits) of its k qubits.

    Each gate maps ``ρ → UρU†`` (U on the ket axes, U* on the bra axes); after a two-qubit gate
    the `depolarizing_matrix` acts on each of its wires. The first gate is applied first.
    """
    k = len(block.qubits)
    position = {q: i for i, q in enumerate(block.qubits)}
    s = jnp.eye(4**k, dtype=DTYPE).reshape((2,) * (2 * k) + (4**k,))
    for gate in block.gates:
        u = gate_matrix(gate.kind, None if gate.param is None else angles[gate.param])
        ket = tuple(position[w] for w in gate.wires)
        s = _apply_on_axes(s, u, ket)
        s = _apply_on_axes(s, jnp.conj(u), tuple(k + a for a in ket))
        if gate.control is not None:
            for a in ket:
                s = _apply_on_axes(s, depolarizing, (a, k + a))
    return s.reshape(4**k, 4**k)


def _merge_rho(rhos: list[jax.Array]) -> jax.Array:
    """Tensor product of cluster density matrices (B, 2,...,2 kets, 2,...,2 bras), in order."""
    out = rhos[0]
    for rho in rhos[1:]:
        batch = out.shape[0]
        m_a, m_b = (out.ndim - 1) // 2, (rho.ndim - 1) // 2
        a, b = out.reshape(batch, 2**m_a, 2**m_a), rho.reshape(batch, 2**m_b, 2**m_b)
        out = (a[:, :, None, :, None] * b[:, None, :, None, :]).reshape(
            (batch,) + (2,) * (2 * (m_a + m_b))
        )
    return out


def _pairwise_sum(x: jax.Array) -> jax.Array:
    """Σ over the last axis (a power of 2) by halving: float32 rounding grows with log₂ of the
    length, not the length (a plain sum of 2 048 terms lost 1.6e-6 on a 12-qubit ρ)."""
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def _expval_from_rho(rho: jax.Array) -> jax.Array:
    """⟨Z_q⟩ = Σ p(q = 0) − p(q = 1) of every qubit of a cluster ρ (B, 2,...,2, 2,...,2) →
    (B, m), from the diagonal of ρ."""
    m = (rho.ndim - 1) // 2
    batch = rho.shape[0]
    probs = jnp.real(jnp.diagonal(rho.reshape(batch, 2**m, 2**m), axis1=1, axis2=2))
    values = []
    for q in range(m):
        split = probs.reshape(batch, 2**q, 2, 2 ** (m - q - 1))
        values.append(_pairwise_sum((split[:, :, 0] - split[:, :, 1]).reshape(batch, -1)))
    return jnp.stack(values, axis=-1)


def run_noisy(plan: NoisyPlan, single: jax.Array, superops: list[jax.Array]) -> jax.Array:
    """⟨Z⟩ (B, len(plan.qubits)) of one component; ``single`` holds the RX-encoded qubits."""
    clusters = {
        q: ((q,), single[:, q, :, None] * jnp.conj(single[:, q, None, :])) for q in plan.qubits
    }
    owner = {q: q for q in plan.qubits}
    for block, superop in zip(plan.blocks, superops):
        keys = sorted({owner[q] for q in block.qubits}, key=lambda k: min(clusters[k][0]))
        if len(keys) > 1:
            qubits = tuple(q for k in keys for q in clusters[k][0])
            clusters[keys[0]] = (qubits, _merge_rho([clusters.pop(k)[1] for k in keys]))
            for q in qubits:
                owner[q] = keys[0]
        qubits, rho = clusters[keys[0]]
        ket = tuple(1 + qubits.index(q) for q in block.qubits)
        axes = ket + tuple(a + len(qubits) for a in ket)
        clusters[keys[0]] = (qubits, _apply_on_axes(rho, superop, axes))
    order = [q for qubits, _ in clusters.values() for q in qubits]
    values = jnp.concatenate([_expval_from_rho(rho) for _, rho in clusters.values()], axis=-1)
    position = {q: i for i, q in enumerate(order)}
    return values[:, [position[q] for q in plan.qubits]]


def _is_concrete(value: object) -> bool:
    return not isinstance(value, jax.core.Tracer)


def check_probability(name: str, value: object) -> None:
    """Reject a concrete probability outside [0, 1] (traced values are not checked)."""
    if not _is_concrete(value):
        return
    v = np.asarray(value)
    if v.shape != () or not np.isfinite(v) or not 0.0 <= float(v) <= 1.0:
        raise ConfigError(f"{name} must be a probability, a number in [0, 1]; got {value!r}")


def noisy_chunk_limit(ansatz: Ansatz) -> int:
    """Inputs simulated at once: as many as keep the largest component's ρ within
    `NOISY_CHUNK_BYTES` (one input for a 12-qubit component)."""
    widest = max(len(plan.qubits) for plan in compile_noisy_plan(ansatz))
    return max(1, NOISY_CHUNK_BYTES // (4**widest * np.dtype(DTYPE).itemsize))


def simulate_noisy(
    ansatz: Ansatz,
    inputs: jax.Array,
    theta: jax.Array,
    p_depolarizing: float | jax.Array,
    readout_error: float | jax.Array,
) -> jax.Array:
    """Exact noisy ⟨Z⟩ of every qubit: depolarising noise of probability ``p_depolarizing`` on
    each wire after every two-qubit gate, then readout error ``readout_error`` (module docstring).

    Same contract as `simulate`: ``inputs`` (..., n_qubits), ``theta`` (n_params,) → (...,
    n_qubits); jit with ``static_argnums=0``; differentiable in inputs, θ and both
    probabilities. A concrete (untraced) ``p_depolarizing`` of 0 leaves only the readout error,
    which scales ⟨Z⟩ by ``1 − 2ε``: that case runs the state-vector `simulate` and scales (the
    same numbers, without a density matrix; a traced p always takes the density matrix, so its
    derivative exists).
    """
    inputs, theta = check_arguments(ansatz, inputs, theta)
    check_probability("p_depolarizing", p_depolarizing)
    check_probability("readout_error", readout_error)
    if _is_concrete(p_depolarizing) and float(p_depolarizing) == 0.0:
        scale = 1.0 - 2.0 * jnp.asarray(readout_error, jnp.float32)
        return scale * simulate(ansatz, inputs, theta)
    plans = compile_noisy_plan(ansatz)
    angles = ansatz.angle_scale * theta.astype(jnp.float32)
    depolarizing = depolarizing_matrix(p_depolarizing)
    superops = [
        [block_superoperator(b, angles, depolarizing) for b in plan.blocks] for plan in plans
    ]
    order = np.argsort([q for plan in plans for q in plan.qubits])

    def flat_run(x: jax.Array) -> jax.Array:
        single = encode(x)
        values = [run_noisy(plan, single, ops) for plan, ops in zip(plans, superops)]
        return jnp.concatenate(values, axis=-1)[:, order]

    lead = inputs.shape[:-1]
    flat = inputs.reshape(-1, ansatz.n_qubits).astype(jnp.float32)
    n, limit = flat.shape[0], noisy_chunk_limit(ansatz)
    if n <= limit:
        out = flat_run(flat)
    else:  # one chunk at a time keeps at most `NOISY_CHUNK_BYTES` of ρ alive
        chunks = -(-n // limit)
        size = -(-n // chunks)
        padded = jnp.pad(flat, ((0, chunks * size - n), (0, 0)))
        out = jax.lax.map(flat_run, padded.reshape(chunks, size, ansatz.n_qubits))
        out = out.reshape(chunks * size, ansatz.n_qubits)[:n]
    scale = 1.0 - 2.0 * jnp.asarray(readout_error, jnp.float32)
    return (scale * out).reshape(lead + (ansatz.n_qubits,))


@functools.cache
def noisy_executor(p_depolarizing: float, readout_error: float) -> Executor:
    """`simulate_noisy` with fixed noise, as an executor ``(ansatz, inputs, theta) → ⟨Z⟩`` (the
    signature of `simulate`, jitted with the ansatz static), for `qhd_lib.models.quantum`.

    The probabilities are bound as constants, not traced, so readout error alone takes
    `simulate_noisy`'s state-vector path."""
    check_probability("p_depolarizing", p_depolarizing)
    check_probability("readout_error", readout_error)
    noise = {"p_depolarizing": float(p_depolarizing), "readout_error": float(readout_error)}
    run = jax.jit(functools.partial(simulate_noisy, **noise), static_argnums=0)

    def executor(ansatz: Ansatz, inputs: jax.Array, theta: jax.Array) -> jax.Array:
        return run(ansatz, inputs, theta)

    return executor
