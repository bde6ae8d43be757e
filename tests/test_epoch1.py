"""The epoch-1 experiment's pieces: frozen circuits, the classical-vertex control, the fixed
protocol and plan, and publishing a finished run without its checkpoints."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib import experiments as ex
from qhd_lib import models
from qhd_lib import train as tr
from qhd_lib.errors import ConfigError, ProvenanceError, RunStateError
from qhd_lib.experiments import plans, publish
from tests.test_experiments import tiny_world  # noqa: F401  (autouse: tiny model, stub metrics)
from tests.test_train import tiny_config, tiny_images


class TinyQuantumNet(nn.Module):
    """A tiny noise predictor with a 'circuit' (leaves named theta and tail_theta)."""

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        theta = self.param("theta", nn.initializers.uniform(1.0), (4,))
        tail = self.param("tail_theta", nn.initializers.uniform(1.0), (2,))
        h = nn.Conv(4, (3, 3), name="enc")(x) + jnp.asarray(t, jnp.float32)[:, None, None, None]
        h = jnp.cos(h * theta) + jnp.sin(tail[0] * h) * tail[1]
        return nn.Conv(1, (3, 3), name="dec")(h)


def test_frozen_circuits_keep_their_initial_values_and_the_rest_trains(tmp_path) -> None:
    model = TinyQuantumNet()
    config = tiny_config(frozen=("circuits",))
    initial = tr.init_params(model, config.seed, (8, 8, 1))
    result = tr.train(model, tiny_images(), config, tmp_path / "run", progress=False)
    for params in (result.state.params, result.state.ema_params):
        for name in ("theta", "tail_theta"):
            np.testing.assert_array_equal(params[name], initial[name])
        assert not np.allclose(params["enc"]["kernel"], initial["enc"]["kernel"])
    assert tr.trainable_count(initial, ("circuits",)) == models.count_params(initial) - 6


def test_without_a_mask_the_circuits_train(tmp_path) -> None:
    model = TinyQuantumNet()
    config = tiny_config()
    initial = tr.init_params(model, config.seed, (8, 8, 1))
    result = tr.train(model, tiny_images(), config, progress=False)
    assert not np.allclose(result.state.params["theta"], initial["theta"])
    assert tr.trainable_count(initial, ()) == models.count_params(initial)


def test_a_frozen_run_resumes_with_its_mask(tmp_path, monkeypatch) -> None:
    from tests.test_train import killed_at_step

    model, images = TinyQuantumNet(), tiny_images()
    config = tiny_config(frozen=("circuits",))
    whole = tr.train(model, images, config, tmp_path / "whole", progress=False)
    with killed_at_step(monkeypatch, 5):
        tr.train(model, images, config, tmp_path / "cut", progress=False)
    resumed = tr.train(model, images, config, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == 4
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)


def test_unknown_frozen_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown frozen parameter group"):
        tr.TrainConfig(frozen=("attention",))
    with pytest.raises(ConfigError, match="train.frozen"):
        ex.configure("smoke", {"train.frozen": ("attention",)})


def test_runner_records_the_trainable_count_of_a_frozen_variant(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(models, "make_model", lambda name, released_code=False: TinyQuantumNet())
    config = ex.configure("smoke", {"model.name": "fullhqconv-frozen", "evaluation.metrics": False})
    record = ex.run(config, tmp_path / "run", progress=False)
    assert record["trainable_params"] == record["params"] - 6
    assert record["train"]["frozen"] == ["circuits"]
    assert record["config"]["model"]["name"] == "fullhqconv-frozen"


def real_shapes(name: str):
    return models.param_shapes(models.UNet(models.model_config(name)))  # not the tests' TinyNet


def test_classical_vertex_control_has_exactly_fullhqconvs_parameter_count() -> None:
    control, quantum = real_shapes("fullhqconv-classical"), real_shapes("fullhqconv")
    assert models.count_params(control) == models.count_params(quantum) == 429_993
    assert models.count_by_module(control) == models.count_by_module(quantum)
    assert models.quantum_params(control) == {}
    layer = control["mid.resblock_0"]["conv_0"]
    assert layer["kernel"].shape == (3, 3, 3, 39) and layer["tail_kernel"].shape == (4, 4)
    assert "fullhqconv-classical" not in models.MODEL_NAMES  # a control, not a paper column


def test_classical_vertex_layer_keeps_its_groups_apart() -> None:
    layer = models.GroupedVertexLayer(q=13, tail=True)
    x = jax.random.normal(jax.random.key(0), (1, 2, 2, 40))
    params = layer.init(jax.random.key(1), x)
    jac = jax.jacobian(lambda v: layer.apply(params, v))(x)[0]  # (2, 2, 40, 1, 2, 2, 40)
    coupling = np.abs(np.asarray(jac)).sum(axis=(0, 1, 3, 4, 5))  # (out channel, in channel)
    group = np.minimum(np.arange(40) // 3, 13)  # channel 39 is the tail's own group
    assert np.all(coupling[group[:, None] != group[None, :]] == 0)
    assert np.all(coupling[group[:, None] == group[None, :]].reshape(-1) >= 0)
    assert coupling[39, 39] > 0 and coupling[0, 2] > 0


def test_grouped_vertex_has_no_released_code_variant() -> None:
    with pytest.raises(ConfigError, match="no released-code variant"):
        models.model_config("fullhqconv-classical", released_code=True)


def test_epoch1_protocol_is_fixed() -> None:
    config = ex.configure("epoch1", {"data.dataset": "mnist", "model.name": "classical"})
    assert config.train_config(1).total_steps(60_000) == 469
    assert config.train_config(1) == tr.TrainConfig(epochs=1, checkpoint_every=100)
    assert (config.sampling.sampler, config.sampling.steps) == ("ddim", 100)
    assert (config.evaluation.samples, config.evaluation.n_real) == (1_000, 1_000)
    assert config.evaluation.real_split == "train" and config.evaluation.epochs == (1.0,)
    assert config.data.train_images is None
    assert ex.deviations(config) == [
        "1 epoch instead of 20",
        "1000 generated images instead of 7000",
        "1000 real images for the metrics instead of 7000",
        "DDIM sampling with 100 steps instead of ancestral DDPM with 1000",
    ]


def test_epoch1_plan_lists_every_run_once_in_the_agreed_order() -> None:
    runs = ex.plan("epoch1").runs
    assert len(runs) == 21 and len({r.out for r in runs}) == 21
    assert [r.out for r in runs[:2]] == [
        "results/epoch1/mnist_classical_seed42",
        "results/epoch1/mnist_fullhqconv_seed42",
    ]
    for r in runs:
        config = r.config()
        assert config.protocol == "epoch1" and config.seed in plans.EPOCH1_SEEDS
        pretrained = r.out in {
            "results/epoch1/mnist_classical_seed42",
            "results/epoch1/mnist_fullhqconv_seed42",
        }
        assert config.train.epochs == (10 if pretrained else 1)
        assert config.evaluation.epochs == ((1.0, 10.0) if pretrained else (1.0,))
    assert runs[-1].out == "results/epoch1/fashion_mnist_quanvunet_seed44"


def finished_run(tmp_path):
    """A finished smoke run whose record says it came from a clean tree (as in CI)."""
    out = tmp_path / "state"
    argv = ["run", "--dataset", "mnist", "--model", "classical", "--protocol", "smoke"]
    argv += ["--out", str(out), "--quiet", "--epochs", "2", "--eval-epochs", "1,2"]
    assert ex.main(argv) == 0
    record = json.loads((out / "run.json").read_text())
    record["provenance"]["dirty"] = False
    (out / "run.json").write_text(json.dumps(record))
    return out


def test_publish_copies_the_artefacts_and_no_checkpoints(tmp_path) -> None:
    out = finished_run(tmp_path)
    names = sorted(p.name for p in publish.publish(out, tmp_path / "results" / "x"))
    assert names == sorted(
        [
            "run.json",
            "train_log.jsonl",
            "samples_epoch1.npz",
            "samples_epoch1.png",
            "samples_epoch2.npz",
            "samples_epoch2.png",
        ]
    )
    assert ex.read_run(tmp_path / "results" / "x")["status"] == "complete"


def test_publish_refuses_an_unfinished_or_dirty_run(tmp_path) -> None:
    out = finished_run(tmp_path)
    record = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**record, "status": "evaluating"}))
    with pytest.raises(RunStateError, match="no finished run"):
        publish.publish(out, tmp_path / "dest")
    dirty = {**record, "provenance": {**record["provenance"], "dirty": True}}
    (out / "run.json").write_text(json.dumps(dirty))
    with pytest.raises(ProvenanceError, match="uncommitted changes"):
        publish.publish(out, tmp_path / "dest")
    assert len(publish.publish(out, tmp_path / "dest", allow_dirty=True)) == 6


# Losses of the first 3 steps of the epoch-1 protocol (batch 128, the paper's optimiser, P2, cosine
# T = 1000) on the first 128 MNIST training images, with the real U-Nets, recorded at the commit
# the epoch-1 runs were made from. rtol 1e-5, not bit equality: XLA's CPU kernels may sum in
# another order on another instruction set; any change to the model, data order, noise or loss
# moves these by far more.
PINNED_LOSSES = {
    "classical": [1.1370089054107666, 1.8616758584976196, 0.813010573387146],
    "fullhqconv-frozen": [1.1362731456756592, 1.83601975440979, 0.8138050436973572],
}


@pytest.mark.parametrize("model", sorted(PINNED_LOSSES))
def test_the_epoch1_training_path_gives_the_pinned_losses(tmp_path, monkeypatch, model) -> None:
    from qhd_lib.experiments import runner

    monkeypatch.undo()  # the real U-Nets, not the tiny stand-in of the autouse fixture
    changes = {"data.dataset": "mnist", "model.name": model, "data.train_images": 128}
    changes |= {"train.epochs": 3, "evaluation.epochs": (3,), "train.log_every": 1}
    config = ex.configure("epoch1", changes)
    info = runner._train_phases(config, tmp_path, runner.training_images(config), False)
    log = [json.loads(row) for row in (tmp_path / ex.TRAIN_DIR / tr.LOG_FILE).open()]
    np.testing.assert_allclose([r["loss"] for r in log], PINNED_LOSSES[model], rtol=1e-5)
    assert info["steps"] == 3
    assert info["trainable_params"] == {"classical": 483_321, "fullhqconv-frozen": 425_561}[model]
