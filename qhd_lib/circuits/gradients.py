"""Parameter-shift gradients (eq. 10): what a quantum computer would measure instead of autodiff.

For a gate ``exp(-i φ G)`` whose generator ``G`` has the two eigenvalues ±1/2 (RX, RY, RZ), the
derivative of an expectation value is exact from two shifted circuits {cite}`mitarai2018qcl`,
{cite}`schuld2019gradients`:

    ∂f/∂φ = ½ [f(φ + π/2) − f(φ − π/2)]                                        (eq. 10)

Controlled rotations (CRX, CRZ) have generator ``|1⟩⟨1| ⊗ P/2`` with eigenvalues {0, ±1/2}, so
two terms are not enough; the four-term rule is exact:

    ∂f/∂φ = c₊ [f(φ + π/2) − f(φ − π/2)] − c₋ [f(φ + 3π/2) − f(φ − 3π/2)],
    c± = (√2 ± 1) / (4√2).

The ansätze use the angle ``φ = s·θ`` (``s = 2π`` for HQConv/FQConv), so the shifts in θ are
``shift / s`` and the chain rule multiplies by ``s``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib.circuits.ansatz import Ansatz
from qhd_lib.circuits.simulator import simulate

_simulate = jax.jit(simulate, static_argnums=0)

TWO_TERM: tuple[tuple[float, float], ...] = ((0.5, math.pi / 2), (-0.5, -math.pi / 2))
_C_PLUS = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_C_MINUS = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
FOUR_TERM: tuple[tuple[float, float], ...] = (
    (_C_PLUS, math.pi / 2),
    (-_C_PLUS, -math.pi / 2),
    (-_C_MINUS, 3 * math.pi / 2),
    (_C_MINUS, -3 * math.pi / 2),
)


def shift_rule(kind: str) -> tuple[tuple[float, float], ...]:
    """(coefficient, angle shift) pairs of the exact shift rule for a gate kind."""
    if kind == "rx":
        return TWO_TERM
    if kind in ("crx", "crz"):
        return FOUR_TERM
    raise ValueError(f"gate kind {kind!r} has no parameter; shift rules exist for rx, crx, crz")


def parameter_shift_gradient(
    ansatz: Ansatz, inputs: jnp.ndarray, theta: jnp.ndarray, two_term_only: bool = False
) -> jnp.ndarray:
    """∂⟨Z_q⟩/∂θ_k for every qubit q and parameter k by shifted circuit runs (eq. 10).

    Returns (..., n_qubits, n_params). ``two_term_only=True`` applies eq. 10 to every gate, which
    is exact for RX but not for the controlled rotations (a check the book makes).
    """
    theta = jnp.asarray(theta, jnp.float32)
    kinds = {g.param: g.kind for g in ansatz.gates if g.param is not None}
    shifted, weights = [], np.zeros((0, ansatz.n_params))
    for k, kind in sorted(kinds.items()):
        for coefficient, shift in TWO_TERM if two_term_only else shift_rule(kind):
            shifted.append(theta.at[k].add(shift / ansatz.angle_scale))
            row = np.zeros((1, ansatz.n_params))
            row[0, k] = ansatz.angle_scale * coefficient
            weights = np.concatenate([weights, row])
    runs = jax.vmap(lambda t: _simulate(ansatz, inputs, t))(jnp.stack(shifted))
    # runs: (n_runs, ..., n_qubits); contract the runs with their coefficients per parameter
    return jnp.tensordot(jnp.moveaxis(runs, 0, -1), jnp.asarray(weights, runs.dtype), axes=1)
