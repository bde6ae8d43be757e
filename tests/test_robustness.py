"""The shots-and-noise study (`qhd_lib.experiments.robustness`) end to end on a tiny hybrid.

The U-Net is swapped for a network whose only hidden layer is one FQConv circuit run by the
setting's executor (the real executors: shots and exact noise), and FID/KID for a stub;
data, pairing, sampling, files, resume and provenance are the real thing.
"""

from __future__ import annotations

import dataclasses
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib import circuits, io, models
from qhd_lib import experiments as ex
from qhd_lib.errors import ConfigError
from qhd_lib.experiments import robustness
from qhd_lib.models.quantum import simulator

FQCONV = circuits.make_ansatz("fqconv")


class TinyQuantumNet(nn.Module):
    """x → 12 pooled pixels → FQConv ⟨Z⟩ (by ``executor``) → a dense map back to the image."""

    executor: str = "jax"

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        pooled = x.reshape(len(x), 4, 7, 4, 7).mean(axis=(2, 4)).reshape(len(x), 16)[:, :12]
        theta = self.param("theta", lambda key: circuits.init_params(key, FQCONV))
        z = simulator(self.executor)(FQCONV, jnp.pi * pooled, theta)
        temb = jnp.asarray(t, jnp.float32)[:, None] / 1000.0
        return nn.Dense(28 * 28, name="out")(jnp.concatenate([z, temb], 1)).reshape(x.shape)


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """One study of the tiny hybrid, made once: (config, params, metric calls, result, folder)."""
    scored: list[int] = []

    def fake_measure(images, dataset, n_real, seed, real_split="train", progress=True):
        scored.append(len(images))
        return {"fid": 100.0 + len(scored), "kid_mean": 0.1, "kid_std": 0.01}

    x = jnp.zeros((1, 28, 28, 1))
    params = TinyQuantumNet().init(jax.random.key(0), x, jnp.zeros((1,), jnp.int32))["params"]
    config = robustness.StudyConfig(
        n_test=16, n_samples=4, timesteps=20, ddim_steps=4, batch=8, n_real=10
    )
    folder = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            models, "make_model", lambda name, executor="jax": TinyQuantumNet(executor=executor)
        )
        patch.setattr(robustness, "measure", fake_measure)
        result = robustness.study(
            config, folder / "out", folder / "work", params=params, progress=False
        )
    return config, params, scored, result, folder


def settings_by_label(result: dict) -> dict[str, dict]:
    return {row["label"]: row for row in result["settings"]}


def test_study_measures_every_setting_against_exact_on_the_same_images(tiny_study):
    config, _, scored, result, folder = tiny_study
    rows = settings_by_label(result)
    assert list(rows) == [s.label for s in robustness.settings()]
    assert rows["exact"]["loss"]["p2"]["minus_exact"]["mean"] == 0.0

    def width(label: str) -> float:
        lo, hi = rows[label]["loss"]["mse"]["minus_exact"]["interval"]
        return hi - lo

    # shot noise shrinks with S; depolarising noise moves the loss away from exact
    assert width("shots=10") > width("shots=100") > width("shots=10000")
    assert rows["depolarizing=0.01"]["loss"]["mse"]["minus_exact"]["mean"] != 0.0
    assert abs(rows["depolarizing=0.01"]["loss"]["mse"]["minus_exact"]["mean"]) > abs(
        rows["depolarizing=0.001"]["loss"]["mse"]["minus_exact"]["mean"]
    )
    # readout ε = 0.5 erases the circuit outputs: the network sees zeros instead of ⟨Z⟩
    erased = rows["readout=0.5"]["loss"]["mse"]["minus_exact"]["mean"]
    assert abs(erased) > abs(rows["readout=0.01"]["loss"]["mse"]["minus_exact"]["mean"]) > 0
    sampled = [label for label, row in rows.items() if "samples" in row]
    assert sampled == list(config.sample_settings)
    assert scored == [4] * len(sampled)
    exact_images = io.load_images(folder / "out" / "samples_exact.npz")
    few_shots = io.load_images(folder / "out" / "samples_shots=100.npz")
    assert exact_images.shape == (4, 28, 28) and (exact_images != few_shots).any()
    assert (folder / "out" / "samples.png").exists()
    assert result["provenance"]["seed"] == config.seed


def test_interrupted_study_resumes_from_its_finished_settings(tiny_study, monkeypatch):
    config, params, scored, first, folder = tiny_study

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished setting was computed again")

    monkeypatch.setattr(robustness, "per_image_losses", must_not_run)
    monkeypatch.setattr(robustness.sampling, "draw_samples", must_not_run)
    monkeypatch.setattr(robustness, "measure", must_not_run)
    again = robustness.study(
        config, folder / "again", folder / "work", params=params, progress=False
    )
    assert [r["loss"] for r in again["settings"]] == [r["loss"] for r in first["settings"]]
    assert [r.get("samples", {}).get("metrics") for r in again["settings"]] == [
        r.get("samples", {}).get("metrics") for r in first["settings"]
    ]


def test_work_dir_of_another_config_is_refused(tiny_study):
    config, params, _, _, folder = tiny_study
    other = robustness.StudyConfig(**{**config.__dict__, "n_test": 8})
    with pytest.raises(ConfigError, match="another configuration"):
        robustness.study(other, folder / "out", folder / "work", params=params)


def test_sampling_an_unknown_setting_is_refused():
    with pytest.raises(ConfigError, match="not settings of the study"):
        robustness.StudyConfig(sample_settings=("shots=7",))


def test_noise_settings_use_the_first_images_and_grow_without_recomputing(tiny_study, monkeypatch):
    config, params, _, full, folder = tiny_study
    work = folder / "grow"
    shutil.copytree(folder / "work", work)
    noisy = [s.label for s in robustness.settings() if s.factor == "depolarizing"]
    for label in noisy:
        (work / f"loss_{label}.npz").unlink()
    computed: list[int] = []
    losses = robustness.per_image_losses

    def counting(errors, params, schedule, x0, *rest):
        computed.append(len(x0))
        return losses(errors, params, schedule, x0, *rest)

    monkeypatch.setattr(robustness, "per_image_losses", counting)
    monkeypatch.setattr(robustness, "NOISY_CHUNK", 4)
    monkeypatch.setattr(
        models, "make_model", lambda name, executor="jax": TinyQuantumNet(executor=executor)
    )
    monkeypatch.setattr(robustness, "measure", lambda *a, **k: {"fid": 0.0})

    def rows(n_test_noisy: int) -> dict[str, dict]:
        small = dataclasses.replace(config, n_test_noisy=n_test_noisy)
        result = robustness.study(
            small, folder / f"grow_{n_test_noisy}", work, params=params, progress=False
        )
        return settings_by_label(result)

    first = rows(8)
    assert computed == [4, 4] * len(noisy)  # only the noise settings, in chunks
    exact_p2 = np.load(work / "loss_exact.npz")["p2"]
    for label in noisy:
        difference = first[label]["loss"]["p2"]["minus_exact"]
        assert first[label]["n_test"] == difference["n"] == 8
        assert difference["exact_mean"] == pytest.approx(float(exact_p2[:8].mean()))
    assert first["shots=10"]["n_test"] == config.n_test
    computed.clear()
    grown = rows(16)  # the same work dir accepts a larger n_test_noisy ...
    assert computed == [4, 4] * len(noisy)  # ... and computes only images 8..15
    reference = settings_by_label(full)
    for label in noisy:
        for kind in ("mse", "p2"):
            assert grown[label]["loss"][kind]["minus_exact"]["mean"] == pytest.approx(
                reference[label]["loss"][kind]["minus_exact"]["mean"], rel=1e-5, abs=1e-9
            )


def test_noise_images_beyond_the_test_images_are_refused():
    with pytest.raises(ConfigError, match="at most n_test"):
        robustness.StudyConfig(n_test=10, n_test_noisy=20)


def test_command_line_names_what_is_missing_when_no_pretrained_model_ships(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(robustness.pretrained, "PRETRAINED", {})
    code = ex.main(
        ["robustness", "--dataset", "mnist", "--model", "fullhqconv", "--out", str(tmp_path)]
    )
    assert code != 0
    assert "no pretrained fullhqconv U-Net for mnist" in capsys.readouterr().err
