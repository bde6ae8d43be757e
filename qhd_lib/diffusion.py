"""Denoising diffusion (DDPM) in pure JAX: schedules, eq. 1-8 of the paper, P2 loss, samplers.

Time steps are **0-indexed**, ``t in [0, T)``, as in the paper's released code (derived from
*denoising-diffusion-flax*): index ``t`` is the paper's step ``t + 1``. So ``q_sample(s, x0, 0,
eps)`` is the paper's ``x_1`` (one step of noise), ``s.alphas_cumprod[t]`` is the paper's
``alpha_bar_{t+1}`` and ``s.alphas_cumprod_prev[t]`` the paper's ``alpha_bar_t`` (with
``alpha_bar_0 = 1``). The reverse step at index ``t`` goes from ``x_{t+1}`` to ``x_t`` (paper
numbering); at ``t = 0`` it returns the clean image estimate with no added noise.

Nothing here imports PennyLane or torch; every function is jit-able and batched over images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qhd_lib import sharding

ApplyFn = Callable[..., jax.Array]
"""``apply_fn(params, x_t, t) -> eps_hat``: x float32 (B, H, W, C), t int32 (B,)."""

SCHEDULES: tuple[str, ...] = ("cosine", "linear")
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")


class Schedule(NamedTuple):
    """Every per-step constant of a DDPM, precomputed once (float64 maths, stored float32).

    A NamedTuple of arrays, hence a JAX pytree: pass it to jit-compiled functions as an argument.
    All arrays have shape (T,) and are indexed by the 0-based time step t (see the module doc).
    """

    betas: jax.Array
    alphas: jax.Array
    alphas_cumprod: jax.Array
    alphas_cumprod_prev: jax.Array
    sqrt_alphas_cumprod: jax.Array
    sqrt_one_minus_alphas_cumprod: jax.Array
    sqrt_recip_alphas_cumprod: jax.Array
    sqrt_recipm1_alphas_cumprod: jax.Array
    snr: jax.Array
    posterior_variance: jax.Array
    posterior_log_variance_clipped: jax.Array
    posterior_mean_coef1: jax.Array
    posterior_mean_coef2: jax.Array

    @property
    def timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return int(self.betas.shape[0])


def _check_positive_timesteps(timesteps: int) -> None:
    if (
        isinstance(timesteps, bool)
        or not isinstance(timesteps, (int, np.integer))
        or timesteps <= 0
    ):
        raise ValueError(
            f"timesteps must be a positive integer (the number of diffusion steps T), got "
            f"{timesteps!r}; the paper uses T = 1000"
        )


def linear_betas(timesteps: int) -> np.ndarray:
    """Linear beta schedule of Ho et al. (2020), rescaled by 1000/T so any T spans the same noise.

    beta runs from 1e-4 * 1000/T to 0.02 * 1000/T (as in denoising-diffusion-flax/lucidrains).
    """
    _check_positive_timesteps(timesteps)
    scale = 1000.0 / timesteps
    return np.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=np.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021): alpha_bar(t) = cos^2((t/T + s)/(1 + s) pi/2).

    Betas are ``1 - alpha_bar_t / alpha_bar_{t-1}`` clipped to ``max_beta`` (the last one would
    be 1), as in denoising-diffusion-flax and lucidrains' denoising-diffusion-pytorch.
    """
    _check_positive_timesteps(timesteps)
    u = np.linspace(0.0, 1.0, timesteps + 1, dtype=np.float64)
    alpha_bar = np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, max_beta)


def make_schedule(name: str = "cosine", timesteps: int = 1000) -> Schedule:
    """Build the :class:`Schedule` for ``name`` ("cosine", the paper's, or "linear") and T steps.

    The closed-form constants of eq. 4 (alpha_bar), eq. 7 and of the posterior
    q(x_{t-1} | x_t, x_0) are computed in float64 and stored as float32 arrays.
    """
    _check_positive_timesteps(timesteps)
    if name == "cosine":
        betas = cosine_betas(timesteps)
    elif name == "linear":
        betas = linear_betas(timesteps)
    else:
        raise ValueError(f"unknown beta schedule {name!r}; use one of {', '.join(SCHEDULES)}")
    alphas = 1.0 - betas
    alphas_cumprod = np.cumprod(alphas)
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    arrays = dict(
        betas=betas,
        alphas=alphas,
        alphas_cumprod=alphas_cumprod,
        alphas_cumprod_prev=alphas_cumprod_prev,
        sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
        sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
        sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
        sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
        snr=alphas_cumprod / (1.0 - alphas_cumprod),
        posterior_variance=posterior_variance,
        posterior_log_variance_clipped=np.log(np.maximum(posterior_variance, 1e-20)),
        posterior_mean_coef1=betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
        posterior_mean_coef2=(1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
    )
    return Schedule(**{k: jnp.asarray(v, dtype=jnp.float32) for k, v in arrays.items()})


def check_timesteps(schedule: Schedule, t: jax.Array | int) -> None:
    """Raise a ValueError if a concrete ``t`` is not an integer in [0, T); no-op while tracing.

    Inside ``jax.jit`` the values of ``t`` are unknown, so the check only runs eagerly.
    """
    if isinstance(t, jax.core.Tracer):
        return
    t_np = np.asarray(t)
    if not np.issubdtype(t_np.dtype, np.integer):
        raise ValueError(
            f"time steps must be integers in [0, {schedule.timesteps}), got dtype {t_np.dtype}; "
            "pass an int32 array"
        )
    if t_np.size and (t_np.min() < 0 or t_np.max() >= schedule.timesteps):
        raise ValueError(
            f"time step out of range: got values in [{t_np.min()}, {t_np.max()}], "
            f"but t must lie in [0, {schedule.timesteps}) "
            "(0-indexed: t = 0 is the first noising step, "
            f"t = T - 1 = {schedule.timesteps - 1} the last)"
        )


def _at(values: jax.Array, t: jax.Array | int, x: jax.Array) -> jax.Array:
    """``values[t]`` shaped to broadcast against ``x`` (t scalar or with x's leading dims)."""
    v = values[jnp.asarray(t)]
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def q_step(
    schedule: Schedule, x_prev: jax.Array, t: jax.Array | int, noise: jax.Array
) -> jax.Array:
    """One forward step (eq. 1): ``x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps_t``.

    ``t`` is 0-indexed: ``t = 0`` maps the clean image to the paper's ``x_1``.
    """
    check_timesteps(schedule, t)
    beta = _at(schedule.betas, t, x_prev)
    return jnp.sqrt(1.0 - beta) * x_prev + jnp.sqrt(beta) * noise


def q_sample(schedule: Schedule, x0: jax.Array, t: jax.Array | int, noise: jax.Array) -> jax.Array:
    """Jump straight to step t (eq. 4): ``x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps``.

    Same distribution as ``t + 1`` applications of :func:`q_step` (eq. 1); ``t`` is 0-indexed.
    """
    check_timesteps(schedule, t)
    return (
        _at(schedule.sqrt_alphas_cumprod, t, x0) * x0
        + _at(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * noise
    )


def predict_x0_from_noise(
    schedule: Schedule, x_t: jax.Array, t: jax.Array | int, eps: jax.Array
) -> jax.Array:
    """Invert eq. 4 for x_0: ``x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``."""
    check_timesteps(schedule, t)
    return (
        _at(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t
        - _at(schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
    )


def predict_noise_from_x0(
    schedule: Schedule, x_t: jax.Array, t: jax.Array | int, x0: jax.Array
) -> jax.Array:
    """Invert eq. 4 for the noise:
    ``eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)``."""
    check_timesteps(schedule, t)
    return (_at(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / _at(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t
    )


def q_posterior(
    schedule: Schedule, x0: jax.Array, x_t: jax.Array, t: jax.Array | int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and clipped log-variance of the Gaussian posterior q(x_{t-1} | x_t, x_0).

    mean = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) x_0
           + (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) x_t,
    variance = beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)  (Ho et al. 2020, eq. 7).
    At the 0-indexed ``t = 0`` the mean is x_0 itself and the variance 0 (log clipped at 1e-20).
    """
    check_timesteps(schedule, t)
    mean = (
        _at(schedule.posterior_mean_coef1, t, x_t) * x0
        + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    )
    variance = jnp.broadcast_to(_at(schedule.posterior_variance, t, x_t), x_t.shape)
    log_variance = jnp.broadcast_to(_at(schedule.posterior_log_variance_clipped, t, x_t), x_t.shape)
    return mean, variance, log_variance


def model_mean(schedule: Schedule, x_t: jax.Array, t: jax.Array | int, eps: jax.Array) -> jax.Array:
    """Mean of p_theta(x_{t-1} | x_t) from a noise prediction (eq. 7).

    ``mu = (x_t - (1 - alpha_t) / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)``; equals the posterior
    mean of :func:`q_posterior` at ``x_0 = predict_x0_from_noise(x_t, t, eps)`` (no clipping).
    """
    check_timesteps(schedule, t)
    beta = _at(schedule.betas, t, x_t)
    return (x_t - beta / _at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / jnp.sqrt(
        1.0 - beta
    )


def p2_weight(
    schedule: Schedule, t: jax.Array | int, gamma: float = 1.0, k: float = 1.0
) -> jax.Array:
    """P2 loss weight (Choi et al. 2022): ``(k + SNR_t)^-gamma`` with
    ``SNR_t = alpha_bar_t / (1 - alpha_bar_t)``.

    The paper's runs use gamma = 1, k = 1, i.e. weight ``1 - alpha_bar_t``; gamma = 0 gives eq. 8
    unweighted. Quirk of the released code: it reads k from the gamma setting (``p2_loss_weight_k
    = config.p2_loss_weight_gamma``); both are 1 there, so it changes nothing in the reported runs.
    Here they are two separate settings.
    """
    check_timesteps(schedule, t)
    return (k + schedule.snr[jnp.asarray(t)]) ** -gamma


def loss_fn(
    schedule: Schedule,
    apply_fn: ApplyFn,
    params: object,
    x0: jax.Array,
    key: jax.Array,
    p2_gamma: float = 1.0,
    p2_k: float = 1.0,
) -> jax.Array:
    """Noise-prediction loss, eq. 8 with the P2 weighting of Sect. 4.1: the batch mean of
    ``w_t * mean((eps_hat - eps)^2)``.

    For each image t ~ U{0, ..., T-1} (0-indexed) and eps ~ N(0, I); x_t comes from eq. 4 and
    ``eps_hat = apply_fn(params, x_t, t)``. The squared error is averaged over pixels, weighted by
    :func:`p2_weight` (gamma = 1, k = 1 in the paper) and averaged over the batch, as in the
    released code. ``p2_gamma = 0`` gives the plain eq. 8.
    """
    key_t, key_noise = jax.random.split(key)
    t = jax.random.randint(key_t, (x0.shape[0],), 0, schedule.timesteps, dtype=jnp.int32)
    noise = jax.random.normal(key_noise, x0.shape, dtype=x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    eps_hat = apply_fn(params, x_t, t)
    per_image = jnp.mean((eps_hat - noise).reshape(x0.shape[0], -1) ** 2, axis=1)
    return jnp.mean(p2_weight(schedule, t, p2_gamma, p2_k) * per_image)


def ddpm_step(
    schedule: Schedule,
    apply_fn: ApplyFn,
    params: object,
    x_t: jax.Array,
    t: jax.Array | int,
    key: jax.Array,
) -> jax.Array:
    """One ancestral step of the paper's sampler, x_t -> x_{t-1}, for a scalar 0-indexed ``t``.

    The x_0 estimate (eq. 4 inverted with the predicted noise) is clipped to [-1, 1], then
    x_{t-1} = posterior mean (:func:`q_posterior`) + sqrt(beta~_t) z with z drawn from
    ``fold_in(key, t)``; no noise at ``t = 0``. Without clipping the mean is eq. 7.
    """
    t_batch = jnp.full((x_t.shape[0],), t, dtype=jnp.int32)
    eps = apply_fn(params, x_t, t_batch)
    x0 = jnp.clip(predict_x0_from_noise(schedule, x_t, t_batch, eps), -1.0, 1.0)
    mean, _, log_variance = q_posterior(schedule, x0, x_t, t_batch)
    noise = jax.random.normal(jax.random.fold_in(key, t), x_t.shape, dtype=x_t.dtype)
    return mean + jnp.where(jnp.asarray(t) > 0, jnp.exp(0.5 * log_variance), 0.0) * noise


def ddim_step(
    schedule: Schedule,
    apply_fn: ApplyFn,
    params: object,
    x_t: jax.Array,
    t: jax.Array | int,
    t_prev: jax.Array | int,
) -> jax.Array:
    """One deterministic DDIM step (Song et al. 2021, eta = 0) from step t to an earlier t_prev.

    ``t_prev = -1`` means the clean image (alpha_bar = 1). Not the paper's sampler: a faster
    option for playing with a trained model.
    """
    t_batch = jnp.full((x_t.shape[0],), t, dtype=jnp.int32)
    eps = apply_fn(params, x_t, t_batch)
    x0 = jnp.clip(predict_x0_from_noise(schedule, x_t, t_batch, eps), -1.0, 1.0)
    eps = predict_noise_from_x0(schedule, x_t, t_batch, x0)
    t_prev = jnp.asarray(t_prev)
    alpha_bar_prev = jnp.where(t_prev >= 0, schedule.alphas_cumprod[jnp.maximum(t_prev, 0)], 1.0)
    return jnp.sqrt(alpha_bar_prev) * x0 + jnp.sqrt(1.0 - alpha_bar_prev) * eps


def _run_chunk(
    schedule: Schedule,
    params: object,
    x: jax.Array,
    key: jax.Array,
    ts: jax.Array,
    ts_prev: jax.Array,
    apply_fn: ApplyFn,
    method: str,
) -> jax.Array:
    """Run the reverse steps ``ts`` (descending) with ``lax.scan``; jit-compiled below."""

    def body(x: jax.Array, step: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        t, t_prev = step
        if method == "ddpm":
            return ddpm_step(schedule, apply_fn, params, x, t, key), None
        return ddim_step(schedule, apply_fn, params, x, t, t_prev), None

    x, _ = jax.lax.scan(body, x, (ts, ts_prev))
    return x


_run_chunk_jit = jax.jit(_run_chunk, static_argnames=("apply_fn", "method"))
# The same with ``x`` donated: each chunk writes x_{t-chunk} into x_t's buffer, so a batch of
# 7 000 images holds one copy of its x in device memory instead of two.
_run_chunk_donating = jax.jit(
    _run_chunk, static_argnames=("apply_fn", "method"), donate_argnames="x"
)


def sampling_timesteps(
    schedule: Schedule, method: str = "ddpm", steps: int | None = None
) -> np.ndarray:
    """The descending time steps a sampler visits: all T for DDPM, ``steps`` evenly spaced for
    DDIM."""
    T = schedule.timesteps
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; use one of {', '.join(SAMPLERS)}")
    if method == "ddpm":
        if steps not in (None, T):
            raise ValueError(
                f"the DDPM sampler visits all T = {T} steps, got steps={steps}; "
                "leave steps=None or use method='ddim' for fewer steps"
            )
        return np.arange(T - 1, -1, -1, dtype=np.int32)
    steps = 50 if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"DDIM steps must be an integer in [1, {T}], got {steps!r}")
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(np.int32))[::-1].copy()


def sample(
    schedule: Schedule,
    apply_fn: ApplyFn,
    params: object,
    key: jax.Array,
    shape: tuple[int, ...],
    progress: bool = True,
    method: Literal["ddpm", "ddim"] = "ddpm",
    steps: int | None = None,
    chunk: int = 100,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """Draw ``shape[0]`` images in [-1, 1] by running the reverse process from x_T ~ N(0, I)
    (eq. 5).

    ``method="ddpm"`` (default) is the paper's protocol: ancestral sampling over all T steps with
    the x_0 estimate clipped to [-1, 1], the posterior mean of :func:`q_posterior` and variance
    beta~_t, and no noise added at the last step. ``method="ddim"`` runs deterministic DDIM
    (Song et al. 2021, eta = 0) on ``steps`` (default 50) evenly spaced steps: faster, handy for
    playing, **not** the paper's protocol.

    Steps run in jit-compiled ``lax.scan`` chunks of ``chunk`` steps; a tqdm bar advances between
    chunks when ``progress`` is true. Results do not depend on ``chunk`` (step t draws its noise
    from ``fold_in(key, t)``). ``apply_fn`` is a static argument of the compiled chunk: pass the
    same function object (e.g. ``model.apply`` wrapped once) to avoid recompiling.

    With a ``mesh`` (`qhd_lib.sharding.batch_mesh`) the images are split over its devices and
    the parameters copied onto each; the images are those of one device, to float rounding.
    """
    x_T, key_steps = initial_noise(key, shape)
    x, done = x_T, 0
    n_steps = len(sampling_timesteps(schedule, method, steps))
    with tqdm(total=n_steps, desc=f"{method} sampling", disable=not progress, leave=False) as bar:
        for done_now, x in reverse_chunks(
            schedule, apply_fn, params, x_T, key_steps, method, steps, chunk, mesh=mesh
        ):
            if progress:
                x.block_until_ready()
            bar.update(done_now - done)
            done = done_now
    return jnp.clip(x, -1.0, 1.0)


def initial_noise(key: jax.Array, shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    """x_T ~ N(0, I) of shape ``shape`` drawn from ``key``, and the key of the reverse steps."""
    key_init, key_steps = jax.random.split(key)
    return jax.random.normal(key_init, shape, dtype=jnp.float32), key_steps


def reverse_chunks(
    schedule: Schedule,
    apply_fn: ApplyFn,
    params: object,
    x: jax.Array,
    key_steps: jax.Array,
    method: str = "ddpm",
    steps: int | None = None,
    chunk: int = 100,
    *,
    first: int = 0,
    mesh: jax.sharding.Mesh | None = None,
    donate: bool = True,
) -> Iterator[tuple[int, jax.Array]]:
    """The reverse process from ``x`` after ``first`` of its steps, one compiled ``lax.scan``
    of ``chunk`` steps at a time: yields ``(steps done, x)`` after each chunk (unclipped).

    Chunks start at multiples of ``chunk``, so a process stopped after a chunk and resumed from
    its ``x`` with ``first`` = the steps done runs exactly the same computations as one that
    never stopped. With a ``mesh`` the images are split over its devices. Nothing waits for the
    device: chunks are dispatched back to back. With ``donate`` (the same numbers, one buffer
    less) each chunk reuses the buffer of the ``x`` yielded before it, so use a yielded ``x``
    before asking for the next (``x`` itself, the caller's, is never donated).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive number of steps, got {chunk!r}")
    ts = sampling_timesteps(schedule, method, steps)
    if first % chunk or not 0 <= first <= len(ts):
        raise ValueError(
            f"a resumed reverse process starts at a multiple of chunk = {chunk} steps within "
            f"the {len(ts)} steps, got {first}"
        )
    ts_prev = np.append(ts[1:], -1).astype(np.int32)
    if mesh is not None:
        x, params = sharding.shard_batch(x, mesh), sharding.replicate(params, mesh)
    run_chunk = _run_chunk_donating if donate else _run_chunk_jit
    if donate:
        x = jnp.copy(x)
    for start in range(first, len(ts), chunk):
        sl = slice(start, start + chunk)
        x = run_chunk(
            schedule,
            params,
            x,
            key_steps,
            jnp.asarray(ts[sl]),
            jnp.asarray(ts_prev[sl]),
            apply_fn=apply_fn,
            method=method,
        )
        yield start + len(ts[sl]), x
