"""Finite-shot estimates and exact noisy expectations, against `simulate` and PennyLane."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib.circuits import (
    init_params,
    make_ansatz,
    noisy_executor,
    shots_executor,
    simulate,
    simulate_noisy,
    simulate_shots,
)
from qhd_lib.circuits import noise as noise_module
from qhd_lib.circuits.shots import estimate_from_expectations
from qhd_lib.errors import ConfigError

_sim = jax.jit(simulate, static_argnums=0)
_noisy = jax.jit(simulate_noisy, static_argnums=0)
_shots = jax.jit(simulate_shots, static_argnums=(0, 3))

# Small circuits PennyLane's default.mixed simulates in milliseconds: a 4-qubit ring of CNOTs,
# FQConv split into two 3-qubit components (3 channels of 2 pixels, stride 2) and a 6-qubit
# HQConv chain (3 channels of 2 pixels) whose clusters merge.
SMALL = {
    "basic_entangler": dict(name="basic_entangler", channels=1, pixels=4, layers=2),
    "fqconv": dict(name="fqconv", channels=3, pixels=2, stride=2, layers=2),
    "hqconv": dict(name="hqconv", channels=3, pixels=2, layers=2),
}


def _ansatz(spec: dict):
    return make_ansatz(**spec)


def _inputs(ansatz, batch: int = 2, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, ansatz.n_qubits), minval=-3, maxval=3)


def _theta(ansatz, seed: int = 1) -> jax.Array:
    return init_params(jax.random.key(seed), ansatz)


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("pennylane")
    from qhd_lib.circuits import reference

    return reference


# --- finite shots -------------------------------------------------------------------------------


def test_shot_estimates_have_the_mean_and_variance_of_pennylane_sampling(reference):
    ansatz = _ansatz(SMALL["basic_entangler"])
    x, theta = jnp.array([0.3, -1.2, 2.0, 0.8]), _theta(ansatz)
    exact = np.asarray(simulate(ansatz, x, theta), np.float64)  # |⟨Z⟩| < 0.15 on every qubit
    shots, repeats = 200, 1000
    ours = np.asarray(_shots(ansatz, jnp.broadcast_to(x, (repeats, 4)), theta, shots, 7))
    theirs = reference.sample_reference_shots(ansatz, x, theta, shots, repeats, seed=7)
    variance = (1 - exact**2) / shots  # of one S-shot estimate
    standard_error = np.sqrt(variance / repeats)  # of the mean of `repeats` estimates
    # Bounds: a mean of 1 000 binomial estimates is Gaussian to a good approximation, so a
    # 4-standard-error bound fails with probability 6e-5 per qubit for a fresh seed; the sample
    # variance of 1 000 draws has a relative spread of √(2/999) ≈ 0.045, so ±25 % is > 5 spreads.
    # With the fixed seeds the outcomes are fixed (observed: |z| ≤ 2.5, variance within 10 %).
    for estimates in (ours, theirs):
        assert np.all(np.abs(estimates.mean(0) - exact) < 4 * standard_error)
        assert np.all(np.abs(estimates.var(0, ddof=1) / variance - 1) < 0.25)
    # and the two samplers agree with each other (difference of two independent means)
    assert np.all(np.abs(ours.mean(0) - theirs.mean(0)) < 4 * np.sqrt(2) * standard_error)


def test_shot_estimates_converge_to_simulate_as_shots_grow():
    ansatz = _ansatz(SMALL["hqconv"])
    x, theta = _inputs(ansatz), _theta(ansatz)
    exact = _sim(ansatz, x, theta)

    def within_five_sigma(estimate: jax.Array, shots: int) -> bool:
        # |z| > 5 has probability 6e-7 per entry for a fresh seed; the seeds here are fixed
        return bool(jnp.all(jnp.abs(estimate - exact) <= 5 * jnp.sqrt((1 - exact**2) / shots)))

    assert within_five_sigma(_shots(ansatz, x, theta, 10**6, 3), 10**6)
    errors = []
    for shots in (10**2, 10**4, 10**6):  # `simulate_shots`'s sampler, compiled once for all S
        estimate = estimate_from_expectations(exact, shots, 3)
        assert within_five_sigma(estimate, shots)
        errors.append(float(jnp.abs(estimate - exact).max()))
    assert errors[0] > errors[1] > errors[2]


def test_same_key_repeats_estimates_and_another_key_draws_new_ones():
    ansatz = _ansatz(SMALL["basic_entangler"])
    x, theta, shots = _inputs(ansatz, batch=6).reshape(2, 3, -1), _theta(ansatz), 50
    first = _shots(ansatz, x, theta, shots, jax.random.key(11))
    assert first.shape == x.shape  # batched over every leading axis, like `simulate`
    assert jnp.array_equal(first, _shots(ansatz, x, theta, shots, jax.random.key(11)))
    assert not jnp.array_equal(first, _shots(ansatz, x, theta, shots, jax.random.key(12)))
    counts = shots * (np.asarray(first) + 1) / 2  # estimates lie on the grid 2k/S − 1
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)


def test_shot_estimates_have_the_gradient_of_the_exact_expectation():
    def expectations(t):  # any differentiable ⟨Z⟩ values; `simulate_shots` feeds `simulate`'s
        return jnp.cos(jnp.outer(jnp.arange(1.0, 4.0), t))

    theta, weights = jnp.array([0.3, -0.7, 1.1, 2.0]), jnp.arange(12.0).reshape(3, 4)
    grad_shots = jax.grad(
        lambda t: jnp.sum(weights * estimate_from_expectations(expectations(t), 100, 0))
    )(theta)
    grad_exact = jax.grad(lambda t: jnp.sum(weights * expectations(t)))(theta)
    np.testing.assert_allclose(grad_shots, grad_exact, rtol=1e-6)


@pytest.mark.parametrize("shots", [0, -5, 2.5, True, "100"])
def test_shots_must_be_a_positive_integer(shots):
    ansatz = _ansatz(SMALL["basic_entangler"])
    with pytest.raises(ConfigError, match="positive integer"):
        simulate_shots(ansatz, jnp.zeros(4), jnp.zeros(ansatz.n_params), shots, 0)


# --- exact noise ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        SMALL["basic_entangler"],
        dict(name="fqconv", layers=1),  # the paper's FQConv: four 3-qubit components
        dict(name="hqconv", layers=1),  # one 12-qubit ρ from the B blocks on, one input a chunk
        dict(name="released_hqconv", layers=2),
    ],
    ids=lambda spec: f"{spec['name']}-{spec['layers']}",
)
def test_noiseless_density_matrix_equals_simulate(spec):
    ansatz = _ansatz(spec)
    x, theta = _inputs(ansatz, batch=3), _theta(ansatz)
    np.testing.assert_allclose(
        _noisy(ansatz, x, theta, 0.0, 0.0), simulate(ansatz, x, theta), rtol=0, atol=1e-6
    )


@pytest.mark.parametrize("case", sorted(SMALL))
def test_noisy_expectations_match_pennylane_default_mixed(reference, case):
    ansatz = _ansatz(SMALL[case])
    x, theta = _inputs(ansatz), _theta(ansatz)
    expected = reference.simulate_reference_noisy(ansatz, x, theta, 0.05, 0.03)
    noiseless = reference.simulate_reference(ansatz, x, theta)
    assert np.abs(expected - noiseless).max() > 0.1  # the noise matters at this size
    np.testing.assert_allclose(_noisy(ansatz, x, theta, 0.05, 0.03), expected, rtol=0, atol=1e-6)


def test_readout_error_scales_every_expectation_by_one_minus_two_epsilon():
    ansatz = _ansatz(SMALL["fqconv"])
    x, theta = _inputs(ansatz), _theta(ansatz)
    np.testing.assert_allclose(
        _noisy(ansatz, x, theta, 0.0, 0.1), 0.8 * simulate(ansatz, x, theta), rtol=0, atol=1e-6
    )


def test_fully_depolarising_noise_leaves_every_entangled_qubit_maximally_mixed():
    # p = 3/4 maps every qubit it acts on to I/2; each FQConv qubit ends on a two-qubit gate
    ansatz = _ansatz(SMALL["fqconv"])
    out = _noisy(ansatz, _inputs(ansatz), _theta(ansatz), 0.75, 0.0)
    np.testing.assert_allclose(out, 0.0, atol=1e-6)


def test_noisy_simulation_is_batched_and_differentiable():
    ansatz = make_ansatz("basic_entangler", channels=1, pixels=3, layers=1)  # quick to compile
    x, theta = _inputs(ansatz, batch=6).reshape(2, 3, 3), _theta(ansatz)
    exact = _sim(ansatz, x, theta)
    assert _noisy(ansatz, x, theta, 0.01, 0.02).shape == x.shape

    def loss(t, p):  # Σ ⟨Z⟩·⟨Z⟩₀: its derivative in p is half that of Σ⟨Z⟩² at p = 0
        return jnp.sum(_noisy(ansatz, x, t, p, 0.0) * exact)

    grad_theta, grad_p = jax.grad(loss, argnums=(0, 1))(theta, 0.0)
    grad_exact = jax.grad(lambda t: jnp.sum(_sim(ansatz, x, t) * exact))(theta)
    np.testing.assert_allclose(grad_theta, grad_exact, atol=1e-5)
    assert grad_p < 0  # more noise pulls every ⟨Z⟩ towards 0


def test_chunked_noisy_batches_equal_one_chunk(monkeypatch):
    ansatz = _ansatz(SMALL["fqconv"])
    x, theta = _inputs(ansatz, batch=5), _theta(ansatz)
    whole = simulate_noisy(ansatz, x, theta, 0.02, 0.01)
    monkeypatch.setattr(noise_module, "NOISY_CHUNK_BYTES", 2 * noise_module._input_bytes(3))
    assert noise_module.noisy_chunk_limit(ansatz) == 2
    np.testing.assert_allclose(simulate_noisy(ansatz, x, theta, 0.02, 0.01), whole, atol=1e-7)


def test_rx_encoded_qubits_have_no_x_component():
    # why the backward pass keeps only the I, Y, Z coefficients of each observable
    single = noise_module.encode(_inputs(_ansatz(SMALL["hqconv"]), batch=50))
    a, b = single[..., 0], single[..., 1]
    np.testing.assert_allclose(2 * jnp.real(jnp.conj(a) * b), 0.0, atol=1e-7)
    terms = noise_module.bloch_terms(single)
    np.testing.assert_allclose(terms[..., 1] ** 2 + terms[..., 2] ** 2, 1.0, atol=1e-6)  # pure


def test_pauli_transfer_matrices_are_real_trace_preserving_and_unital():
    ansatz = _ansatz(SMALL["hqconv"])
    angles = ansatz.angle_scale * _theta(ansatz)
    plan = noise_module.compile_noisy_plan(ansatz)[0]
    depolarizing = noise_module.depolarizing_matrix(0.1)
    for block in plan.blocks:
        superop = noise_module.block_superoperator(block, angles, depolarizing)
        to, back = noise_module._pauli_change(len(block.qubits))
        matrix = to @ np.asarray(superop) @ back
        np.testing.assert_allclose(np.imag(matrix), 0.0, atol=1e-6)
        ptm = np.asarray(noise_module.ptm(superop))
        np.testing.assert_allclose(ptm[0], np.eye(len(ptm))[0], atol=1e-6)  # Tr ρ kept
        np.testing.assert_allclose(ptm[:, 0], np.eye(len(ptm))[0], atol=1e-6)  # I ↦ I
        assert np.abs(ptm).max() <= 1 + 1e-6


def test_one_backward_pass_serves_every_input_of_a_call():
    # the coefficients do not depend on the inputs: evaluating them at new inputs is the circuit
    ansatz = _ansatz(SMALL["hqconv"])
    theta = _theta(ansatz)
    (plan,) = noise_module.compile_noisy_plan(ansatz)
    (coefficients,) = noise_module.noisy_coefficients(ansatz, theta, 0.05)
    assert coefficients.shape == (6, 3**6)
    x = _inputs(ansatz, batch=7, seed=3)
    terms = noise_module.bloch_terms(noise_module.encode(x))[:, list(plan.qubits)]
    np.testing.assert_allclose(
        noise_module.evaluate(coefficients, terms), _noisy(ansatz, x, theta, 0.05, 0.0), atol=1e-6
    )


def test_components_above_the_qubit_limit_are_refused():
    ring = make_ansatz("basic_entangler", channels=1, pixels=13, layers=1)
    with pytest.raises(ConfigError, match="MAX_NOISY_QUBITS = 12"):
        simulate_noisy(ring, jnp.zeros(13), jnp.zeros(13), 0.01, 0.0)


@pytest.mark.parametrize(("p", "eps"), [(-0.1, 0.0), (0.0, 1.5), (float("nan"), 0.0)])
def test_noise_probabilities_outside_zero_one_are_refused(p, eps):
    ansatz = _ansatz(SMALL["basic_entangler"])
    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):
        simulate_noisy(ansatz, jnp.zeros(4), jnp.zeros(8), p, eps)


# --- executors ------------------------------------------------------------------------------------


def test_executors_take_the_arguments_of_simulate():
    ansatz = _ansatz(SMALL["fqconv"])
    x, theta = _inputs(ansatz, batch=3), _theta(ansatz)
    exact = simulate(ansatz, x, theta)
    np.testing.assert_allclose(noisy_executor(0.0, 0.0)(ansatz, x, theta), exact, atol=1e-6)
    for name in ("hqconv", "fqconv"):  # readout alone skips the density matrix, same numbers
        small = _ansatz(SMALL[name])
        xs, th = _inputs(small, batch=3), _theta(small)
        np.testing.assert_allclose(
            noisy_executor(0.0, 0.2)(small, xs, th), _noisy(small, xs, th, 0.0, 0.2), atol=1e-6
        )
    run = shots_executor(10, jax.random.key(4))
    first = run(ansatz, x, theta)
    assert jnp.array_equal(first, run(ansatz, x, theta))  # a repeated call repeats its shots
    # another call (here: another first input) folds another fingerprint into the key, so even
    # the unchanged inputs draw new shots
    assert not jnp.array_equal(first[1:], run(ansatz, x.at[0, 0].add(0.1), theta)[1:])


def test_model_reads_shot_and_noise_executors_from_their_spec():
    from qhd_lib.models import quantum

    ansatz = quantum.vertex_ansatz("fqconv", 1)
    x = jax.random.uniform(jax.random.key(0), (2, 2, 2, 6), minval=-3, maxval=3)
    theta = jax.vmap(lambda k: init_params(k, ansatz))(jax.random.split(jax.random.key(1), 2))
    exact = quantum.vertex_circuits(quantum.simulator("jax"), ansatz, x, theta)
    noiseless = quantum.simulator("depolarizing=0,readout=0")
    np.testing.assert_allclose(
        quantum.vertex_circuits(noiseless, ansatz, x, theta), exact, atol=1e-6
    )
    assert quantum.simulator("shots=99,seed=2") is quantum.simulator("shots=99,seed=2")
    # a model first resolves its executor while being traced: nothing may leak from that trace
    small = _ansatz(SMALL["basic_entangler"])
    x, theta = _inputs(small), _theta(small)
    traced = jax.jit(lambda v: quantum.simulator("shots=64,seed=5")(small, v, theta))(x)
    assert jnp.array_equal(traced, quantum.simulator("shots=64,seed=5")(small, x, theta))
    quantum.check_executor("shots=100,depolarizing=0.01,readout=0.02")
    for bad in ("shots=0", "shots=many", "seed=1", "depolarizing=2", "bogus=1", "shots=1,shots=2"):
        with pytest.raises(ConfigError):
            quantum.check_executor(bad)
