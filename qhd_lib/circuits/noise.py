"""Noisy circuits as exact expectation values, in the Heisenberg picture, in pure JAX.

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

How: the circuit's channel Φ does not depend on the inputs, so ``⟨Z_q⟩ = Tr(Z_q Φ(ρ₀)) =
Tr(Φ†(Z_q) ρ₀)``: run the circuit backwards on each observable once, then read every input off
it. In the Pauli basis (I, X, Y, Z on each qubit) an observable is a real vector of 4^n
coefficients and a block's channel a real 4^k × 4^k matrix (its Pauli transfer matrix, `ptm`).
The encoded state is a product of single-qubit states whose Bloch vectors lie in the Y–Z plane
(RX(x)|0⟩: ⟨X⟩ = 0, ⟨Y⟩ = −sin x, ⟨Z⟩ = cos x), so only the 3^n coefficients over {I, Y, Z}
count and

    ⟨Z_q⟩(x) = Σ_{P ∈ {I, Y, Z}^n} c_P Π_j r_{P_j}(x_j),   r(x) = (1, −sin x, cos x):

a noisy output is a trigonometric polynomial with frequencies −1, 0, 1 in every input, like a
noiseless one (`qhd_lib.circuits.fourier`); noise changes only its coefficients c_P, which
`noisy_coefficients` returns. One input then costs a matrix product of 3^n terms per output.

Cost: qubits that no gate connects are separate components (`_components`), each run on its own.
FQConv's 12 qubits are 4 independent 3-qubit components (64 coefficients each); HQConv is one
12-qubit chain: 12 backward passes of a 4^12-entry real vector (64 MiB) through its blocks per
call, whatever the batch (about 15 s on a 2-core CPU), then 12 × 3^12 multiply-adds per input.
A forward density matrix (4^12 complex entries per input) costs about as much per input as the
backward pass per output (about 1.2 s), so the backward picture wins from about 12 inputs a call
on — and a network's circuit calls carry a whole batch. Components above `MAX_NOISY_QUBITS` are
refused.

Gates are fused into blocks of at most two qubits (a gate's noise acts on its own wires, so
fusion's commutation argument still holds) and each block becomes one 16×16 transfer matrix,
built once per θ and shared by the batch.
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

MAX_NOISY_QUBITS = 12  # per component: an observable of 4^12 float32 coefficients is 64 MiB
NOISY_BLOCK_QUBITS = 2  # transfer matrices of at most 16×16
NOISY_CHUNK_BYTES = 2**27  # inputs evaluated at once: their intermediates stay within 128 MiB

Executor = Callable[[Ansatz, jax.Array, jax.Array], jax.Array]


@dataclass(frozen=True)
class NoisyPlan:
    """One connected component: its qubits and its gates fused into small blocks."""

    qubits: tuple[int, ...]
    blocks: tuple[Block, ...]


@functools.cache
def compile_noisy_plan(ansatz: Ansatz) -> tuple[NoisyPlan, ...]:
    """The components of an ansatz and their blocks (cached per ansatz).

    Raises `ConfigError` for a component of more than `MAX_NOISY_QUBITS` qubits, whose
    observables would need 4^n coefficients each.
    """
    plans = []
    for qubits in _components(ansatz):
        if len(qubits) > MAX_NOISY_QUBITS:
            mib = 4 ** len(qubits) * 4 / 2**20
            raise ConfigError(
                f"{ansatz.name} couples {len(qubits)} qubits into one component; each of its "
                f"observables would need {mib:,.0f} MiB of Pauli coefficients, over the limit of "
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


# Pauli matrices I, X, Y, Z, and the entries of the observables the encoding can see (I, Y, Z)
PAULIS = np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]])
ENCODED_PAULIS = np.array([0, 2, 3])


@functools.cache
def _pauli_change(k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T, T⁻¹)`` between ρ's (ket, bra) entries of k qubits and its Pauli coefficients
    ``r_P = Tr(P ρ)``, both (4^k, 4^k): ``r = T vec(ρ)`` and ``vec(ρ) = T⁻¹ r``."""
    to_args: list = []
    back_args: list = []
    for i in range(k):  # einsum labels: P_i = i, ket a_i = k + i, bra b_i = 2k + i
        to_args += [PAULIS, [i, 2 * k + i, k + i]]  # Tr(P ρ) = Σ_ab P_ba ρ_ab
        back_args += [PAULIS / 2, [i, k + i, 2 * k + i]]  # ρ = Σ_P r_P P / 2^k
    to = np.einsum(*to_args, list(range(3 * k)))
    back = np.einsum(*back_args, [*range(k, 3 * k), *range(k)])
    return to.reshape(4**k, 4**k), back.reshape(4**k, 4**k)


def ptm(superoperator: jax.Array) -> jax.Array:
    """A block's channel in the Pauli basis (its Pauli transfer matrix, real): ``R = T S T⁻¹``
    for the (ket, bra) superoperator S of `block_superoperator`."""
    k = round(np.log2(superoperator.shape[0])) // 2
    to, back = _pauli_change(k)
    return jnp.real(jnp.asarray(to, DTYPE) @ superoperator @ jnp.asarray(back, DTYPE))


def _apply_pauli(vector: jax.Array, matrix: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Apply a (4^k, 4^k) ``matrix`` to the size-4 ``axes`` of a Pauli-coefficient tensor."""
    k = len(axes)
    out = jnp.tensordot(matrix.reshape((4,) * (2 * k)), vector, (list(range(k, 2 * k)), list(axes)))
    return jnp.moveaxis(out, list(range(k)), list(axes))


def observable_coefficients(plan: NoisyPlan, ptms: list[jax.Array]) -> jax.Array:
    """``c_P`` of ``Φ†(Z_q)`` for every qubit q of a component, over P ∈ {I, Y, Z}^m:
    (m, 3^m), the component's qubits in ``plan.qubits`` order and C order over P."""
    m = len(plan.qubits)
    position = {q: i for i, q in enumerate(plan.qubits)}
    identity, z = jnp.eye(4)[0], jnp.eye(4)[3]

    def backward(j: jax.Array) -> jax.Array:
        coefficients = jnp.where(j == 0, z, identity)
        for i in range(1, m):
            coefficients = jnp.multiply.outer(coefficients, jnp.where(j == i, z, identity))
        for block, matrix in zip(reversed(plan.blocks), reversed(ptms)):
            axes = tuple(position[q] for q in block.qubits)
            coefficients = _apply_pauli(coefficients, matrix.T, axes)  # Φ† = Rᵀ in this basis
        for axis in range(m):
            coefficients = jnp.take(coefficients, ENCODED_PAULIS, axis=axis)
        return coefficients.reshape(-1)

    return jax.lax.map(backward, jnp.arange(m))


def noisy_coefficients(
    ansatz: Ansatz, theta: jax.Array, p_depolarizing: float | jax.Array
) -> list[jax.Array]:
    """Each component's outputs as series in its encoded inputs: ``c_P`` over P ∈ {I, Y, Z}^m
    for basis functions (1, −sin x_j, cos x_j) per input, one (m, 3^m) array per component of
    `compile_noisy_plan` (readout error, a plain factor, is not in them). Noise changes these
    numbers, never the form of the series."""
    angles = ansatz.angle_scale * jnp.asarray(theta, jnp.float32)
    depolarizing = depolarizing_matrix(p_depolarizing)
    return [
        observable_coefficients(
            plan, [ptm(block_superoperator(b, angles, depolarizing)) for b in plan.blocks]
        )
        for plan in compile_noisy_plan(ansatz)
    ]


def bloch_terms(single: jax.Array) -> jax.Array:
    """``(1, ⟨Y⟩, ⟨Z⟩)`` of each encoded qubit: (..., n, 2) amplitudes → (..., n, 3) real.
    ⟨X⟩ = 2 Re(ā b) is 0 for RX encodings of real inputs, so it has no column."""
    a, b = single[..., 0], single[..., 1]
    y = 2.0 * jnp.imag(jnp.conj(a) * b)
    z = jnp.abs(a) ** 2 - jnp.abs(b) ** 2
    return jnp.stack([jnp.ones_like(y), y, z], axis=-1)


def _product(terms: jax.Array) -> jax.Array:
    """Π_j r_{P_j} for every P, C order: (B, k, 3) → (B, 3^k)."""
    out = jnp.ones(terms.shape[:1] + (1,), terms.dtype)
    for j in range(terms.shape[1]):
        out = (out[:, :, None] * terms[:, j, None, :]).reshape(len(out), -1)
    return out


def evaluate(coefficients: jax.Array, terms: jax.Array) -> jax.Array:
    """Σ_P c_P Π_j r_{P_j} for a batch: ``coefficients`` (m, 3^m), ``terms`` (B, m, 3) → (B, m).
    The sum splits into the first half of the qubits and the rest (two matrix products)."""
    m = terms.shape[1]
    left, right = _product(terms[:, : m // 2]), _product(terms[:, m // 2 :])
    per_left = jnp.einsum(
        "juv,bv->bju", coefficients.reshape(m, left.shape[1], right.shape[1]), right
    )
    return jnp.einsum("bju,bu->bj", per_left, left)


def _input_bytes(m: int) -> int:
    """Memory per input of `evaluate` on an m-qubit component (its largest intermediates)."""
    return 4 * (m + 1) * (3 ** (m - m // 2) + 3 ** (m // 2))


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
    """Inputs evaluated at once: as many as keep `evaluate`'s intermediates for the widest
    component within `NOISY_CHUNK_BYTES`."""
    widest = max(len(plan.qubits) for plan in compile_noisy_plan(ansatz))
    return max(1, NOISY_CHUNK_BYTES // _input_bytes(widest))


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
    same numbers, without the backward pass; a traced p always takes the backward pass, so its
    derivative exists).
    """
    inputs, theta = check_arguments(ansatz, inputs, theta)
    check_probability("p_depolarizing", p_depolarizing)
    check_probability("readout_error", readout_error)
    if _is_concrete(p_depolarizing) and float(p_depolarizing) == 0.0:
        scale = 1.0 - 2.0 * jnp.asarray(readout_error, jnp.float32)
        return scale * simulate(ansatz, inputs, theta)
    plans = compile_noisy_plan(ansatz)
    coefficients = noisy_coefficients(ansatz, theta, p_depolarizing)  # every chunk reads them
    order = np.argsort([q for plan in plans for q in plan.qubits])

    def flat_run(x: jax.Array) -> jax.Array:
        terms = bloch_terms(encode(x))
        values = [evaluate(c, terms[:, list(plan.qubits)]) for plan, c in zip(plans, coefficients)]
        return jnp.concatenate(values, axis=-1)[:, order]

    lead = inputs.shape[:-1]
    flat = inputs.reshape(-1, ansatz.n_qubits).astype(jnp.float32)
    n, limit = flat.shape[0], noisy_chunk_limit(ansatz)
    if n <= limit:
        out = flat_run(flat)
    else:  # one chunk at a time keeps at most `NOISY_CHUNK_BYTES` of intermediates alive
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
