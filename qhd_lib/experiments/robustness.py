"""Finite shots and hardware noise on a trained hybrid: its denoising loss and its samples.

:func:`study` evaluates one trained network under several circuit executors
(`qhd_lib.models.quantum`), one factor at a time:

- ``exact``: exact expectation values, what every run of the book trains and samples with;
- ``shots=S``: each ⟨Z⟩ estimated from S shots (`qhd_lib.circuits.shots`), noise-free;
- ``depolarizing=p``: exact expectations with depolarising noise of probability p on both qubits
  after every two-qubit gate (`qhd_lib.circuits.noise`), no shots;
- ``readout=ε``: exact expectations with a symmetric readout error ε, which scales every ⟨Z⟩ by
  ``1 − 2ε``; ε = 0.5 sets every circuit output to 0 — the circuits erased, the scale against
  which the other settings' changes are read.

At every setting it measures the denoising loss on the first ``n_test`` test images (the noise
settings on the first ``n_test_noisy`` of them, if fewer: their exact backward pass costs about
15 s per HQConv circuit call on a 2-core CPU whatever the batch, 52 calls per FullHQConv forward
pass, so they run `NOISY_CHUNK` images a call); each image gets the
same t and ε at every setting, so a setting's per-image differences from ``exact`` are paired and
get a t-interval over images. At the settings named in ``sample_settings`` it draws
``n_samples`` DDIM samples from the same initial noise and scores them with FID/KID against the
first ``n_real`` training images (the epoch-1 protocol's evaluation). Each finished setting is
saved in ``work_dir`` and reused, so an interrupted study resumes where it stopped; the noise
settings are saved every `NOISY_CHUNK` images, and a larger ``n_test_noisy`` later only computes
the images not yet done.

    python -m qhd_lib.experiments robustness --dataset mnist --model fullhqconv \\
        --out results/quantum/mnist_fullhqconv_shots_noise
"""

from __future__ import annotations

import dataclasses
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from qhd_lib import data, diffusion, io, models, pretrained, provenance
from qhd_lib.errors import ConfigError
from qhd_lib.experiments import samples as sampling
from qhd_lib.experiments.scoring import measure

SHOTS = (10, 100, 1_000, 10_000)
DEPOLARIZING = (1e-3, 1e-2)
READOUT = (1e-2, 0.5)  # a typical hardware readout error, and the circuits' outputs erased
SAMPLE_SHOTS = (10, 100, 1_000)  # where samples are drawn: the noisiest three
RESULT_FILE = "study.json"
CONFIDENCE = 0.95
NOISY_CHUNK = 250  # images per call and per saved piece of a noise setting's losses
EXTENDABLE = ("n_test_noisy",)  # fields a work dir's cache stays valid for when they change


@dataclasses.dataclass(frozen=True)
class Setting:
    """One way of running the circuits: a label, the executor spec, and the factor it varies."""

    label: str
    executor: str
    factor: str  # "exact", "shots", "depolarizing" or "readout"
    value: float | None


def settings(shot_seed: int = 0) -> tuple[Setting, ...]:
    """Exact, then every shot count (noise-free), every depolarising p and every readout error ε
    (both shot-free)."""
    return (
        Setting("exact", "jax", "exact", None),
        *(Setting(f"shots={s}", f"shots={s},seed={shot_seed}", "shots", s) for s in SHOTS),
        *(
            Setting(f"depolarizing={p:g}", f"depolarizing={p:g}", "depolarizing", p)
            for p in DEPOLARIZING
        ),
        *(Setting(f"readout={e:g}", f"readout={e:g}", "readout", e) for e in READOUT),
    )


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What the study measures and how much of it (defaults: the book's run)."""

    dataset: str = "mnist"
    model: str = "fullhqconv"
    n_test: int = 500
    n_test_noisy: int | None = None  # the first of the n_test for the noise settings (None: all)
    n_samples: int = 500
    n_real: int = 1_000
    sample_settings: tuple[str, ...] = (
        "exact",
        *(f"shots={s}" for s in SAMPLE_SHOTS),
        "readout=0.5",  # the circuits erased: what the samples owe them
    )
    seed: int = 42  # test-image t and ε, sampling noise, metrics
    shot_seed: int = 0
    timesteps: int = 1_000
    ddim_steps: int = 100
    batch: int = 250
    metrics: bool = True

    def __post_init__(self) -> None:
        labels = {s.label for s in settings(self.shot_seed)}
        unknown = [s for s in self.sample_settings if s not in labels]
        if unknown:
            raise ConfigError(
                f"sample_settings {unknown} are not settings of the study; use some of "
                f"{', '.join(sorted(labels))}"
            )
        for name in ("n_test", "n_test_noisy", "n_samples", "batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_test_noisy is not None and self.n_test_noisy > self.n_test:
            raise ConfigError(
                f"n_test_noisy ({self.n_test_noisy}) counts the first of the n_test "
                f"({self.n_test}) test images: make it at most n_test"
            )


def test_batch(config: StudyConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The first ``n_test`` test images in model range, with one t and one ε per image (fixed
    by ``config.seed``; the same at every setting)."""
    images, _ = data.load(config.dataset, "test")
    x0 = jnp.asarray(data.to_model_range(images[: config.n_test]))
    key_t, key_noise = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 0x5E7))
    t = jax.random.randint(key_t, (len(x0),), 0, config.timesteps, dtype=jnp.int32)
    noise = jax.random.normal(key_noise, x0.shape, dtype=x0.dtype)
    return x0, t, noise


def image_errors(model: Any, schedule: diffusion.Schedule) -> Any:
    """``errors(params, x0, t, noise)`` → each image's mean squared noise error, jitted once, so
    that a setting computed in pieces compiles once."""

    @jax.jit
    def errors(p: Any, x0_b: jax.Array, t_b: jax.Array, noise_b: jax.Array) -> jax.Array:
        x_t = diffusion.q_sample(schedule, x0_b, t_b, noise_b)
        eps_hat = model.apply({"params": p}, x_t, t_b)
        return jnp.mean((eps_hat - noise_b).reshape(len(x0_b), -1) ** 2, axis=1)

    return errors


def per_image_losses(
    errors: Any,
    params: Any,
    schedule: diffusion.Schedule,
    x0: jax.Array,
    t: jax.Array,
    noise: jax.Array,
    batch: int,
) -> dict[str, np.ndarray]:
    """Each image's mean squared noise error (`image_errors`), unweighted (``mse``) and with the
    training's P2 weight (``p2``: γ = 1, k = 1)."""
    mse = np.concatenate(
        [
            np.asarray(errors(params, x0[i : i + batch], t[i : i + batch], noise[i : i + batch]))
            for i in range(0, len(x0), batch)
        ]
    )
    weight = np.asarray(diffusion.p2_weight(schedule, t))
    return {"mse": mse, "p2": weight * mse}


def paired_difference(values: np.ndarray, exact: np.ndarray) -> dict[str, Any]:
    """Mean of ``values − exact`` over images with its t-interval (images paired by t and ε);
    ``values`` may cover only the first of ``exact``'s images (``exact_mean``: theirs)."""
    exact = np.asarray(exact, float)[: len(values)]
    diffs = np.asarray(values, float) - exact
    out: dict[str, Any] = {
        "n": len(diffs),
        "mean": float(diffs.mean()),
        "exact_mean": float(exact.mean()),
    }
    if len(diffs) < 2 or not diffs.std() > 0:
        return {**out, "interval": [out["mean"], out["mean"]], "p_value": None}
    test = stats.ttest_1samp(diffs, 0.0)
    lo, hi = test.confidence_interval(CONFIDENCE)
    return {**out, "interval": [float(lo), float(hi)], "p_value": float(test.pvalue)}


def _loss_summary(losses: dict[str, np.ndarray], exact: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        kind: {
            "mean": float(values.mean()),
            "sem": float(stats.sem(values)) if len(values) > 1 else None,
            "minus_exact": paired_difference(values, exact[kind]),
        }
        for kind, values in losses.items()
    }


def study(
    config: StudyConfig,
    out: str | Path,
    work_dir: str | Path | None = None,
    *,
    params: Any = None,
    progress: bool = True,
    command: str | None = None,
    allow_dirty: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the study and write ``out/study.json`` with the sample files and a grid.

    ``params``: the trained network (default: the shipped pretrained ``config.model`` for
    ``config.dataset``). Per-setting results are cached in ``work_dir`` (default: under the
    user cache), which must belong to this config: a changed config needs another folder.
    """
    found = provenance.check_clean_for(Path(out) / RESULT_FILE, allow_dirty)
    started = time.perf_counter()
    source = "argument"
    if params is None:
        params = pretrained.load(config.dataset, config.model)
        source = pretrained.entry(config.dataset, config.model).run
    out = Path(out)
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(config)
    _claim(work_dir, config)
    schedule = diffusion.make_schedule("cosine", config.timesteps)
    x0, t, noise = test_batch(config)
    rows = []
    exact: dict[str, np.ndarray] | None = None
    todo = settings(config.shot_seed)
    for setting in tqdm(todo, desc="settings", disable=not progress):
        model = models.make_model(config.model, executor=setting.executor)
        noisy = setting.factor == "depolarizing"
        errors = image_errors(model, schedule)
        losses, loss_wall_s = _cached_losses(
            work_dir / f"loss_{setting.label}.npz",
            lambda lo, hi, e=errors: per_image_losses(
                e, params, schedule, x0[lo:hi], t[lo:hi], noise[lo:hi], config.batch
            ),
            (config.n_test_noisy or config.n_test) if noisy else config.n_test,
            NOISY_CHUNK if noisy else config.n_test,
            f"loss at {setting.label}" if noisy and progress else None,
        )
        exact = exact or losses
        row: dict[str, Any] = {
            **dataclasses.asdict(setting),
            "n_test": len(losses["p2"]),
            "loss": _loss_summary(losses, exact),
            "loss_wall_s": loss_wall_s,
        }
        if setting.label in config.sample_settings:
            row["samples"] = _samples(config, setting, model, params, out, work_dir, progress)
        rows.append(row)
    grid = _grid(config, out)
    result = {
        "description": (
            "The trained network under finite shots and depolarising noise, one factor at a time: "
            "denoising loss on test images (paired by image, t and ε) and FID/KID of DDIM samples "
            "(paired by initial noise). Shot estimates are per-qubit binomials (correlations "
            "between a circuit's estimates not modelled); noise is exact (each observable run "
            "backwards through the noisy circuit)."
        ),
        "config": dataclasses.asdict(config),
        "parameters": source,
        "test_images": {"split": "test", "first": config.n_test, "t": "uniform"},
        "sampler": {"name": "ddim", "steps": config.ddim_steps, "seed": config.seed},
        "settings": rows,
        "grid": grid.name,
        "provenance": provenance.record(
            command or "(called from Python)",
            seed=config.seed,
            wall_s=time.perf_counter() - started,
            allow_dirty=allow_dirty,
            found=found,
        ),
    }
    io.write_json(out / RESULT_FILE, result)
    return result


def _cached_losses(
    path: Path,
    compute: Any,
    n: int,
    chunk: int,
    progress: str | None,
) -> tuple[dict[str, np.ndarray], float]:
    """The per-image losses of the first ``n`` test images, from ``path`` where it holds them,
    else computed ``chunk`` images at a time by ``compute(lo, hi)`` and saved after each chunk
    (an interruption loses at most one chunk). Returns them and the compute time spent so far."""
    done: dict[str, np.ndarray] = {"mse": np.zeros(0, np.float32), "p2": np.zeros(0, np.float32)}
    wall_s = 0.0
    if path.exists():
        with np.load(path) as saved:
            done = {k: saved[k] for k in done}
            wall_s = float(saved["wall_s"])
    with tqdm(
        total=n, initial=min(len(done["p2"]), n), desc=progress, disable=progress is None
    ) as bar:
        while len(done["p2"]) < n:
            lo = len(done["p2"])
            t0 = time.perf_counter()
            new = compute(lo, lo + chunk)
            wall_s += time.perf_counter() - t0
            done = {k: np.concatenate([done[k], new[k]]) for k in done}
            buffer = BytesIO()
            np.savez(buffer, wall_s=wall_s, **done)
            io.write_bytes(path, buffer.getvalue())
            bar.update(min(len(done["p2"]), n) - lo)
    return {k: v[:n] for k, v in done.items()}, wall_s


def default_work_dir(config: StudyConfig) -> Path:
    """Where a study keeps its finished settings until it is done: the user cache."""
    import platformdirs

    return (
        Path(platformdirs.user_cache_dir("qhd-book"))
        / "runs"
        / "robustness"
        / f"{config.dataset}_{config.model}"
    )


def _claim(work_dir: Path, config: StudyConfig) -> None:
    """Record ``config`` in ``work_dir``, or refuse a folder that another config's results fill."""
    stamp = work_dir / "config.json"
    fields = dataclasses.asdict(config)
    wanted = io.as_json({k: v for k, v in fields.items() if k not in EXTENDABLE})
    if stamp.exists() and io.read_json(stamp) != wanted:
        raise ConfigError(
            f"{work_dir} holds a study with another configuration ({stamp}); pass another "
            "--work-dir, or delete that folder to start again"
        )
    io.write_json(stamp, wanted)


def _samples(
    config: StudyConfig,
    setting: Setting,
    model: Any,
    params: Any,
    out: Path,
    work_dir: Path,
    progress: bool,
) -> dict[str, Any]:
    """Draw (or reuse) the setting's samples, save them into ``out``, score them."""
    images_file = work_dir / f"samples_{setting.label}.npz"
    wall_file = work_dir / f"samples_{setting.label}_wall.json"
    if not images_file.exists():
        t0 = time.perf_counter()
        images = sampling.draw_samples(
            model,
            params,
            config.n_samples,
            timesteps=config.timesteps,
            seed=config.seed,
            batch=min(config.batch, config.n_samples),
            sampler="ddim",
            steps=config.ddim_steps,
            progress=progress,
            devices=jax.devices()[:1],
        )
        io.write_json(wall_file, {"wall_s": time.perf_counter() - t0})
        io.save_images(images_file, images)
    images = io.load_images(images_file)
    published = io.save_images(out / f"samples_{setting.label}.npz", images)
    entry: dict[str, Any] = {
        "file": published.name,
        "n": len(images),
        "wall_s": io.read_json(wall_file)["wall_s"],
        "metrics": None,
    }
    if config.metrics:
        metrics_file = work_dir / f"metrics_{setting.label}.json"
        if not metrics_file.exists():
            io.write_json(
                metrics_file,
                measure(images, config.dataset, config.n_real, config.seed, "train", progress),
            )
        entry["metrics"] = io.read_json(metrics_file)
    return entry


def _grid(config: StudyConfig, out: Path, n: int = 16) -> Path:
    """One row of the first ``n`` samples per sampled setting (the same initial noise in every
    row, so the rows differ only by the executor)."""
    rows = [io.load_images(out / f"samples_{label}.npz")[:n] for label in config.sample_settings]
    return sampling.save_grid(
        out / "samples.png",
        np.concatenate(rows),
        "rows: " + ", ".join(config.sample_settings) + " (same initial noise)",
        n=n * len(rows),
    )
