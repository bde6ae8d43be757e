"""DDPM maths of qhd_lib.diffusion checked against independent float64 formulas and Monte Carlo."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib import diffusion as d

T_SHORT = 100
RNG = np.random.default_rng(0)


def key(seed: int) -> jax.Array:
    """A JAX key; the "rbg" generator compiles much faster than threefry, which keeps this file
    fast."""
    return jax.random.key(seed, impl="rbg")


def numpy_cosine_alpha_bar(T: int, s: float = 0.008) -> np.ndarray:
    """alpha_bar at the paper's steps 1..T from Nichol & Dhariwal's formula, float64, no
    clipping."""
    f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
    return f[1:] / f[0]


def numpy_linear_alpha_bar(T: int) -> np.ndarray:
    betas = np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)
    return np.cumprod(1 - betas)


def oracle(params: tuple[d.Schedule, jax.Array], x_t: jax.Array, t: jax.Array) -> jax.Array:
    """The exact noise of x_t for a known x0: ``params = (schedule, x0)``, eps from eq. 4.

    One module-level function (not a fresh closure per test), so jit caches are shared.
    """
    schedule, x0 = params
    return d.predict_noise_from_x0(schedule, x_t, t, x0)


def toy_eps(w: float, x: jax.Array, t: jax.Array) -> jax.Array:
    """A deterministic stand-in for a trained network."""
    return w * jnp.tanh(x) + 0.01 * t[:, None, None, None]


@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("k", [0, 30, 70])
def test_q_sample_matches_iterating_eq1(name: str, k: int) -> None:
    """Eq. 4 at 0-indexed step k has the law of k + 1 steps of eq. 1 (mean and variance, MC)."""
    s = d.make_schedule(name, T_SHORT)
    n = 100_000
    x0 = jnp.broadcast_to(jnp.array([-1.0, 0.0, 0.5, 3.0]), (n, 4))
    x = x0
    for i in range(k + 1):
        x = d.q_step(s, x, i, RNG.standard_normal(x0.shape, np.float32))
    direct = d.q_sample(s, x0, k, RNG.standard_normal(x0.shape, np.float32))
    alpha_bar = float(np.prod(1 - np.asarray(s.betas, np.float64)[: k + 1]))
    mean = np.sqrt(alpha_bar) * np.asarray(x0[0])
    var = 1 - alpha_bar
    for samples in (np.asarray(x), np.asarray(direct)):
        np.testing.assert_allclose(samples.mean(0), mean, atol=5 * np.sqrt(var / n))
        np.testing.assert_allclose(samples.var(0), var, atol=5 * var * np.sqrt(2 / n) + 1e-6)


@pytest.mark.parametrize("name", ["cosine", "linear"])
@pytest.mark.parametrize("T", [T_SHORT, 1000])
def test_alpha_bar_T_is_close_to_zero(name: str, T: int) -> None:
    s = d.make_schedule(name, T)
    assert s.timesteps == T
    assert float(s.alphas_cumprod[-1]) < 1e-4
    assert float(s.alphas_cumprod[0]) > 0.999


def test_schedules_match_their_defining_formulas() -> None:
    """Cosine alpha_bar follows cos^2 (only the clipped last beta differs); linear spans
    1e-4..0.02."""
    T = 1000
    cos = d.make_schedule("cosine", T)
    np.testing.assert_allclose(
        cos.alphas_cumprod[:-1], numpy_cosine_alpha_bar(T)[:-1], rtol=1e-5, atol=1e-9
    )
    assert float(cos.betas.max()) == pytest.approx(0.999)
    lin = d.make_schedule("linear", T)
    assert float(lin.betas[0]) == pytest.approx(1e-4)
    assert float(lin.betas[-1]) == pytest.approx(0.02)
    np.testing.assert_allclose(lin.alphas_cumprod, numpy_linear_alpha_bar(T), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(
        cos.snr, numpy_cosine_alpha_bar(T) / (1 - numpy_cosine_alpha_bar(T)), rtol=1e-4, atol=1e-8
    )


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_posterior_matches_bayes_rule_in_float64(name: str) -> None:
    """q(x_{t-1} | x_t, x_0) from Gaussian conditioning, computed independently in float64."""
    T = T_SHORT
    alpha_bar = numpy_cosine_alpha_bar(T) if name == "cosine" else numpy_linear_alpha_bar(T)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    alpha = alpha_bar / alpha_bar_prev
    if name == "cosine":  # the library clips the last beta to 0.999, as the released code does
        alpha[-1] = 1 - 0.999
        alpha_bar[-1] = alpha_bar_prev[-1] * alpha[-1]
    beta = 1 - alpha
    rng = np.random.default_rng(0)
    t = np.array([1, 2, 5, 37, 50, 98, 99])
    x0 = rng.uniform(-1, 1, (len(t), 6))
    x_t = rng.normal(size=(len(t), 6))
    # prior x_{t-1} | x_0 ~ N(sqrt(abar_prev) x0, 1 - abar_prev);
    # likelihood x_t | x_{t-1} ~ N(sqrt(a) x, beta)
    precision = 1 / (1 - alpha_bar_prev[t]) + alpha[t] / beta[t]
    var = 1 / precision
    mean = var[:, None] * (
        (np.sqrt(alpha_bar_prev[t]) / (1 - alpha_bar_prev[t]))[:, None] * x0
        + (np.sqrt(alpha[t]) / beta[t])[:, None] * x_t
    )
    s = d.make_schedule(name, T)
    got_mean, got_var, got_log_var = d.q_posterior(
        s, jnp.asarray(x0), jnp.asarray(x_t), jnp.asarray(t)
    )
    np.testing.assert_allclose(got_mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_var[:, 0], var, rtol=1e-4)
    np.testing.assert_allclose(got_log_var[:, 0], np.log(var), atol=1e-4)


def test_posterior_at_first_step_is_x0_without_noise() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    x0 = jnp.linspace(-1, 1, 8).reshape(1, 8)
    mean, var, log_var = d.q_posterior(s, x0, jnp.ones_like(x0), 0)
    np.testing.assert_allclose(mean, x0, atol=1e-6)
    assert float(var.max()) == 0.0
    assert float(log_var.max()) == pytest.approx(np.log(1e-20), rel=1e-6)


@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_eq7_equals_posterior_mean_when_noise_is_exact(name: str) -> None:
    s = d.make_schedule(name, T_SHORT)
    t = jnp.arange(T_SHORT, dtype=jnp.int32)
    x0 = jnp.asarray(RNG.uniform(-1, 1, (T_SHORT, 5, 5, 1)), jnp.float32)
    eps = jnp.asarray(RNG.standard_normal(x0.shape), jnp.float32)
    x_t = d.q_sample(s, x0, t, eps)
    posterior_mean, _, _ = d.q_posterior(s, x0, x_t, t)
    np.testing.assert_allclose(d.model_mean(s, x_t, t, eps), posterior_mean, rtol=1e-4, atol=2e-4)


def test_x0_and_noise_predictions_invert_eq4() -> None:
    s = d.make_schedule("cosine", 1000)
    t = jnp.array([0, 1, 10, 200, 500, 800], dtype=jnp.int32)
    x0 = jnp.asarray(RNG.uniform(-1, 1, (len(t), 4, 4, 1)), jnp.float32)
    eps = jnp.asarray(RNG.standard_normal(x0.shape), jnp.float32)
    x_t = d.q_sample(s, x0, t, eps)
    np.testing.assert_allclose(d.predict_x0_from_noise(s, x_t, t, eps), x0, atol=1e-4)
    np.testing.assert_allclose(d.predict_noise_from_x0(s, x_t, t, x0), eps, atol=1e-3)


def test_p2_weights_at_known_steps() -> None:
    """Linear T = 1000 at t = 0: alpha_bar = 0.9999, SNR = 9999; cosine at T/2 - 1: hand formula."""
    lin = d.make_schedule("linear", 1000)
    assert float(d.p2_weight(lin, 0)) == pytest.approx(1e-4, rel=1e-3)  # (1 + 9999)^-1
    assert float(d.p2_weight(lin, 0, gamma=0.5)) == pytest.approx(1e-2, rel=1e-3)  # 10000^-1/2
    assert float(d.p2_weight(lin, 0, gamma=1.0, k=0.0)) == pytest.approx(1 / 9999, rel=1e-3)
    assert float(d.p2_weight(lin, 0, gamma=1.0, k=5.0)) == pytest.approx(1 / 10004, rel=1e-3)
    assert float(d.p2_weight(lin, 0, gamma=0.0)) == 1.0
    cos = d.make_schedule("cosine", 1000)
    # alpha_bar = cos^2(pi/2 * 0.508/1.008) / cos^2(pi/2 * 0.008/1.008)
    #           = 0.493767 / 0.999845 = 0.493844
    assert float(cos.alphas_cumprod[499]) == pytest.approx(0.4938436, rel=1e-5)
    assert float(d.p2_weight(cos, 499)) == pytest.approx(1 - 0.4938436, rel=1e-5)
    assert float(d.p2_weight(cos, 999)) == pytest.approx(1.0, abs=1e-6)
    assert float(d.p2_weight(cos, 999, gamma=1.0, k=2.0)) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
@pytest.mark.parametrize("name", ["cosine", "linear"])
def test_sampler_with_true_noise_recovers_x0(method: str, name: str) -> None:
    s = d.make_schedule(name, T_SHORT)
    x0 = jnp.asarray(RNG.uniform(-1, 1, (4, 8, 8, 1)), jnp.float32)
    out = d.sample(s, oracle, (s, x0), key(4), x0.shape, progress=False, method=method)
    np.testing.assert_allclose(out, x0, atol=1e-4)


def test_ddpm_steps_with_true_noise_keep_the_forward_marginals() -> None:
    """Ancestral steps T-1 .. 10 from N(0, I) give x ~ q(x_10 | x0): needs the right beta~_t.

    With beta_t instead of beta~_t the variance at step 10 would be 13 % too large.
    """
    s = d.make_schedule("cosine", T_SHORT)
    stop, n = 10, 50_000
    x0 = jnp.broadcast_to(jnp.array([-0.9, 0.0, 0.7]), (n, 3))
    k = key(5)

    @jax.jit
    def run(x: jax.Array) -> jax.Array:
        def body(x, t):
            return d.ddpm_step(s, oracle, (s, x0), x, t, k), None

        return jax.lax.scan(body, x, jnp.arange(T_SHORT - 1, stop - 1, -1))[0]

    x = np.asarray(run(jnp.asarray(RNG.standard_normal(x0.shape), jnp.float32)))
    alpha_bar = float(s.alphas_cumprod_prev[stop])
    var = 1 - alpha_bar
    np.testing.assert_allclose(
        x.mean(0), np.sqrt(alpha_bar) * np.asarray(x0[0]), atol=5 * np.sqrt(var / n)
    )
    np.testing.assert_allclose(x.var(0), var, rtol=5 * np.sqrt(2 / n))


def test_sample_does_not_depend_on_chunking() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    a = d.sample(s, toy_eps, 0.5, key(7), (2, 4, 4, 1), progress=False, chunk=T_SHORT)
    b = d.sample(s, toy_eps, 0.5, key(7), (2, 4, 4, 1), progress=False, chunk=T_SHORT // 2)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert float(jnp.abs(a).max()) <= 1.0


def test_ddim_visits_the_requested_number_of_steps() -> None:
    s = d.make_schedule("cosine", 1000)
    ts = d.sampling_timesteps(s, "ddim", 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
    assert len(d.sampling_timesteps(s, "ddpm")) == 1000


def test_loss_is_zero_for_the_true_noise_and_p2_weighted_otherwise() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    x0 = jnp.asarray(RNG.uniform(-1, 1, (4096, 2, 2, 1)), jnp.float32)
    k = key(9)
    assert float(d.loss_fn(s, oracle, (s, x0), x0, k)) < 1e-6
    zero = lambda p, x, t: jnp.zeros_like(x)  # noqa: E731
    # with eps_hat = 0 the loss is E_t[w_t] E[eps^2]: 1 unweighted, E_t[1 - alpha_bar_t] with P2
    assert float(d.loss_fn(s, zero, None, x0, k, p2_gamma=0.0)) == pytest.approx(1.0, abs=0.05)
    expected = float(jnp.mean(1 - s.alphas_cumprod))
    assert float(d.loss_fn(s, zero, None, x0, k)) == pytest.approx(expected, abs=0.03)


def test_loss_is_jittable_and_differentiable() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    x0 = jnp.zeros((8, 4, 4, 1))
    apply_fn = lambda w, x, t: w * x  # noqa: E731
    grad = jax.jit(jax.grad(lambda w, k: d.loss_fn(s, apply_fn, w, x0, k)))(1.0, key(0))
    assert np.isfinite(float(grad)) and float(grad) != 0.0


@pytest.mark.parametrize("bad_t", [-1, T_SHORT, [0, T_SHORT + 3]])
def test_time_steps_outside_0_T_are_rejected(bad_t) -> None:
    s = d.make_schedule("cosine", T_SHORT)
    x0 = jnp.zeros((1 if np.ndim(bad_t) == 0 else 2, 2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\) \(0-indexed"):
        d.q_sample(s, x0, jnp.asarray(bad_t), jnp.zeros_like(x0))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 100\)"):
        d.p2_weight(s, jnp.asarray(bad_t))


def test_float_time_steps_are_rejected() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    with pytest.raises(ValueError, match="time steps must be integers.*int32"):
        d.q_sample(s, jnp.zeros((1, 2)), jnp.array([0.5]), jnp.zeros((1, 2)))


@pytest.mark.parametrize("T", [0, -5, 2.5])
def test_non_positive_T_is_rejected(T) -> None:
    with pytest.raises(ValueError, match="timesteps must be a positive integer.*T = 1000"):
        d.make_schedule("cosine", T)


def test_unknown_schedule_is_rejected() -> None:
    with pytest.raises(
        ValueError, match="unknown beta schedule 'quadratic'; use one of cosine, linear"
    ):
        d.make_schedule("quadratic")


def test_unknown_sampler_and_ddpm_with_fewer_steps_are_rejected() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    with pytest.raises(ValueError, match="unknown sampler 'euler'; use one of ddpm, ddim"):
        d.sample(s, oracle, (s, jnp.zeros((1, 2))), key(0), (1, 2), method="euler")
    with pytest.raises(ValueError, match="use method='ddim' for fewer steps"):
        d.sample(s, oracle, (s, jnp.zeros((1, 2))), key(0), (1, 2), steps=10)


def test_importing_diffusion_loads_neither_pennylane_nor_torch() -> None:
    code = (
        "import sys, qhd_lib.diffusion; print('pennylane' in sys.modules or 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_donating_the_sampling_batch_gives_the_images_of_chunks_that_keep_it() -> None:
    s = d.make_schedule("cosine", T_SHORT)
    x, key_steps = d.initial_noise(key(8), (2, 4, 4, 1))
    runs = {
        donate: [
            np.asarray(x_t)
            for _, x_t in d.reverse_chunks(
                s, toy_eps, 0.5, x, key_steps, "ddpm", None, 40, donate=donate
            )
        ]  # fmt: skip
        for donate in (False, True)
    }
    assert len(runs[True]) == 3  # T_SHORT = 100 steps in chunks of 40
    for kept, donated in zip(runs[False], runs[True], strict=True):
        np.testing.assert_array_equal(kept, donated)
    assert not x.is_deleted()  # the caller's x_T is copied, never donated
