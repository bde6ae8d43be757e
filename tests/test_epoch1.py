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
from qhd_lib import io, models
from qhd_lib import train as tr
from qhd_lib.errors import ConfigError, ProvenanceError, RunStateError
from qhd_lib.experiments import paired, plans, publish
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


@pytest.mark.parametrize("block", ["FullQResNetBlock", "GroupedVertexBlock"])
def test_full_vertex_and_its_control_need_3q_or_3q_plus_1_channels(block: str) -> None:
    """One check for both: 41 channels leave 2 over, neither a group of 3 nor a tail channel."""
    module = getattr(models, block)(features=41, groups=1)
    x, temb = jnp.zeros((1, 2, 2, 41)), jnp.zeros((1, 8))
    with pytest.raises(ConfigError, match=f"{block} needs C = 3q or 3q \\+ 1 channels"):
        jax.eval_shape(module.init, jax.random.key(0), x, temb)


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


def fake_run(root, dataset, model, seed, fid, kid, **changes) -> None:
    """A finished run's record as the runner writes it (only what the analysis reads)."""
    from qhd_lib import io

    config = ex.configure("epoch1", {"data.dataset": dataset, "model.name": model, "seed": seed})
    config = ex.override(config, changes)
    epochs = config.evaluation.epochs
    record = {
        "config": config.to_dict(),
        "status": "complete",
        "seed": seed,
        "params": 100,
        "trainable_params": 90,
        "train": {"wall_s": 1.0},
        "provenance": {"git_commit": "b2f5697", "dirty": False},
        "evaluations": [
            {
                "epoch": e,
                "grid_png": f"samples_epoch{e:g}.png",
                "samples_file": f"samples_epoch{e:g}.npz",
                "metrics": {"fid": fid + (e - 1), "kid_mean": kid},
            }
            for e in epochs
        ],
    }
    io.write_json(root / plans.epoch1_dir(dataset, model, seed) / "run.json", record)


def test_analysis_pairs_by_seed_and_lists_missing_runs(tmp_path) -> None:
    fids = {"classical": (300.0, 310.0, 305.0), "fullhqconv": (290.0, 301.0, 294.0)}
    for model, values in fids.items():
        for seed, fid in zip(plans.EPOCH1_SEEDS, values, strict=True):
            extra = {}
            if seed == 42:  # the pretrained runs: 10 epochs, evaluated at 1 and 10
                extra = {"train.epochs": 10, "evaluation.epochs": (1, 10)}
            fake_run(tmp_path, "mnist", model, seed, fid, fid / 1000, **extra)
    result = paired.analyse(paired.EPOCH1, "mnist", tmp_path)
    a = next(c for c in result["comparisons"] if c["id"] == "a")
    assert a["fid"]["differences"] == [-10.0, -9.0, -11.0]
    assert a["fid"]["verdict"] == "supported" and a["fid"]["interval"][1] < 0
    assert a["paper_difference"]["fid"] == pytest.approx(299.7292 - 311.0582)
    c = next(c for c in result["comparisons"] if c["id"] == "c")
    assert c["fid"]["n"] == 0 and c["fid"]["verdict"] == "not resolved at n = 0"
    assert len(result["missing"]) == 9  # frozen, classical vertex, 7HQConv × 3 seeds
    assert result["runs"]["classical"]["42"]["fid"] == 300.0  # epoch 1, not epoch 10
    assert result["floor"] is None


def test_a_control_is_supported_when_it_is_worse(tmp_path) -> None:
    for seed, (trained, frozen) in zip(
        plans.EPOCH1_SEEDS, ((290, 300), (295, 306), (292, 301)), strict=True
    ):
        fake_run(tmp_path, "mnist", "fullhqconv", seed, trained, 0.3)
        fake_run(tmp_path, "mnist", "fullhqconv-frozen", seed, frozen, 0.3)
    c = next(
        c for c in paired.analyse(paired.EPOCH1, "mnist", tmp_path)["comparisons"] if c["id"] == "c"
    )
    assert c["fid"]["verdict"] == "supported" and c["fid"]["interval"][0] > 0


def test_analysis_refuses_a_run_of_another_protocol(tmp_path) -> None:
    fake_run(tmp_path, "mnist", "classical", 43, 300.0, 0.3, **{"evaluation.samples": 500})
    with pytest.raises(RunStateError, match="not made with the epoch1 experiment"):
        paired.analyse(paired.EPOCH1, "mnist", tmp_path)


def test_pre_registered_comparisons_are_the_agreed_ones() -> None:
    got = [
        (c.id, c.dataset, c.arm, c.baseline, c.role, c.expected) for c in paired.EPOCH1.comparisons
    ]
    assert got == [
        ("a", "mnist", "fullhqconv", "classical", "primary", -1),
        ("b", "fashion_mnist", "quanvunet", "classical", "primary", -1),
        ("c", "mnist", "fullhqconv-frozen", "fullhqconv", "control", 1),
        ("d", "mnist", "fullhqconv-classical", "fullhqconv", "control", 1),
        ("e", "mnist", "7hqconv", "classical", "exploratory", -1),
    ]
    assert plans.EPOCH1_SEEDS == (42, 43, 44)


@pytest.mark.parametrize("present", ["none", "some", "all"])
def test_chapter_views_read_none_some_or_all_runs(tmp_path, present) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from qhd_lib import plotting

    wanted = {"none": 0, "some": 1, "all": 3}[present]
    for model in plans.EPOCH1_MODELS["mnist"]:
        for k, seed in enumerate(plans.EPOCH1_SEEDS[:wanted]):
            fake_run(tmp_path, "mnist", model, seed, 300.0 - k - len(model), 0.3 + k / 100)
    result, note = paired.current(paired.EPOCH1, "mnist", tmp_path)
    assert "does not exist yet" in note
    rows = paired.claim_rows(paired.EPOCH1, result)
    assert len(rows) == 2 + 4  # header, rule, (a) (c) (d) (e)
    expected = {"none": "no pairs yet", "some": "no interval", "all": "["}[present]
    assert all(expected in row for row in rows[2:])
    assert len(result["missing"]) == 15 - 5 * wanted
    plotting.paired_seeds(result["runs"], plans.EPOCH1_MODELS["mnist"], paired.EPOCH1.titles)
    plotting.paired_intervals(result["comparisons"])


def test_a_comparison_file_is_used_while_it_matches_the_runs(tmp_path) -> None:
    from qhd_lib import io

    for seed in plans.EPOCH1_SEEDS:
        fake_run(tmp_path, "mnist", "classical", seed, 300.0 + seed, 0.3)
    saved = {
        **paired.analyse(paired.EPOCH1, "mnist", tmp_path),
        "provenance": {"git_commit": "a" * 40, "date": "d"},
    }
    io.write_json(tmp_path / paired.EPOCH1.comparison_file("mnist"), saved)
    assert "commit `aaaaaaaaaaaa`" in paired.current(paired.EPOCH1, "mnist", tmp_path)[1]
    fake_run(tmp_path, "mnist", "fullhqconv", 42, 290.0, 0.3)
    result, note = paired.current(paired.EPOCH1, "mnist", tmp_path)
    assert "older than the runs" in note and "fullhqconv" in result["runs"]


def test_transfer_plan_starts_every_arm_from_the_pretrained_classical_model() -> None:
    runs = ex.plan("transfer").runs
    assert len(runs) == 12
    arms = {}
    for r in runs:
        config = r.config()
        t = config.train.transfer
        assert (t.source, t.source_epochs, t.source_file) == (
            "classical",
            10,
            plans.TRANSFER_SOURCE,
        )
        assert t.seed == config.seed and config.train.epochs == 11
        assert config.evaluation.epochs == (11.0,)
        arms[r.out.split("mnist_")[1].rsplit("_seed", 1)[0]] = (config.model.name, t.fresh)
        assert ex.deviations(config)[0] == (
            "transfer after 10 source epochs, 1 more, instead of the paper's 19 + 1"
        )
    assert arms == plans.TRANSFER_ARMS
    assert ex.VERTEX_SCOPES[plans.TRANSFER_ARMS["continue"][1]] == ()


def test_a_pretrained_source_must_be_the_source_model_on_the_runs_dataset() -> None:
    base = {"train.epochs": 2, "train.transfer.source": "classical"}
    base |= {"train.transfer.source_epochs": 1}
    with pytest.raises(ConfigError, match="pretrained:<dataset>/classical"):
        ex.configure("smoke", {**base, "train.transfer.source_file": "pretrained:mnist/7hqconv"})
    with pytest.raises(ConfigError, match="trained on mnist, not on fashion_mnist"):
        ex.configure(
            "smoke",
            {
                **base,
                "data.dataset": "fashion_mnist",
                "train.transfer.source_file": "pretrained:mnist/classical",
            },
        )


@pytest.fixture
def shipped_tiny(tmp_path, monkeypatch):
    """The library's pretrained registry holding one tiny model's parameters."""
    from qhd_lib import io, pretrained
    from tests.test_train import TinyNet

    path = tmp_path / "mnist_classical.msgpack"
    params = tr.init_params(TinyNet(), 7)
    tr.save_params(path, params)
    entry = pretrained.Pretrained(
        "mnist", "classical", 10, path.name, io.sha256(path), "results/epoch1/x"
    )
    monkeypatch.setattr(pretrained, "DIRECTORY", tmp_path)
    monkeypatch.setattr(pretrained, "PRETRAINED", {("mnist", "classical"): entry})
    monkeypatch.setattr(models, "param_shapes", lambda model: jax.eval_shape(lambda: params))
    return params


def transfer_smoke(fresh: str, seed: int = 1) -> ex.RunConfig:
    changes = {
        "train.epochs": 2,
        "evaluation.epochs": (2,),
        "evaluation.metrics": False,
        "train.transfer.source": "classical",
        "train.transfer.source_epochs": 1,
        "train.transfer.source_file": "pretrained:mnist/classical",
        "train.transfer.fresh": fresh,
        "train.transfer.seed": seed,
    }
    return ex.configure("smoke", changes)


def test_transfer_from_the_pretrained_model_records_its_checksum(tmp_path, shipped_tiny) -> None:
    record = ex.run(transfer_smoke("nothing"), tmp_path / "run", progress=False)
    info = record["train"]["transfer"]
    assert info["source_file"] == "pretrained:mnist/classical"
    assert info["source_sha256"] and info["source_run"] == "results/epoch1/x"
    assert info["fresh_leaves"] == 0 and info["copied_leaves"] == 8
    assert record["train"]["steps"] == 4 and "source_steps" not in info


def test_a_killed_transfer_run_resumes_to_the_same_numbers(tmp_path, monkeypatch) -> None:
    config = ex.configure(
        "smoke",
        {
            "train.epochs": 2,
            "evaluation.epochs": (2,),
            "train.transfer.source": "classical",
            "train.transfer.source_epochs": 1,
        },
    )
    whole = ex.run(config, tmp_path / "whole", progress=False)
    original = tr.batch_indices
    for phase in (0, 1):  # the source phase (stream 0), then the target phase (stream 1)

        def kill(seed, stream, step, n, b, phase=phase):
            if (stream, step) == (phase, 3):
                raise KeyboardInterrupt("simulated kill")
            return original(seed, stream, step, n, b)

        monkeypatch.setattr(tr, "batch_indices", kill)
        with pytest.raises(KeyboardInterrupt):
            ex.run(config, tmp_path / "cut", progress=False)
    monkeypatch.setattr(tr, "batch_indices", original)
    resumed = ex.run(config, tmp_path / "cut", progress=False)
    assert resumed["train"]["resumed_from_step"] == 2  # smoke checkpoints every 2 steps
    assert resumed["evaluations"][0]["metrics"] == whole["evaluations"][0]["metrics"]
    assert np.array_equal(
        io.load_images(tmp_path / "cut" / "samples_epoch2.npz"),
        io.load_images(tmp_path / "whole" / "samples_epoch2.npz"),
    )


def test_transfer_layout_counts_what_each_arm_copies_and_starts_afresh(monkeypatch) -> None:
    from qhd_lib.experiments.runner import network_order, transfer_layout

    monkeypatch.undo()  # the real U-Nets
    totals = {}
    for arm, (model, _) in plans.TRANSFER_ARMS.items():
        layout = transfer_layout(plans.transfer_config("mnist", arm, 42))
        assert list(layout) == sorted(layout, key=network_order)
        assert sum(c + f for c, f in layout.values()) == models.count_params(real_shapes(model))
        totals[arm] = {m: f for m, (_, f) in layout.items() if f}
    assert totals["continue"] == {}
    assert set(totals["1fqconv"]) == {"mid.resblock_0", "mid.resblock_1"}
    assert list(layout)[:2] == ["time_mlp", "init_conv"] and list(layout)[-1] == "final.conv"
