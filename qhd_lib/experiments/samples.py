"""Samples: drawn from EMA parameters in batches (resumable in chunks), saved as uint8, gridded.

The noise of batch ``i`` depends only on the sampling seed and ``i`` (:func:`sampling_key`), so
every evaluation epoch of a run — and every model of one seed — starts from the same noise, and
images drawn in chunks equal images drawn at once. Every batch is split over the devices JAX
sees (`qhd_lib.sharding`; nothing changes with one). :func:`sample_from_run` draws from a finished
run's parameters into a file (`qhd_lib.experiments.scoring` scores it, possibly elsewhere).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from qhd_lib import diffusion, io, models, provenance, sharding, train
from qhd_lib.deadline import NO_DEADLINE, Deadline
from qhd_lib.errors import ConfigError, RunStateError
from qhd_lib.experiments.config import RunConfig
from qhd_lib.experiments.overrides import config_from_dict, override
from qhd_lib.experiments.records import RUN_FILE, TRAIN_DIR, read_run

IMAGE_SHAPE = (28, 28, 1)
STEPS_PER_CHUNK = 100  # reverse steps per compiled scan: the unit a deadline stops between
PARTIAL_FILE = "partial.npz"  # a sample chunk stopped by a deadline, in its chunk folder


def sampling_key(seed: int, batch_index: int) -> jax.Array:
    """Key of sample batch ``batch_index``: the same noise at every evaluation epoch of a run,
    so differences between epochs come from the network, not from the draw."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x5A3), batch_index)


_APPLY_FNS: dict[Any, train.ApplyFn] = {}


def _apply_fn(model: Any) -> train.ApplyFn:
    """One apply function per model, so the compiled sampler is reused."""
    if model not in _APPLY_FNS:
        _APPLY_FNS[model] = train.make_apply_fn(model)
    return _APPLY_FNS[model]


def draw_samples(
    model: Any,
    params: train.Params,
    n: int,
    *,
    timesteps: int,
    seed: int,
    batch: int,
    sampler: str = "ddpm",
    steps: int | None = None,
    beta_schedule: str = "cosine",
    first_batch: int = 0,
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    partial: Path | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> np.ndarray:
    """``n`` images in [-1, 1], in batches numbered from ``first_batch``: ancestral DDPM over all
    ``timesteps`` steps (the paper), or DDIM over ``steps`` (faster, for demos). Each batch is
    split over ``devices`` (default: all JAX sees), so ``batch`` and ``n`` must divide by their
    number.

    Before a chunk of `STEPS_PER_CHUNK` reverse steps that would run past ``deadline`` (judged by
    the last chunk), the finished batches and the current one's ``x_t`` are saved to ``partial``
    and :class:`~qhd_lib.deadline.DeadlineReached` is raised; the same call resumes from that file
    to the images of a call that never stopped.
    """
    if deadline.at is not None and partial is None:
        raise ConfigError("sampling to a deadline needs a partial file to save into")
    schedule = diffusion.make_schedule(beta_schedule, timesteps)
    n_steps = len(diffusion.sampling_timesteps(schedule, sampler, steps))
    mesh = sharding.batch_mesh(devices)
    sharding.check_divides(batch, mesh, "sampling.batch (--sample-batch)")
    sharding.check_divides(n, mesh, "the number of samples (evaluation.samples, --samples)")
    call = np.asarray([first_batch, n, batch])
    finished, resume = _read_partial(partial, call)
    out = [finished]
    for i, start in enumerate(range(0, n, batch), start=first_batch):
        if start < len(finished):
            continue
        x, key_steps = diffusion.initial_noise(
            sampling_key(seed, i), (min(batch, n - start), *IMAGE_SHAPE)
        )
        first = 0
        if resume is not None:  # the batch that a deadline stopped
            first, x, resume = int(resume["done"]), resume["x"], None
        t0 = time.monotonic()
        with tqdm(
            total=n_steps, initial=first, desc=f"{sampler} sampling", disable=not progress,
            leave=False,
        ) as bar:  # fmt: skip
            for done, x_t in diffusion.reverse_chunks(
                schedule, _apply_fn(model), params, x, key_steps, sampler, steps,
                STEPS_PER_CHUNK, first=first, mesh=mesh,
            ):  # fmt: skip
                bar.update(done - bar.n)
                if deadline.at is not None:  # time the chunk itself, not its dispatch
                    x_t.block_until_ready()
                chunk_s, t0 = time.monotonic() - t0, time.monotonic()
                need = chunk_s + train.SAVE_ALLOWANCE_S
                if done < n_steps and not deadline.allows(need):
                    _write_partial(partial, call, np.concatenate(out), done, x_t)
                    deadline.check(need, f"sampling at step {done} of {n_steps}, batch {i}")
        out.append(np.asarray(jnp.clip(x_t, -1.0, 1.0)))
    if partial is not None:
        partial.unlink(missing_ok=True)
    return np.concatenate(out)


MEMORY_FRACTION = 0.5  # of a device's memory that a sampling batch's images may take
PROBE_BATCHES = (8, 16)  # two batches whose compiled memory gives the cost of one more image


def batch_for_memory(n: int, bytes_per_image: float, memory_bytes: float, devices: int = 1) -> int:
    """The largest batch that cuts ``n`` samples into equal batches, splits evenly over
    ``devices``, and whose images take at most `MEMORY_FRACTION` of each device's
    ``memory_bytes``: 7 000 samples in as few compiled batches as memory allows."""
    if n % devices:
        raise ConfigError(
            f"{n} samples do not split over {devices} devices; use a multiple of {devices} "
            "(evaluation.samples) or make fewer devices visible (CUDA_VISIBLE_DEVICES)"
        )
    room = MEMORY_FRACTION * memory_bytes / max(bytes_per_image, 1.0)
    fits = [b for b in range(devices, n + 1, devices) if n % b == 0 and b / devices <= room]
    if not fits:
        raise ConfigError(
            f"not even {devices} of the {n} samples fit in {memory_bytes / 2**30:.1f} GiB at "
            f"{bytes_per_image / 2**20:.1f} MiB an image; set sampling.batch (--sample-batch) "
            "yourself or use a device with more memory"
        )
    return max(fits)


def sampling_bytes_per_image(model: Any) -> float:
    """Device memory one more image costs in a reverse step: the slope of XLA's planned memory
    (arguments, outputs, temporaries) of the network's forward pass between `PROBE_BATCHES`.
    Compiled from shapes alone: no parameters are made."""
    x1 = jax.ShapeDtypeStruct((1, *IMAGE_SHAPE), jnp.float32)
    t1 = jax.ShapeDtypeStruct((1,), jnp.int32)
    params = jax.eval_shape(lambda *a: model.init(*a)["params"], jax.random.key(0), x1, t1)
    planned = []
    for b in PROBE_BATCHES:
        x = jax.ShapeDtypeStruct((b, *IMAGE_SHAPE), jnp.float32)
        t = jax.ShapeDtypeStruct((b,), jnp.int32)
        m = jax.jit(_apply_fn(model)).lower(params, x, t).compile().memory_analysis()
        planned.append(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    (b0, b1), (m0, m1) = PROBE_BATCHES, planned
    return max((m1 - m0) / (b1 - b0), 1.0)


def device_memory_bytes() -> int | None:
    """Memory of the first device JAX sees, where it says (a GPU), else None (a CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def _write_partial(
    partial: Path, call: np.ndarray, finished: np.ndarray, done: int, x: jax.Array
) -> None:
    """Save a stopped :func:`draw_samples` call: its finished images and the batch in progress."""
    buffer = BytesIO()
    np.savez(buffer, call=call, finished=finished, done=done, x=np.asarray(x))
    io.write_bytes(partial, buffer.getvalue())


def _read_partial(
    partial: Path | None, call: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """The finished images and the batch in progress that ``partial`` holds for ``call`` (first
    batch, n, batch size); none of either when it holds another call's or does not exist."""
    nothing = np.zeros((0, *IMAGE_SHAPE), np.float32)
    if partial is None or not partial.exists():
        return nothing, None
    with np.load(partial) as saved:
        found = {k: saved[k] for k in saved.files}
    if not np.array_equal(found["call"], call):
        return nothing, None
    return found["finished"], found


def draw_for_run(
    model: Any,
    params: train.Params,
    config: RunConfig,
    n: int,
    chunk_dir: Path | None = None,
    progress: bool = True,
    deadline: Deadline = NO_DEADLINE,
) -> np.ndarray:
    """A run's ``n`` samples as uint8 (N, 28, 28), its sampler and seed; with
    ``config.sampling.chunk`` each chunk is saved under ``chunk_dir`` as it is finished and
    reused on the next call, so a killed evaluation resumes where it stopped. With a
    ``deadline`` (which needs ``chunk_dir``; chunks default to one batch) a chunk that would
    run past it is saved at a step and the next call resumes it there (:func:`draw_samples`)."""
    s = config.sampling
    chunk = s.chunk or (s.batch if deadline.at is not None else None)

    def draw(count: int, first_batch: int) -> np.ndarray:
        images = draw_samples(
            model,
            params,
            count,
            timesteps=config.diffusion.timesteps,
            seed=config.sampling_seed,
            batch=s.batch,
            sampler=s.sampler,
            steps=s.steps,
            beta_schedule=config.diffusion.beta_schedule,
            first_batch=first_batch,
            progress=progress,
            partial=None if chunk_dir is None else chunk_dir / PARTIAL_FILE,
            deadline=deadline,
        )
        return io.to_uint8(images)

    if chunk is None or chunk_dir is None:
        return draw(n, 0)
    parts = []
    for c in range(math.ceil(n / chunk)):
        path = chunk_dir / f"chunk{c:05d}.npz"
        if not path.exists():
            start = c * chunk
            io.save_images(path, draw(min(chunk, n - start), start // s.batch))
        parts.append(io.load_images(path))
    return np.concatenate(parts)


def save_grid(path: str | Path, images: np.ndarray, title: str, n: int = 64) -> Path:
    """A PNG grid of the first ``n`` samples, 16 a row (a bare `Figure`: no pyplot, no backend
    switch, so a notebook's plotting backend stays as it was; matplotlib is imported here, as a
    machine that only trains and samples may lack it)."""
    from matplotlib.figure import Figure

    pixels = io.to_uint8(images)[:n]
    ncols = min(16, len(pixels))
    nrows = math.ceil(len(pixels) / ncols)
    framed = np.pad(pixels, ((0, nrows * ncols - len(pixels)), (1, 1), (1, 1)), constant_values=128)
    h, w = framed.shape[1:]
    mosaic = framed.reshape(nrows, ncols, h, w).transpose(0, 2, 1, 3).reshape(nrows * h, ncols * w)
    fig = Figure(figsize=(0.6 * ncols, 0.6 * nrows + 0.4))
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    buffer = BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return io.write_bytes(path, buffer.getvalue())


def sample_from_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    epoch: float | None = None,
    samples: int | None = None,
    seed: int | None = None,
    batch: int | None = None,
    progress: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Draw samples from a run's EMA parameters at an evaluation epoch into a ``.npz``
    (default: the last epoch, the run's number of samples, seed and batch)."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    if record is None or "train" not in record:
        raise RunStateError(
            f"{run_dir} has no trained run ({RUN_FILE} missing or training "
            "unfinished); finish it with its `run` command first"
        )
    config = config_from_dict(record["config"])
    snapshots = {float(k): v for k, v in record["train"]["snapshots"].items()}
    epoch = max(snapshots) if epoch is None else float(epoch)
    if epoch not in snapshots:
        raise RunStateError(
            f"no parameters saved at epoch {epoch:g}; available: "
            f"{', '.join(f'{e:g}' for e in sorted(snapshots))}"
        )
    wanted = {"samples": samples, "batch": batch}
    bad = {k: v for k, v in wanted.items() if v is not None and v < 1}
    if bad or (seed is not None and seed < 0):
        raise ConfigError(
            f"samples and batch must be positive, seed 0 or more; got {bad or {'seed': seed}}"
        )
    model = models.make_model(config.model.architecture, released_code=config.model.released_code)
    params = train.load_params(train.snapshot_path(run_dir / TRAIN_DIR, snapshots[epoch]))
    n = config.evaluation.samples if samples is None else samples
    changes: dict[str, Any] = {
        "sampling.batch": config.sampling.batch if batch is None else batch,
        "sampling.chunk": None,
    }
    if seed is not None:  # the sampling seed: the second phase's for a transfer run
        changes["train.transfer.seed" if config.train.transfer else "seed"] = seed
    config = override(config, changes)
    t = time.perf_counter()
    with jax.default_matmul_precision(config.matmul_precision):
        images = draw_for_run(model, params, config, n, progress=progress)
    path = io.save_images(out, images)
    info = {
        "samples_file": str(path),
        "run": str(run_dir),
        "epoch": epoch,
        "n_samples": n,
        "sampling_seed": config.sampling_seed,
        "sampling_wall_s": time.perf_counter() - t,
        "provenance": provenance.record(
            command or "(called from Python)", seed=config.sampling_seed
        )
        | {"matmul_precision": config.matmul_precision},
    }
    io.write_json(path.with_suffix(".json"), info)
    return info
