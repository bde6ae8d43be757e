"""Training: Adam, the released code's EMA schedule, P2 loss, checkpoints, resume, transfer
learning.

The paper trains every network the same way (sec. 4.1): L2 noise-prediction loss with P2
weighting, Adam (lr 1e-3, β 0.9/0.99), an exponential moving average (EMA) of the parameters with a
step-dependent rate, batch 128, 20 epochs. This module does exactly that with one jit-compiled train
step, and adds what a reader needs to run it on a laptop: checkpoints that survive a kill, a NaN
guard, a JSONL log and a progress bar. Where JAX sees several devices, every batch is split over
them (`qhd_lib.sharding`: data parallel, parameters copied); with one, nothing changes.

Reproducibility contract: the batch and the diffusion noise of step ``s`` are a pure function of
``(seed, stream, s)``, so a run resumed from a checkpoint is identical to one that never stopped
(also one stopped by a `qhd_lib.deadline.Deadline`, which it does only between logged blocks).

Epochs are counted in images seen, as the released config does: ``20 · 60 000 / 128 = 9 375``
steps exactly. Batches run through a stream of per-epoch permutations and may straddle an epoch
boundary (468.75 batches per epoch).

Neither torch nor PennyLane is imported here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from qhd_lib import diffusion, io, sharding
from qhd_lib.deadline import NO_DEADLINE, Deadline
from qhd_lib.errors import ConfigError, RunStateError

Params = Any
ApplyFn = Callable[[Params, jax.Array, jax.Array], jax.Array]

CHECKPOINT_FILE = "checkpoint.msgpack"
SAVE_ALLOWANCE_S = 1.0  # what a checkpoint is taken to cost before one has been timed
CONFIG_FILE = "train_config.json"
LOG_FILE = "train_log.jsonl"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN/Inf; the last good checkpoint is left untouched."""


# Parameter groups that training can keep at their initial values, by leaf name.
FROZEN_GROUPS: dict[str, tuple[str, ...]] = {"circuits": ("theta", "tail_theta")}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The paper's training protocol (sec. 4.1) with the released config's values as defaults.

    ``epochs`` may be fractional (demo runs); the number of optimiser steps is
    ``ceil(epochs · N / batch_size)``. ``stream`` selects an independent data/noise stream with the
    same seed (the fine-tuning phase of transfer learning uses ``stream=1``). ``frozen`` names
    parameter groups (`FROZEN_GROUPS`) that Adam never moves (a control: frozen circuits).
    """

    epochs: float = 20.0
    batch_size: int = 128
    learning_rate: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    seed: int = 42
    timesteps: int = 1000
    beta_schedule: str = "cosine"
    p2_gamma: float = 1.0
    p2_k: float = 1.0
    ema_update_after_step: int = 100
    ema_update_every: int = 10
    ema_inv_gamma: float = 1.0
    ema_power: float = 2.0 / 3.0
    ema_max_decay: float = 0.995
    checkpoint_every: int = 500
    log_every: int = 10
    stream: int = 0
    frozen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.frozen) - set(FROZEN_GROUPS)
        if unknown:
            raise ValueError(
                f"unknown frozen parameter group(s) {sorted(unknown)}; "
                f"use {', '.join(FROZEN_GROUPS)}"
            )
        if self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("checkpoint_every and log_every must be at least 1 step")

    def total_steps(self, n_images: int) -> int:
        """Optimiser steps for ``epochs`` passes over ``n_images`` (20 · 60 000 / 128 = 9 375)."""
        return steps_for_epochs(self.epochs, n_images, self.batch_size)


def steps_for_epochs(epochs: float, n_images: int, batch_size: int) -> int:
    """Steps needed to show ``epochs · n_images`` images in batches of ``batch_size``
    (rounded up)."""
    return max(1, math.ceil(round(epochs * n_images / batch_size, 9)))


# --------------------------------------------------------------------------------------------
# EMA of the parameters (released code's schedule)


def ema_decay(
    step: jax.Array | int,
    update_after_step: int = 100,
    inv_gamma: float = 1.0,
    power: float = 2.0 / 3.0,
    max_decay: float = 0.995,
) -> jax.Array:
    """EMA decay rate ``clip(1 - (1 + max(step - 101, 0)/inv_gamma)^-power, 0, 0.995)``.

    ``step`` is the 0-based index of the optimiser update just applied, as in the released code
    (not an equation of the paper, which only says "a rate that depends on the training step").
    The rate grows like ``1 - step^-2/3``: the average forgets quickly early on, when the
    parameters move fast, and settles at 0.995 (an average over ~200 updates) after ~2 800 steps.
    """
    count = jnp.maximum(jnp.asarray(step, jnp.float32) - update_after_step - 1, 0.0)
    value = 1.0 - (1.0 + count / inv_gamma) ** (-power)
    return jnp.clip(value, 0.0, max_decay)


def ema_keep_fraction(step: jax.Array | int, config: TrainConfig) -> jax.Array:
    """Fraction of the old EMA kept after update ``step`` (0-based): 0 = copy, 1 = unchanged.

    The released code copies the parameters for the first ``update_after_step`` (100) updates and
    afterwards mixes them in only every ``update_every`` (10) updates, with rate :func:`ema_decay`.
    """
    step = jnp.asarray(step)
    n_done = step + 1
    decay = ema_decay(
        step,
        config.ema_update_after_step,
        config.ema_inv_gamma,
        config.ema_power,
        config.ema_max_decay,
    )
    mixed = jnp.where(n_done % config.ema_update_every == 0, decay, 1.0)
    return jnp.where(n_done <= config.ema_update_after_step, 0.0, mixed)


def ema_update(ema_params: Params, params: Params, keep: jax.Array) -> Params:
    """``keep · ema + (1 - keep) · params``, leaf by leaf (keep = 0 copies exactly)."""
    return jax.tree_util.tree_map(lambda e, p: keep * e + (1.0 - keep) * p, ema_params, params)


# --------------------------------------------------------------------------------------------
# Optimiser, state and the jit-compiled step


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam with the paper's settings (lr 1e-3, β1 0.9, β2 0.99, eps 1e-8)
    {cite}`kingma2014adam`; leaves of the ``frozen`` groups get zero updates and no Adam state."""
    adam = optax.adam(config.learning_rate, b1=config.beta1, b2=config.beta2, eps=config.eps)
    if not config.frozen:
        return adam
    return optax.multi_transform(
        {"train": adam, "frozen": optax.set_to_zero()},
        lambda params: frozen_mask(params, config.frozen, labels=("train", "frozen")),
    )


def frozen_mask(
    params: Params, frozen: Iterable[str], labels: tuple[Any, Any] = (False, True)
) -> Params:
    """A tree like ``params`` with ``labels[1]`` on every leaf of a ``frozen`` group (by leaf
    name, `FROZEN_GROUPS`) and ``labels[0]`` elsewhere."""
    names = {name for group in frozen for name in FROZEN_GROUPS[group]}
    return jax.tree_util.tree_map_with_path(
        lambda path, _: labels[str(getattr(path[-1], "key", path[-1])) in names], params
    )


def trainable_count(params: Params, frozen: Iterable[str]) -> int:
    """Parameters that training moves: all but those of the ``frozen`` groups."""
    mask = frozen_mask(params, tuple(frozen))
    return int(
        sum(
            np.prod(np.shape(leaf))
            for leaf, is_frozen in zip(
                jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask), strict=True
            )
            if not is_frozen
        )
    )


class TrainState(NamedTuple):
    """Everything a resumed run needs: step count, parameters, their EMA and Adam's moments."""

    step: jax.Array
    params: Params
    ema_params: Params
    opt_state: optax.OptState


def make_apply_fn(model: nn.Module) -> ApplyFn:
    """``apply_fn(params, x_t, t) -> eps_hat`` as :func:`qhd_lib.diffusion.loss_fn` expects it."""

    def apply_fn(params: Params, x: jax.Array, t: jax.Array) -> jax.Array:
        return model.apply({"params": params}, x, t)

    return apply_fn


def init_params(model: nn.Module, seed: int, image_shape: tuple[int, ...] = (28, 28, 1)) -> Params:
    """Initialise ``model``'s parameters from ``seed`` (the same key every time; one
    compilation)."""
    x = jnp.zeros((1, *image_shape), jnp.float32)
    t = jnp.zeros((1,), jnp.int32)
    return _jitted_init(model)(_init_key(seed), x, t)["params"]


@functools.lru_cache(maxsize=16)
def _jitted_init(model: nn.Module) -> Callable[..., Any]:
    return jax.jit(model.init)


def init_state(params: Params, config: TrainConfig) -> TrainState:
    """A fresh state at step 0 with the EMA equal to ``params``."""
    return _init_state_jit(params, config)


@functools.partial(jax.jit, static_argnames="config")
def _init_state_jit(params: Params, config: TrainConfig) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=make_optimizer(config).init(params),
    )


def make_train_step(
    apply_fn: ApplyFn,
    schedule: diffusion.Schedule,
    config: TrainConfig,
    mesh: jax.sharding.Mesh | None = None,
    donate: bool = True,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, jax.Array]]:
    """One jit-compiled step: eq. 8 with P2 weighting (Sect. 4.1), its gradient, Adam, then EMA.

    With a ``mesh`` (`qhd_lib.sharding.batch_mesh`) the batch comes split over its devices and
    the state stays a copy on each: XLA sums the gradients across them. With ``donate`` the
    state passed in is donated (its buffers become the new state's: no second copy of
    parameters, EMA and Adam moments in device memory), so a caller must not use it afterwards.
    """
    optimizer = make_optimizer(config)

    def loss_of(params: Params, x0: jax.Array, key: jax.Array) -> jax.Array:
        return diffusion.loss_fn(schedule, apply_fn, params, x0, key, config.p2_gamma, config.p2_k)

    def train_step(
        state: TrainState, x0: jax.Array, key: jax.Array
    ) -> tuple[TrainState, jax.Array]:
        loss, grads = jax.value_and_grad(loss_of)(state.params, x0, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = ema_update(state.ema_params, params, ema_keep_fraction(state.step, config))
        return TrainState(state.step + 1, params, ema_params, opt_state), loss

    donated = (0,) if donate else ()
    if mesh is None:
        return jax.jit(train_step, donate_argnums=donated)
    copies, split = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    return jax.jit(
        train_step,
        in_shardings=(copies, split, copies),
        out_shardings=copies,
        donate_argnums=donated,
    )


# --------------------------------------------------------------------------------------------
# Data order and randomness: pure functions of (seed, stream, step)


def _init_key(seed: int) -> jax.Array:
    """The key that initialises the parameters of a run with ``seed``."""
    return jax.random.split(jax.random.key(seed))[0]


def step_key(seed: int, stream: int, step: int) -> jax.Array:
    """The diffusion key (timesteps t and noise ε) of step ``step``."""
    return _step_key_jit(jnp.int32(seed), jnp.int32(stream), jnp.int32(step))


@jax.jit
def _step_key_jit(seed: jax.Array, stream: jax.Array, step: jax.Array) -> jax.Array:
    train_root = jax.random.split(jax.random.key(seed))[1]
    return jax.random.fold_in(jax.random.fold_in(train_root, stream), step)


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, stream: int, epoch: int, n_images: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n_images`` training images."""
    return np.random.default_rng((seed, stream, epoch)).permutation(n_images)


def batch_indices(seed: int, stream: int, step: int, n_images: int, batch_size: int) -> np.ndarray:
    """Image indices of batch ``step``: images ``[step·B, (step+1)·B)`` of the epoch stream."""
    start, parts = step * batch_size, []
    remaining = batch_size
    while remaining:
        epoch, offset = divmod(start, n_images)
        take = min(remaining, n_images - offset)
        parts.append(epoch_permutation(seed, stream, epoch, n_images)[offset : offset + take])
        start, remaining = start + take, remaining - take
    return np.concatenate(parts)


# --------------------------------------------------------------------------------------------
# Checkpoints


MAX_LISTED_MISMATCHES = 8


def save_checkpoint(path: str | Path, state: TrainState) -> None:
    """Save the full training state (msgpack, atomic)."""
    io.write_bytes(path, flax.serialization.to_bytes(jax.device_get(state)))


def load_checkpoint(path: str | Path, template: TrainState) -> TrainState:
    """Load a state saved by :func:`save_checkpoint` into the structure of ``template``.

    A checkpoint of another model raises :class:`~qhd_lib.errors.RunStateError` naming the
    parameters that are missing, unexpected or of another shape.
    """
    saved = flax.serialization.msgpack_restore(Path(path).read_bytes())
    expected = flax.serialization.to_state_dict(template)
    problems = param_mismatches(saved.get("params"), expected["params"]) or param_mismatches(
        saved, expected
    )
    _refuse_mismatch(path, problems)
    restored = flax.serialization.from_state_dict(template, saved)
    return jax.tree_util.tree_map(jnp.asarray, restored)


def save_params(path: str | Path, params: Params) -> None:
    """Save a parameter tree (e.g. EMA parameters at an evaluation epoch), msgpack, atomic."""
    io.write_bytes(path, flax.serialization.msgpack_serialize(_to_numpy(params)))


def load_params(path: str | Path, template: Params | None = None) -> Params:
    """Load a parameter tree saved by :func:`save_params`.

    With ``template`` (the model's parameters, or their shapes from ``jax.eval_shape``) a file of
    another model raises :class:`~qhd_lib.errors.RunStateError` naming the mismatching paths,
    instead of failing later inside the model.
    """
    saved = flax.serialization.msgpack_restore(Path(path).read_bytes())
    if template is not None:
        _refuse_mismatch(path, param_mismatches(saved, flax.serialization.to_state_dict(template)))
    return saved


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """Shape of every leaf of a nested dict, keyed by its ``/``-joined path."""
    if not isinstance(tree, dict):
        return {} if tree is None else {"": tuple(np.shape(tree))}
    flat = flax.traverse_util.flatten_dict(tree, sep="/")
    return {path: tuple(np.shape(leaf)) for path, leaf in flat.items()}


def param_mismatches(saved: Any, expected: Any) -> list[str]:
    """Leaves missing from ``saved``, not in ``expected``, or of another shape, one line each
    (also used by `qhd_lib.pretrained` to check shipped parameters)."""
    have, want = _leaf_shapes(saved), _leaf_shapes(expected)
    missing = [f"{p}: not in the file, {want[p]} expected" for p in sorted(want.keys() - have)]
    extra = [f"{p}: {have[p]} in the file, not in the model" for p in sorted(have.keys() - want)]
    reshaped = [
        f"{p}: {have[p]} in the file, {want[p]} expected"
        for p in sorted(have.keys() & want.keys())
        if have[p] != want[p]
    ]
    return missing + extra + reshaped


def _refuse_mismatch(path: str | Path, problems: list[str]) -> None:
    """Raise :class:`RunStateError` listing ``problems`` (the first few) when there are any."""
    if not problems:
        return
    listed = problems[:MAX_LISTED_MISMATCHES]
    if len(problems) > len(listed):
        listed.append(f"and {len(problems) - len(listed)} more")
    raise RunStateError(
        f"{path} was saved from another model ({len(problems)} arrays differ: "
        + "; ".join(listed)
        + "); start a fresh --out directory, or use the model configuration the file was made with"
    )


def snapshot_path(run_dir: str | Path, step: int) -> Path:
    """Where :func:`train` keeps the EMA parameters reached after ``step`` steps."""
    return Path(run_dir) / f"ema_params_step{step:06d}.msgpack"


def _to_numpy(tree: Params) -> Params:
    return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


def _all_finite(tree: Params) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(tree))


# --------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the final state and how the run went."""

    state: TrainState
    total_steps: int
    resumed_from: int
    wall_s: float
    step_times_s: list[float]
    run_dir: Path | None
    devices: int

    @property
    def median_step_s(self) -> float | None:
        """Median time of a train step, the first (compiling) step excluded."""
        times = self.step_times_s[1:] if len(self.step_times_s) > 1 else self.step_times_s
        return float(np.median(times)) if times else None


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _check_resume_config(run_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume with different settings (only ``epochs`` may change, to extend a run)."""
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    current = json.loads(json.dumps(_config_dict(config)))  # tuples as JSON lists
    default = json.loads(json.dumps(_config_dict(TrainConfig())))  # fields added since
    diff = {
        k: (saved.get(k, default[k]), v)
        for k, v in current.items()
        if k != "epochs" and saved.get(k, default[k]) != v
    }
    if diff:
        raise ValueError(
            f"{run_dir} holds a run with different settings {diff} (saved, now); "
            "use a new run directory or the same settings to resume"
        )


def _truncate_log(log_path: Path, last_step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone)."""
    if not log_path.exists():
        return
    lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["step"] <= last_step]
    log_path.write_text("".join(ln + "\n" for ln in kept))


def train(
    model: nn.Module,
    images: np.ndarray,
    config: TrainConfig = TrainConfig(),
    run_dir: str | Path | None = None,
    *,
    init: Params | None = None,
    snapshot_steps: Iterable[int] = (),
    progress: bool = True,
    devices: Sequence[jax.Device] | None = None,
    deadline: Deadline = NO_DEADLINE,
    donate: bool = True,
) -> TrainResult:
    """Train ``model`` on ``images`` (float32 (N, 28, 28, 1) in [-1, 1]) following ``config``.

    With ``run_dir`` the state is checkpointed every ``config.checkpoint_every`` steps and at the
    end, a JSONL log (step, epoch, loss, loss of the EMA parameters, step time) is written, the
    EMA parameters are saved after each step in ``snapshot_steps``, and an existing checkpoint is
    resumed from. ``init`` replaces the random initial parameters (transfer learning).
    A NaN/Inf loss raises :class:`TrainingDiverged` and leaves the last good checkpoint in place.
    Each batch is split over ``devices`` (default: every device JAX sees; its size must divide
    by their number), the state copied onto each; the result does not depend on how many.
    Before a block of ``log_every`` steps that would run past ``deadline`` (judged by the last
    block), the state is checkpointed and :class:`~qhd_lib.deadline.DeadlineReached` raised.
    Steps are dispatched without waiting for the device: the losses are read back once per
    logged block (and before a save), which is also when a NaN/Inf is caught. ``donate`` lets
    each step reuse the last state's buffers (`make_train_step`); the numbers are the same.
    """
    if deadline.at is not None and run_dir is None:
        raise ConfigError("training to a deadline needs a run_dir to checkpoint into")
    images = np.asarray(images, np.float32)
    n_images = len(images)
    total = config.total_steps(n_images)
    mesh = sharding.batch_mesh(devices)
    sharding.check_divides(config.batch_size, mesh, "train.batch_size (--batch-size)")
    train_step, loss_of = _compiled_functions(model, _compile_key(config), mesh, donate)

    def fresh_state() -> TrainState:
        params = init if init is not None else init_params(model, config.seed, images.shape[1:])
        return init_state(params, config)

    run_path = Path(run_dir) if run_dir is not None else None
    ckpt = log_path = None
    if run_path is None or not (run_path / CHECKPOINT_FILE).exists():
        state = fresh_state()
    if run_path is not None:
        run_path.mkdir(parents=True, exist_ok=True)
        ckpt, log_path = run_path / CHECKPOINT_FILE, run_path / LOG_FILE
        if ckpt.exists():
            _check_resume_config(run_path, config)
            state = load_checkpoint(
                ckpt, jax.eval_shape(fresh_state)
            )  # shapes only: no init compile
            _truncate_log(log_path, int(state.step))
        else:
            io.write_json(run_path / CONFIG_FILE, _config_dict(config))
            log_path.write_text("")
    state = sharding.replicate(state, mesh)
    start = int(state.step)
    snapshots = {int(s) for s in snapshot_steps if 0 < int(s) <= total}

    bar = None
    if progress and start < total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, unit="step", desc="train", dynamic_ncols=True)

    step_times: list[float] = []
    losses: list[float] = []
    pending: list[jax.Array] = []  # losses still on the device: read back once per block
    if donate:  # the loop donates the state: never the caller's buffers (e.g. ``init``)
        state = jax.tree_util.tree_map(jnp.copy, state)
    t_start, block_start = time.perf_counter(), time.monotonic()
    read_at = time.perf_counter()
    save_s = SAVE_ALLOWANCE_S
    log_file = open(log_path, "a") if log_path is not None else None
    try:
        for step in range(start, total):
            idx = batch_indices(config.seed, config.stream, step, n_images, config.batch_size)
            x0 = sharding.shard_batch(images[idx], mesh)
            key = step_key(config.seed, config.stream, step)
            state, loss = train_step(state, x0, key)
            pending.append(loss)
            done = step + 1
            due_log = done % config.log_every == 0 or done == total
            due_save = run_path is not None and (
                done in snapshots or done % config.checkpoint_every == 0
            )
            if step == start or due_log or due_save:  # the first (compiling) step alone
                read = _read_losses(pending, done, ckpt)
                now = time.perf_counter()
                step_times += [(now - read_at) / len(read)] * len(read)
                losses, pending, read_at = losses + read, [], now
                if bar is not None:
                    bar.set_postfix(loss=f"{read[-1]:.4f}", refresh=False)
            if log_file is not None and due_log:
                ema_loss = float(loss_of(state.ema_params, x0, key))
                row = {
                    "step": done,
                    "epoch": done * config.batch_size / n_images,
                    "loss": float(np.mean(losses)),
                    "ema_params_loss": ema_loss,
                    "step_time_s": float(np.mean(step_times[-len(losses) :])),
                }
                log_file.write(json.dumps(row) + "\n")
                log_file.flush()
            if due_log:
                losses = []
            if run_path is not None:
                if done in snapshots:
                    save_params(snapshot_path(run_path, done), state.ema_params)
                if done % config.checkpoint_every == 0 or done == total:
                    save_s = _save_finite(ckpt, state, done)
                if done % config.log_every == 0 and done < total:
                    block_s, block_start = time.monotonic() - block_start, time.monotonic()
                    need = block_s + save_s  # the next block, then its checkpoint
                    if not deadline.allows(need):
                        if done % config.checkpoint_every:
                            _save_finite(ckpt, state, done)
                        deadline.check(need, f"training at step {done} of {total}")
            if bar is not None:
                bar.update(1)
    finally:
        if log_file is not None:
            log_file.close()
        if bar is not None:
            bar.close()
    wall_s = time.perf_counter() - t_start
    return TrainResult(
        state, total, start, wall_s, step_times, run_path, sharding.device_count(mesh)
    )


def _read_losses(pending: list[jax.Array], done: int, ckpt: Path | None) -> list[float]:
    """The losses of the steps up to ``done``, read back from the device in one transfer (the
    loop's only wait for the device between blocks); a NaN/Inf among them raises
    :class:`TrainingDiverged` naming its step, before anything is logged or saved."""
    values = [float(v) for v in np.asarray(jax.device_get(pending)).reshape(-1)]
    for offset, loss in enumerate(values):
        if not math.isfinite(loss):
            where = (
                f"the last good checkpoint {ckpt} (step {_saved_step(ckpt)})"
                if ckpt
                else "no checkpoint"
            )
            raise TrainingDiverged(
                f"loss is {loss} at step {done - len(values) + offset + 1}; kept {where}. Try a "
                "lower learning rate (TrainConfig.learning_rate) and check the data: "
                "images must be finite and in [-1, 1]."
            )
    return values


def _save_finite(ckpt: Path, state: TrainState, done: int) -> float:
    """Checkpoint ``state`` unless its parameters are not finite; returns the seconds it took."""
    if not _all_finite(state.params):
        raise TrainingDiverged(
            f"parameters are not finite at step {done}; "
            f"kept the last good checkpoint {ckpt}. "
            "Try a lower learning rate and check the data."
        )
    t0 = time.monotonic()
    save_checkpoint(ckpt, state)
    return time.monotonic() - t0


def _compile_key(config: TrainConfig) -> TrainConfig:
    """``config`` with the fields that do not change the compiled step set to fixed values."""
    return dataclasses.replace(
        config, epochs=1.0, checkpoint_every=1, log_every=1, seed=0, stream=0
    )


@functools.lru_cache(maxsize=8)
def _compiled_functions(
    model: nn.Module,
    config: TrainConfig,
    mesh: jax.sharding.Mesh | None = None,
    donate: bool = True,
) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jit-compiled train step and loss of ``model`` (cached: resumes and reruns reuse them),
    the step split over ``mesh``'s devices when there is one, donating its state if ``donate``."""
    apply_fn = make_apply_fn(model)
    schedule = diffusion.make_schedule(config.beta_schedule, config.timesteps)

    @jax.jit
    def loss_of(params: Params, x0: jax.Array, key: jax.Array) -> jax.Array:
        return diffusion.loss_fn(schedule, apply_fn, params, x0, key, config.p2_gamma, config.p2_k)

    return make_train_step(apply_fn, schedule, config, mesh, donate), loss_of


def _saved_step(ckpt: Path | None) -> int | str:
    """The step stored in a checkpoint file, read without a template."""
    if ckpt is None or not ckpt.exists():
        return "none yet"
    return int(flax.serialization.msgpack_restore(ckpt.read_bytes())["step"])


# --------------------------------------------------------------------------------------------
# Transfer learning (sec. 3.3, fig. 9)


def transfer_params(
    source: Params, target: Params, is_fresh: Callable[[tuple[str, ...]], bool]
) -> tuple[Params, list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Copy every parameter of ``source`` into ``target`` except those where ``is_fresh(path)``.

    Sec. 3.3: "the weights obtained [by the classical U-Net] are then transferred to the QVU-Net,
    except for the weights at the vertex". ``target`` supplies the fresh (newly initialised)
    values and the tree structure. Returns (new params, copied paths, fresh paths); a non-fresh
    parameter missing from ``source`` or of another shape is an error.
    """
    src = {path: leaf for path, leaf in _flatten(source)}
    copied: list[tuple[str, ...]] = []
    fresh: list[tuple[str, ...]] = []
    out: dict[tuple[str, ...], Any] = {}
    for path, leaf in _flatten(target):
        if is_fresh(path):
            fresh.append(path)
            out[path] = leaf
            continue
        if path not in src:
            raise ValueError(
                f"parameter {'/'.join(path)} of the target is not in the source "
                "and not marked fresh; source and target must share every non-vertex layer"
            )
        if np.shape(src[path]) != np.shape(leaf):
            raise ValueError(
                f"parameter {'/'.join(path)} has shape {np.shape(src[path])} in the source and "
                f"{np.shape(leaf)} in the target; mark it fresh or use matching models"
            )
        copied.append(path)
        out[path] = jnp.asarray(src[path])
    return _unflatten(out), copied, fresh


def _flatten(tree: Params) -> list[tuple[tuple[str, ...], Any]]:
    flat = flax.traverse_util.flatten_dict(dict(tree))
    return list(flat.items())


def _unflatten(flat: dict[tuple[str, ...], Any]) -> Params:
    return flax.traverse_util.unflatten_dict(flat)
