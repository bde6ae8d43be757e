"""End-to-end tests of the experiment runner's command line at smoke scale.

The U-Net is swapped for the tiny network of test_train (its compilation alone would take minutes on
a shared 2-core CPU) and FID/KID/IS for a stub (test_metrics covers them); everything else — data,
presets, training, resume, sampling, files, provenance — is the real thing.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from qhd_lib import experiments as ex
from qhd_lib import train as tr
from tests.test_train import TinyNet, killed_at_step


@pytest.fixture(autouse=True)
def tiny_world(monkeypatch):
    monkeypatch.setattr(ex, "make_model", lambda name, released_code=False: TinyNet())
    calls: list[tuple[int, str, int]] = []

    def fake_measure(images, dataset, n_real, seed, progress=True):
        calls.append((len(images), dataset, n_real))
        return {"fid": 123.0, "kid_mean": 0.1, "kid_std": 0.01, "is_mean": None, "is_std": None,
                "is_unavailable": "stub", "n_fake": len(images)}

    monkeypatch.setattr(ex, "measure", fake_measure)
    return calls


def smoke_args(out, *extra: str) -> list[str]:
    return ["run", "--dataset", "mnist", "--model", "classical", "--scale", "smoke", "--out", str(out),
            "--quiet", *extra]


def test_smoke_run_writes_samples_metrics_and_provenance(tmp_path, tiny_world) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--epochs", "2", "--eval-epochs", "1,2")) == 0
    record = json.loads((out / ex.RUN_FILE).read_text())
    assert record["status"] == "complete"
    assert record["command"].startswith("python -m qhd_lib.experiments run --dataset mnist")
    assert record["paper_protocol"] is False
    assert any("10 diffusion steps" in d for d in record["deviations"])
    assert record["train"]["steps"] == 8  # 2 epochs x 64 images / batch 16
    assert [e["epoch"] for e in record["evaluations"]] == [1.0, 2.0]
    assert [e["step"] for e in record["evaluations"]] == [4, 8]
    for key in ("commit", "device", "versions", "seed", "params"):
        assert key in record
    for entry in record["evaluations"]:
        images = ex.load_samples(out / entry["samples_file"])
        assert images.dtype == np.uint8 and images.shape == (8, 28, 28)
        assert (out / entry["grid_png"]).stat().st_size > 0
        assert entry["metrics"]["fid"] == 123.0
    assert tiny_world == [(8, "mnist", 64), (8, "mnist", 64)]
    log = [json.loads(r) for r in (out / ex.TRAIN_DIR / tr.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert {"loss", "ema_params_loss", "step_time_s", "epoch"} <= set(log[0])


def test_interrupted_run_resumes_and_reuses_finished_evaluations(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    with killed_at_step(monkeypatch, 5):
        ex.main(smoke_args(out, "--epochs", "2"))
    assert json.loads((out / ex.RUN_FILE).read_text())["status"] == "training"

    assert ex.main(smoke_args(out, "--epochs", "2")) == 0
    record = json.loads((out / ex.RUN_FILE).read_text())
    assert record["train"]["resumed_from_step"] == 4  # smoke checkpoints every 2 steps
    assert record["status"] == "complete"

    uninterrupted = tmp_path / "whole"
    assert ex.main(smoke_args(uninterrupted, "--epochs", "2")) == 0
    a = ex.load_samples(out / "samples_epoch2.npz")
    b = ex.load_samples(uninterrupted / "samples_epoch2.npz")
    assert np.array_equal(a, b)


def test_sample_and_evaluate_subcommands_split_the_work(tmp_path, tiny_world) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--no-metrics")) == 0
    assert json.loads((out / ex.RUN_FILE).read_text())["evaluations"][0]["metrics"] is None
    npz = tmp_path / "elsewhere" / "s.npz"
    assert ex.main(["sample", "--run", str(out), "--out", str(npz), "--samples", "5", "--quiet"]) == 0
    assert ex.load_samples(npz).shape == (5, 28, 28)
    assert ex.main(["evaluate", "--samples", str(npz), "--dataset", "mnist", "--n-real", "50", "--quiet"]) == 0
    result = json.loads((tmp_path / "elsewhere" / "s_metrics.json").read_text())
    assert result["metrics"]["fid"] == 123.0 and tiny_world == [(5, "mnist", 50)]


def test_transfer_run_trains_source_then_fine_tunes(tmp_path) -> None:
    out = tmp_path / "tl"
    args = smoke_args(out, "--epochs", "2", "--transfer-from", "classical", "--transfer-epochs", "1")
    assert ex.main(args) == 0
    record = json.loads((out / ex.RUN_FILE).read_text())
    assert record["train"]["transfer"]["source_steps"] == 4
    assert record["train"]["transfer"]["fresh_leaves"] == 0  # TinyNet has no mid.* blocks
    assert record["train"]["steps"] == 4
    assert [e["epoch"] for e in record["evaluations"]] == [2.0]


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--model", "bogus"), ("--dataset", "cifar10"), ("--scale", "huge"), ("--eval-epochs", "one")],
)
def test_invalid_names_are_rejected_with_the_choices(tmp_path, capsys, flag, value) -> None:
    args = smoke_args(tmp_path / "x")
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    with pytest.raises(SystemExit) as err:
        ex.main(args)
    assert err.value.code == 2
    err_text = capsys.readouterr().err
    assert f"argument {flag}:" in err_text and ("invalid" in err_text or "expected" in err_text)


def test_eval_epoch_beyond_training_is_an_error(tmp_path) -> None:
    with pytest.raises(SystemExit, match="outside"):
        ex.main(smoke_args(tmp_path / "x", "--eval-epochs", "3"))


def test_transfer_needs_fewer_source_epochs_than_total(tmp_path) -> None:
    with pytest.raises(SystemExit, match="19\\+1"):
        ex.main(smoke_args(tmp_path / "x", "--transfer-from", "classical", "--transfer-epochs", "1"))


def test_rerun_with_another_configuration_is_refused(tmp_path) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--no-metrics")) == 0
    with pytest.raises(SystemExit, match="another configuration"):
        ex.main(smoke_args(out, "--no-metrics", "--seed", "1"))


def test_paper_preset_is_the_paper_protocol() -> None:
    args = ex.build_parser().parse_args(["run", "--dataset", "mnist", "--model", "classical", "--scale", "paper",
                                         "--out", "x"])
    config = ex._run_config_from_args(args)
    assert config.deviations() == []
    assert config.train_config(config.epochs).total_steps(60_000) == 9_375
    assert config.eval_epochs == (1, 10, 20) and config.samples == 7_000


@pytest.mark.parametrize("target", ["classical", "1fqconv", "7hqconv"])
def test_real_models_share_every_parameter_outside_the_vertex(target) -> None:
    from qhd_lib import models

    def zeros(name):
        return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), models.param_shapes(models.make_model(name)))

    source, fresh_target = zeros("classical"), zeros(target)
    vertex = ex.VERTEX_SCOPES["resblocks"]
    merged, copied, fresh = tr.transfer_params(source, fresh_target, lambda path: path[0] in vertex)
    assert {p[0] for p in fresh} == set(vertex)
    assert {p[0] for p in copied}.isdisjoint(vertex)
    assert len(copied) + len(fresh) == len(jax.tree_util.tree_leaves(fresh_target))
