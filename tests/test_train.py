"""Tests of qhd_lib.train with a tiny flax model (fast; the real U-Nets are tested in
test_models)."""

from __future__ import annotations

import contextlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib import train as tr
from qhd_lib.errors import RunStateError


class TinyNet(nn.Module):
    """A noise predictor small enough to train in milliseconds, with a 'vertex' to transfer
    around."""

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        temb = nn.Dense(4, name="time")(jnp.asarray(t, jnp.float32)[:, None] / 1000.0)
        h = nn.Conv(4, (3, 3), name="enc")(x) + temb[:, None, None, :]
        h = nn.Dense(4, name="vertex")(nn.gelu(h))
        return nn.Conv(1, (3, 3), name="dec")(h)


def tiny_images(n: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (n, 8, 8, 1)).astype(np.float32)


def tiny_config(**overrides: object) -> tr.TrainConfig:
    base = dict(epochs=2.0, batch_size=8, timesteps=50, checkpoint_every=4, log_every=2, seed=3)
    base.update(overrides)
    return tr.TrainConfig(**base)


def test_twenty_epochs_of_mnist_are_9375_steps() -> None:
    assert tr.TrainConfig().total_steps(60_000) == 9_375
    assert tr.steps_for_epochs(1, 60_000, 128) == 469  # 468.75 rounded up
    assert tr.steps_for_epochs(0.5, 100, 10) == 5


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),
        (101, 0.0),
        (102, 1 - 2 ** (-2 / 3)),
        (108, 0.75),
        (127, 8 / 9),
        (164, 15 / 16),
        (10_000, 0.995),
    ],
)
def test_ema_decay_matches_released_formula_at_known_steps(step: int, expected: float) -> None:
    # 1 - (1 + max(step - 101, 0))^(-2/3): step 108 -> 1 - 8^(-2/3) = 0.75, capped at 0.995.
    assert float(tr.ema_decay(step)) == pytest.approx(expected, abs=1e-6)


def test_ema_copies_for_100_updates_then_mixes_every_10th() -> None:
    config = tr.TrainConfig()
    keep = np.asarray(tr.ema_keep_fraction(jnp.arange(200), config))
    assert np.all(keep[:100] == 0.0)  # updates 1..100 copy the parameters
    mixing = np.flatnonzero(keep[100:] != 1.0) + 100
    assert list(mixing[:3]) == [109, 119, 129]  # the 110th, 120th, 130th update
    assert keep[109] == pytest.approx(1 - 9 ** (-2 / 3))  # first mix: decay 0.769


def test_ema_update_with_keep_zero_copies_exactly() -> None:
    ema = {"w": jnp.array([1.0, 2.0])}
    params = {"w": jnp.array([0.1234567, -3.0])}
    assert np.array_equal(tr.ema_update(ema, params, jnp.float32(0.0))["w"], params["w"])
    assert np.array_equal(tr.ema_update(ema, params, jnp.float32(1.0))["w"], ema["w"])


def test_batches_visit_every_image_once_per_epoch_and_depend_only_on_seed_and_step() -> None:
    n, b = 10, 4
    stream = np.concatenate([tr.batch_indices(7, 0, s, n, b) for s in range(5)])  # 20 = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert not np.array_equal(stream[:10], stream[10:])  # a fresh permutation each epoch
    assert np.array_equal(tr.batch_indices(7, 0, 3, n, b), stream[12:16])
    assert not np.array_equal(tr.batch_indices(8, 0, 3, n, b), stream[12:16])


def test_training_lowers_the_loss_and_ema_equals_params_early() -> None:
    images, config = tiny_images(), tiny_config(epochs=8.0)
    result = tr.train(TinyNet(), images, config, progress=False)
    assert result.total_steps == 48
    assert int(result.state.step) == 48
    # fewer than 100 updates: the EMA is an exact copy of the parameters
    leaves = zip(
        jax.tree_util.tree_leaves(result.state.ema_params),
        jax.tree_util.tree_leaves(result.state.params),
    )
    assert all(np.array_equal(e, p) for e, p in leaves)
    _, loss_of = tr._compiled_functions(TinyNet(), tr._compile_key(config))
    x0 = jnp.asarray(images)
    keys = [jax.random.key(i) for i in range(8)]
    mean_loss = lambda params: np.mean([float(loss_of(params, x0, k)) for k in keys])  # noqa: E731
    assert mean_loss(result.state.params) < mean_loss(
        tr.init_params(TinyNet(), config.seed, (8, 8, 1))
    )


@contextlib.contextmanager
def killed_at_step(monkeypatch, step: int):
    """Inside the block, training is killed (KeyboardInterrupt) when it reaches ``step``; the block
    must end in that kill."""
    original = tr.batch_indices

    def kill(seed, stream, s, n, b):
        if s == step:
            raise KeyboardInterrupt("simulated kill")
        return original(seed, stream, s, n, b)

    monkeypatch.setattr(tr, "batch_indices", kill)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(tr, "batch_indices", original)


def test_resume_after_kill_gives_the_uninterrupted_result(tmp_path, monkeypatch) -> None:
    images, config = tiny_images(), tiny_config()  # 12 steps, checkpoints at 4, 8, 12
    full = tr.train(TinyNet(), images, config, tmp_path / "full", progress=False)

    with killed_at_step(monkeypatch, 6):
        tr.train(TinyNet(), images, config, tmp_path / "killed", progress=False)
    assert int(tr.load_checkpoint(tmp_path / "killed" / tr.CHECKPOINT_FILE, full.state).step) == 4

    resumed = tr.train(TinyNet(), images, config, tmp_path / "killed", progress=False)
    assert resumed.resumed_from == 4
    for a, b in zip(
        jax.tree_util.tree_leaves(full.state), jax.tree_util.tree_leaves(resumed.state)
    ):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)
    log_full = (tmp_path / "full" / tr.LOG_FILE).read_text().splitlines()
    log_resumed = (tmp_path / "killed" / tr.LOG_FILE).read_text().splitlines()
    steps = [json.loads(r)["step"] for r in log_resumed]
    assert steps == [2, 4, 6, 8, 10, 12]  # no duplicated steps after the resume
    for a, b in zip(log_full, log_resumed):
        assert json.loads(a)["loss"] == pytest.approx(json.loads(b)["loss"], abs=1e-6)


def test_finished_run_is_not_retrained(tmp_path) -> None:
    images, config = tiny_images(), tiny_config()
    tr.train(TinyNet(), images, config, tmp_path, progress=False)
    again = tr.train(TinyNet(), images, config, tmp_path, progress=False)
    assert again.resumed_from == again.total_steps and again.step_times_s == []


def test_resume_refuses_different_settings(tmp_path) -> None:
    images = tiny_images()
    tr.train(TinyNet(), images, tiny_config(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different settings"):
        tr.train(TinyNet(), images, tiny_config(learning_rate=0.5), tmp_path, progress=False)


def test_nan_loss_stops_with_advice_and_keeps_last_good_checkpoint(tmp_path) -> None:
    images, config = tiny_images(), tiny_config()
    tr.train(
        TinyNet(), images, tiny_config(epochs=2 / 3), tmp_path, progress=False
    )  # 4 steps, 1 checkpoint
    ckpt = tmp_path / tr.CHECKPOINT_FILE
    good_bytes = ckpt.read_bytes()
    poisoned = images.copy()
    poisoned[:, 0, 0, 0] = np.nan  # every batch now has a NaN pixel
    with pytest.raises(tr.TrainingDiverged, match="lower learning rate") as err:
        tr.train(TinyNet(), poisoned, config, tmp_path, progress=False)
    assert "step 5" in str(err.value) and "step 4" in str(err.value)
    assert ckpt.read_bytes() == good_bytes
    assert not list(tmp_path.glob("*.tmp"))


def test_snapshots_hold_the_ema_params_at_requested_steps(tmp_path) -> None:
    result = tr.train(
        TinyNet(), tiny_images(), tiny_config(), tmp_path, snapshot_steps=[6, 12], progress=False
    )
    assert tr.snapshot_path(tmp_path, 6).exists()
    final = tr.load_params(tr.snapshot_path(tmp_path, 12))
    for a, b in zip(
        jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(result.state.ema_params)
    ):
        assert np.array_equal(a, b)


def test_transfer_copies_everything_but_the_vertex() -> None:
    source = tr.init_params(TinyNet(), 0, (8, 8, 1))
    target = tr.init_params(TinyNet(), 1, (8, 8, 1))
    merged, copied, fresh = tr.transfer_params(source, target, lambda path: path[0] == "vertex")
    assert {p[0] for p in fresh} == {"vertex"} and "vertex" not in {p[0] for p in copied}
    for name in ("time", "enc", "dec"):
        for leaf in ("kernel", "bias"):
            assert np.array_equal(merged[name][leaf], source[name][leaf])
    assert np.array_equal(merged["vertex"]["kernel"], target["vertex"]["kernel"])
    assert not np.array_equal(merged["vertex"]["kernel"], source["vertex"]["kernel"])


def test_transfer_rejects_mismatched_non_vertex_layers() -> None:
    source = {"enc": {"kernel": jnp.zeros((3, 3))}}
    target = {"enc": {"kernel": jnp.zeros((3, 4))}}
    with pytest.raises(ValueError, match="shape"):
        tr.transfer_params(source, target, lambda path: False)


def test_training_imports_neither_torch_nor_pennylane() -> None:
    import subprocess
    import sys

    code = (
        "import sys, qhd_lib.train, qhd_lib.experiments; "
        "print(sorted(m for m in ('torch', 'pennylane') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class ChangedNet(nn.Module):
    """TinyNet after a configuration change: no time embedding, a wider vertex, one more layer."""

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        h = nn.Conv(4, (3, 3), name="enc")(x)
        h = nn.Dense(6, name="vertex")(nn.gelu(h))
        h = nn.Dense(6, name="extra")(h)
        return nn.Conv(1, (3, 3), name="dec")(h)


def test_resuming_a_checkpoint_of_another_model_names_the_mismatching_parameters(tmp_path) -> None:
    images, config = tiny_images(), tiny_config(epochs=2 / 3)
    tr.train(TinyNet(), images, config, tmp_path, progress=False)
    with pytest.raises(RunStateError) as err:
        tr.train(ChangedNet(), images, tiny_config(), tmp_path, progress=False)
    message = str(err.value)
    assert "vertex/kernel: (4, 4) in the file, (4, 6) expected" in message
    assert "extra/kernel: not in the file, (6, 6) expected" in message
    assert "time/kernel: (1, 4) in the file, not in the model" in message
    assert "fresh --out directory" in message


def test_parameters_loaded_against_another_model_name_the_mismatching_paths(tmp_path) -> None:
    params = tr.init_params(TinyNet(), 0, (8, 8, 1))
    tr.save_params(tmp_path / "p.msgpack", params)
    loaded = tr.load_params(tmp_path / "p.msgpack", template=params)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
    other = jax.eval_shape(lambda: tr.init_params(ChangedNet(), 0, (8, 8, 1)))
    expected = r"dec/kernel: \(3, 3, 4, 1\) in the file, \(3, 3, 6, 1\) expected"
    with pytest.raises(RunStateError, match=expected):
        tr.load_params(tmp_path / "p.msgpack", template=other)


def test_donating_the_state_gives_the_numbers_of_a_step_that_keeps_it(tmp_path) -> None:
    images, config = tiny_images(), tiny_config()
    kept = tr.train(TinyNet(), images, config, tmp_path / "kept", progress=False, donate=False)
    donated = tr.train(TinyNet(), images, config, tmp_path / "donated", progress=False)
    leaves = [jax.tree_util.tree_leaves(r.state) for r in (kept, donated)]
    assert all(np.array_equal(a, b) for a, b in zip(*leaves, strict=True))
    logs = [(tmp_path / d / tr.LOG_FILE).read_text().splitlines() for d in ("kept", "donated")]
    losses = [[json.loads(row)["loss"] for row in log] for log in logs]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_training_never_donates_the_parameters_it_was_given() -> None:
    init = tr.init_params(TinyNet(), 3, (8, 8, 1))
    tr.train(TinyNet(), tiny_images(), tiny_config(epochs=1 / 3), init=init, progress=False)
    assert not any(leaf.is_deleted() for leaf in jax.tree_util.tree_leaves(init))


def test_steps_wait_for_the_device_only_once_per_logged_block(monkeypatch) -> None:
    reads: list[int] = []
    original = tr._read_losses

    def counted(pending, done, ckpt):
        reads.append(len(pending))
        return original(pending, done, ckpt)

    monkeypatch.setattr(tr, "_read_losses", counted)
    result = tr.train(TinyNet(), tiny_images(), tiny_config(log_every=4), progress=False)
    assert reads == [1, 3, 4, 4]  # the compiling step alone, then one read per block of 4
    assert len(result.step_times_s) == result.total_steps == 12
