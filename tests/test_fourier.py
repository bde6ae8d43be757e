"""Fourier series of circuit outputs: exact, and shaped by the circuit's structure."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib import circuits
from qhd_lib.circuits import fourier


def test_series_reproduces_the_simulator_at_random_inputs() -> None:
    ansatz = circuits.make_ansatz("basic_entangler", channels=1, pixels=4, layers=2)
    theta = circuits.init_params(jax.random.key(1), ansatz)
    coefficients = fourier.fourier_coefficients(ansatz, theta)
    x = np.random.default_rng(0).uniform(-4, 4, (32, 4))
    exact = np.asarray(circuits.simulate(ansatz, jnp.asarray(x, jnp.float32), theta))
    np.testing.assert_allclose(fourier.evaluate(coefficients, x), exact, atol=1e-6)
    mean_square = np.mean(exact**2)  # Parseval, roughly: the order weights sum to E[f²]
    assert abs(fourier.order_weights(coefficients).sum(axis=1).mean() - mean_square) < 0.1


def test_with_identity_gates_each_output_is_the_cosine_of_its_own_input() -> None:
    ansatz = circuits.make_ansatz("fqconv", layers=1)
    coefficients = fourier.fourier_coefficients(ansatz, jnp.zeros(ansatz.n_params))
    np.testing.assert_array_equal(fourier.dependence(coefficients), np.eye(12, dtype=bool))
    assert list(fourier.nonzero_terms(coefficients)) == [2] * 12  # cos x = (e^{ix} + e^{-ix})/2
    np.testing.assert_allclose(fourier.order_weights(coefficients)[:, 1], 0.5, atol=1e-6)


def test_fqconv_outputs_depend_only_on_their_pixel_column() -> None:
    ansatz = circuits.make_ansatz("fqconv")
    theta = circuits.init_params(jax.random.key(0), ansatz)
    coefficients = fourier.fourier_coefficients(ansatz, theta)
    pixel = np.arange(12) % 4  # qubit 4c + p holds pixel p of channel c
    np.testing.assert_array_equal(fourier.dependence(coefficients), pixel[:, None] == pixel)
    assert np.all(fourier.order_weights(coefficients)[:, 4:] < 1e-12)
    assert np.all(fourier.nonzero_terms(coefficients) <= 26)  # 3³ − 1 (no constant term)


def test_noisy_coefficients_at_zero_noise_give_the_order_weights_of_the_grid_series() -> None:
    from qhd_lib.circuits import noise

    ansatz = circuits.make_ansatz("hqconv", channels=3, pixels=2, layers=2)  # 6 qubits, 729 points
    theta = circuits.init_params(jax.random.key(2), ansatz)
    grid = fourier.order_weights(fourier.fourier_coefficients(ansatz, theta))
    (real_basis,) = noise.noisy_coefficients(ansatz, theta, jnp.float32(0.0))
    np.testing.assert_allclose(fourier.trig_order_weights(real_basis), grid, atol=1e-6)
    noisy = fourier.trig_order_weights(noise.noisy_coefficients(ansatz, theta, 0.05)[0])
    assert (noisy[:, 1:].sum(axis=1) < grid[:, 1:].sum(axis=1)).all()  # noise removes power
