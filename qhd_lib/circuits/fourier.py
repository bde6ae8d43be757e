"""What function one circuit output computes: its exact Fourier series in the encoded inputs.

With RX angle encoding every input enters the circuit through one gate RX(x_j), whose entries
are cos(x_j/2) and sin(x_j/2); an expectation value is quadratic in them, so each output is a
trigonometric polynomial with frequencies −1, 0, 1 in every input (Schuld, Sweke and Meyer 2021):

    f(x) = Σ_ω c_ω exp(i ω·x),  ω ∈ {−1, 0, 1}^n.

Three points per input determine such a polynomial exactly, so evaluating the circuit on the
3^n grid {0, 2π/3, 4π/3}^n and taking an n-dimensional discrete Fourier transform gives every
coefficient — 531 441 circuit runs for 12 qubits, a few seconds with `simulate`. The structure
of the circuit then shows in which coefficients vanish: which inputs an output depends on, and
how many inputs its terms couple at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib.circuits.ansatz import Ansatz
from qhd_lib.circuits.simulator import simulate

GRID = np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])
FREQUENCIES = np.array([0, 1, -1])  # the DFT's index k ↦ frequency (index 2 is −1)
_simulate = jax.jit(simulate, static_argnums=0)  # one trace for every batch of the grid


def fourier_coefficients(ansatz: Ansatz, theta: jnp.ndarray, batch: int = 59_049) -> np.ndarray:
    """Coefficients c_ω of every output, shape (n_outputs, 3, …, 3) with one axis per input;
    index k on an axis is frequency ``FREQUENCIES[k]``. Exact up to float32 rounding."""
    n = ansatz.n_qubits
    points = _grid_indices(n)
    outputs = []
    for start in range(0, len(points), batch):
        x = jnp.asarray(GRID[points[start : start + batch]], jnp.float32)
        outputs.append(np.asarray(_simulate(ansatz, x, theta), np.float64))
    values = np.concatenate(outputs).T.reshape(-1, *(3,) * n)  # (outputs, 3, …, 3)
    axes = tuple(range(1, n + 1))
    return np.fft.fftn(values, axes=axes) / 3**n


def evaluate(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The series at inputs ``x`` (batch, n): Σ_ω c_ω exp(i ω·x), real part, (batch, outputs)."""
    n = coefficients.ndim - 1
    omegas = FREQUENCIES[_grid_indices(n)]  # (3^n, n), in the coefficients' C order
    flat = coefficients.reshape(len(coefficients), -1).T
    x = np.asarray(x, np.float64)
    rows = []
    for start in range(0, len(x), 8):  # 8 × 3^12 phases at a time (68 MB)
        phases = np.exp(1j * x[start : start + 8] @ omegas.T)
        rows.append(np.real(phases @ flat))
    return np.concatenate(rows)


def _grid_indices(n: int) -> np.ndarray:
    """Every index of a (3, …, 3) array in C order: (3^n, n) int8."""
    return np.indices((3,) * n, dtype=np.int8).reshape(n, -1).T


def _orders(n: int) -> np.ndarray:
    """How many inputs each coefficient couples (nonzero frequencies), in coefficient order."""
    return (_grid_indices(n) != 0).sum(axis=1)


def _by_order(power: np.ndarray, n: int) -> np.ndarray:
    """Per-term power (outputs, 3^n), coefficient order, summed by the terms' order."""
    orders = _orders(n)
    return np.stack([power[:, orders == k].sum(axis=1) for k in range(n + 1)], axis=1)


def order_weights(coefficients: np.ndarray) -> np.ndarray:
    """Σ|c_ω|² of each output by the number of inputs its terms couple: (outputs, n + 1).
    Row sums equal the mean of f² over the inputs (Parseval)."""
    n = coefficients.ndim - 1
    return _by_order(np.abs(coefficients.reshape(len(coefficients), -1)) ** 2, n)


def trig_order_weights(coefficients: np.ndarray) -> np.ndarray:
    """`order_weights` of a series written in the real basis (1, −sin x_j, cos x_j) per input
    (`qhd_lib.circuits.noise.noisy_coefficients`: (outputs, 3^n), C order over I, Y, Z).

    A term with k sine or cosine factors spreads over 2^k exponentials whose coefficient
    vectors are orthogonal (−sin x = (i/2)(e^{ix} − e^{−ix}), cos x = (e^{ix} + e^{−ix})/2), so
    its power in the exponential basis is c_P² / 2^k."""
    c = np.asarray(coefficients, np.float64)
    n = round(np.log(c.shape[1]) / np.log(3))
    return _by_order(c**2 / 2.0 ** _orders(n), n)


def nonzero_terms(coefficients: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Number of coefficients with |c_ω| > ``tol`` per output (of 3^n possible)."""
    return (np.abs(coefficients.reshape(len(coefficients), -1)) > tol).sum(axis=1)


def terms_for_power(coefficients: np.ndarray, fraction: float = 0.99) -> np.ndarray:
    """Fewest coefficients per output whose Σ|c_ω|² reaches ``fraction`` of the total."""
    power = np.sort(np.abs(coefficients.reshape(len(coefficients), -1)) ** 2, axis=1)[:, ::-1]
    cumulative = np.cumsum(power, axis=1)
    return (cumulative < fraction * cumulative[:, -1:]).sum(axis=1) + 1


def dependence(coefficients: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """(outputs, inputs) booleans: output o depends on input j when some term with a nonzero
    frequency in j has |c_ω| > ``tol``."""
    n = coefficients.ndim - 1
    out = np.zeros((len(coefficients), n), bool)
    for j in range(n):
        moved = np.moveaxis(np.abs(coefficients), j + 1, 1)[:, 1:]  # frequencies ±1 in input j
        out[:, j] = moved.reshape(len(coefficients), -1).max(axis=1) > tol
    return out
