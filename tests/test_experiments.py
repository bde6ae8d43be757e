"""End-to-end tests of the experiment runner at smoke scale, through the library and the CLI.

The U-Net is swapped for the tiny network of test_train (its compilation alone would take minutes
on a shared 2-core CPU) and FID/KID/IS for a stub (test_metrics covers them); everything else —
data, protocols, training, resume, sampling, files, provenance — is the real thing.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from qhd_lib import experiments as ex
from qhd_lib import io, models
from qhd_lib import train as tr
from qhd_lib.errors import ConfigError
from qhd_lib.experiments import cli, samples, scoring
from tests.test_train import TinyNet, killed_at_step


@pytest.fixture(autouse=True)
def tiny_world(monkeypatch):
    monkeypatch.setattr(models, "make_model", lambda name, released_code=False: TinyNet())
    calls: list[tuple[int, str, int, str]] = []

    def fake_measure(images, dataset, n_real, seed, real_split="train", progress=True, **where):
        calls.append((len(images), dataset, n_real, real_split))
        return {
            "fid": 123.0,
            "kid_mean": 0.1,
            "kid_std": 0.01,
            "is_mean": None,
            "is_std": None,
            "is_unavailable": "stub",
            "n_fake": len(images),
            "weights": where.get("weights", "f32"),
            "device": where.get("device", "cpu"),
        }

    monkeypatch.setattr(scoring, "measure", fake_measure)
    return calls


def smoke_args(out, *extra: str) -> list[str]:
    return [
        "run",
        "--dataset",
        "mnist",
        "--model",
        "classical",
        "--protocol",
        "smoke",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


def smoke(**changes) -> ex.RunConfig:
    return ex.configure("smoke", changes)


def read(out) -> dict:
    return json.loads((out / ex.RUN_FILE).read_text())


def test_smoke_run_writes_samples_metrics_and_provenance(tmp_path, tiny_world) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--epochs", "2", "--eval-epochs", "1,2")) == 0
    record = read(out)
    assert record["status"] == "complete"
    assert record["provenance"]["command"].startswith(
        "python -m qhd_lib.experiments run --dataset mnist"
    )
    assert record["paper_protocol"] is False
    assert any("10 diffusion steps" in d for d in record["deviations"])
    assert record["train"]["steps"] == 8  # 2 epochs x 64 images / batch 16
    assert [e["epoch"] for e in record["evaluations"]] == [1.0, 2.0]
    assert [e["step"] for e in record["evaluations"]] == [4, 8]
    for key in ("git_commit", "dirty", "device", "packages", "seed", "wall_s"):
        assert key in record["provenance"]
    for entry in record["evaluations"]:
        images = io.load_images(out / entry["samples_file"])
        assert images.dtype == np.uint8 and images.shape == (8, 28, 28)
        assert (out / entry["grid_png"]).stat().st_size > 0
        assert entry["metrics"]["fid"] == 123.0
    assert tiny_world == [(8, "mnist", 64, "train")] * 2
    log = [json.loads(r) for r in (out / ex.TRAIN_DIR / tr.LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))
    assert {"loss", "ema_params_loss", "step_time_s", "epoch"} <= set(log[0])


def test_run_json_stores_the_whole_resolved_config(tmp_path) -> None:
    config = smoke(**{"evaluation.metrics": False, "evaluation.real_split": "test"})
    record = ex.run(config, tmp_path / "run", progress=False)
    assert read(tmp_path / "run")["config"] == config.to_dict() == record["config"]
    assert set(record["config"]) >= {
        "data",
        "model",
        "diffusion",
        "train",
        "ema",
        "sampling",
        "evaluation",
        "seed",
        "protocol",
    }


def test_chapters_and_command_line_build_the_same_config() -> None:
    args = cli.build_parser().parse_args(
        smoke_args("x", "--epochs", "2", "--sampler", "ddim", "--set", "ema.max_decay=0.99")
    )
    from_flags = ex.configure(args.protocol, cli.changes_from_args(args))
    from_chapter = ex.configure(
        "smoke", {"train.epochs": 2, "sampling.sampler": "ddim", "ema.max_decay": 0.99}
    )
    assert from_flags == from_chapter
    assert from_chapter.sampling.steps == 10  # DDIM-50 capped at smoke's 10 diffusion steps
    assert from_chapter.evaluation.epochs == (1.0, 2.0)


def test_qhd_scale_selects_the_default_protocol(monkeypatch) -> None:
    monkeypatch.setenv("QHD_SCALE", "paper")
    args = cli.build_parser().parse_args(
        ["run", "--dataset", "mnist", "--model", "classical", "--out", "x"]
    )
    assert ex.configure(args.protocol, cli.changes_from_args(args)).protocol == "paper"
    monkeypatch.setenv("QHD_SCALE", "smoke")
    assert ex.configure().protocol == "smoke"


def test_every_qhd_scale_names_a_protocol() -> None:
    from qhd_lib.scale import SCALES

    assert set(SCALES) <= set(ex.PROTOCOLS)  # epoch1 is a protocol but not a scale


def test_interrupted_run_resumes_and_reuses_finished_evaluations(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    with killed_at_step(monkeypatch, 5):
        ex.main(smoke_args(out, "--epochs", "2"))
    assert read(out)["status"] == "training"

    assert ex.main(smoke_args(out, "--epochs", "2")) == 0
    record = read(out)
    assert record["train"]["resumed_from_step"] == 4  # smoke checkpoints every 2 steps
    assert record["status"] == "complete"

    uninterrupted = tmp_path / "whole"
    assert ex.main(smoke_args(uninterrupted, "--epochs", "2")) == 0
    a = io.load_images(out / "samples_epoch2.npz")
    b = io.load_images(uninterrupted / "samples_epoch2.npz")
    assert np.array_equal(a, b)


def test_sampling_in_chunks_resumes_to_the_same_images(tmp_path, monkeypatch) -> None:
    whole = ex.run(smoke(**{"evaluation.samples": 24}), tmp_path / "whole", progress=False)
    chunked = smoke(**{"evaluation.samples": 24, "sampling.chunk": 16})
    original = samples.draw_samples
    drawn: list[int] = []

    def counting(*args, first_batch=0, **kwargs):
        drawn.append(first_batch)
        return original(*args, first_batch=first_batch, **kwargs)

    monkeypatch.setattr(samples, "draw_samples", counting)
    ex.run(chunked, tmp_path / "chunked", progress=False)
    assert drawn == [0, 2]  # chunks of 16 = 2 batches of 8
    (tmp_path / "chunked" / "chunks_epoch1" / "chunk00001.npz").unlink()
    (tmp_path / "chunked" / ex.RUN_FILE).unlink()  # as if killed while sampling chunk 1
    drawn.clear()
    ex.run(chunked, tmp_path / "chunked", progress=False)
    assert drawn == [2]
    assert whole["evaluations"][0]["samples_file"] == "samples_epoch1.npz"
    assert np.array_equal(
        io.load_images(tmp_path / "whole" / "samples_epoch1.npz"),
        io.load_images(tmp_path / "chunked" / "samples_epoch1.npz"),
    )


def test_sample_and_evaluate_subcommands_split_the_work(tmp_path, tiny_world) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--no-metrics")) == 0
    assert read(out)["evaluations"][0]["metrics"] is None
    npz = tmp_path / "elsewhere" / "s.npz"
    assert (
        ex.main(["sample", "--run", str(out), "--out", str(npz), "--samples", "5", "--quiet"]) == 0
    )
    assert io.load_images(npz).shape == (5, 28, 28)
    assert (
        ex.main(
            ["evaluate", "--samples", str(npz), "--dataset", "mnist", "--n-real", "50", "--quiet"]
        )
        == 0
    )
    result = json.loads((tmp_path / "elsewhere" / "s_metrics.json").read_text())
    assert result["metrics"]["fid"] == 123.0 and tiny_world == [(5, "mnist", 50, "train")]


def test_transfer_run_trains_source_then_fine_tunes(tmp_path) -> None:
    out = tmp_path / "tl"
    args = smoke_args(
        out, "--epochs", "2", "--transfer-from", "classical", "--transfer-epochs", "1"
    )
    assert ex.main(args) == 0
    record = read(out)
    assert record["train"]["transfer"]["source_steps"] == 4
    assert record["train"]["transfer"]["fresh_leaves"] == 0  # TinyNet has no mid.* blocks
    assert record["train"]["steps"] == 4
    assert [e["epoch"] for e in record["evaluations"]] == [2.0]


def test_transfer_from_a_parameter_file_uses_its_own_second_phase_seed(tmp_path) -> None:
    source = tmp_path / "source.msgpack"
    tr.save_params(source, tr.init_params(TinyNet(), 7))
    changes = {
        "train.epochs": 2,
        "train.transfer.source": "classical",
        "train.transfer.source_epochs": 1,
        "train.transfer.source_file": str(source),
    }
    a = ex.run(smoke(**changes, **{"train.transfer.seed": 1}), tmp_path / "a", progress=False)
    ex.run(smoke(**changes, **{"train.transfer.seed": 2}), tmp_path / "b", progress=False)
    assert a["train"]["transfer"]["source_file"] == str(source)
    assert "source_steps" not in a["train"]["transfer"]  # nothing trained before the transfer
    assert a["train"]["transfer"]["second_phase_seed"] == 1 and a["train"]["steps"] == 4
    assert not np.array_equal(
        io.load_images(tmp_path / "a" / "samples_epoch2.npz"),
        io.load_images(tmp_path / "b" / "samples_epoch2.npz"),
    )


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--model", "bogus"),
        ("--dataset", "cifar10"),
        ("--protocol", "huge"),
        ("--eval-epochs", "one"),
    ],
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
    assert f"argument {flag}" in err_text and ("invalid" in err_text or "expected" in err_text)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--samples", "0"),
        ("--batch-size", "-4"),
        ("--epochs", "0"),
        ("--sample-batch", "0"),
        ("--timesteps", "0"),
        ("--n-real", "-1"),
        ("--checkpoint-every", "0"),
        ("--train-images", "-1"),
        ("--sampling-steps", "0"),
        ("--eval-epochs", "0,1"),
    ],
)
def test_zero_or_negative_numbers_are_refused_not_replaced(tmp_path, capsys, flag, value) -> None:
    with pytest.raises(SystemExit) as err:
        ex.main(smoke_args(tmp_path / "x", flag, value))
    assert err.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"evaluation.samples": 0}, "evaluation.samples must be positive"),
        ({"train.batch_size": -1}, "train.batch_size must be positive"),
        ({"sampling.sampler": "ddpm", "sampling.steps": 10}, "leave sampling.steps unset"),
        ({"sampling.chunk": 12}, "multiple of sampling.batch"),
        ({"train.epoch": 2}, "did you mean train.epochs"),
        ({"evaluation.samples": "many"}, "expects int"),
        ({"model.name": "1fqconv", "model.released_code": True}, "released HQConv circuits only"),
        ({"protocol": "paper"}, "choose it with configure"),
    ],
)
def test_bad_settings_name_the_fix(changes, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ex.configure("smoke", changes)


def test_eval_epoch_beyond_training_is_an_error(tmp_path, capsys) -> None:
    assert ex.main(smoke_args(tmp_path / "x", "--eval-epochs", "3")) == 2
    assert capsys.readouterr().err.startswith("error: evaluation epochs [3.0] lie outside")


def test_transfer_needs_fewer_source_epochs_than_total(tmp_path, capsys) -> None:
    args = smoke_args(tmp_path / "x", "--transfer-from", "classical", "--transfer-epochs", "1")
    assert ex.main(args) == 2
    assert "19+1" in capsys.readouterr().err


def test_rerun_with_another_configuration_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert ex.main(smoke_args(out, "--no-metrics")) == 0
    assert ex.main(smoke_args(out, "--no-metrics", "--seed", "1")) == 4
    assert "another configuration" in capsys.readouterr().err


def test_a_variant_brings_its_training_mask() -> None:
    config = ex.configure("smoke", {"model.name": "fullhqconv-frozen"})
    assert config.model.architecture == "fullhqconv" and config.train.frozen == ("circuits",)
    assert config.train_config(1).frozen == ("circuits",)
    assert ex.override(config, {"model.name": "classical"}).train.frozen == ()


def test_paper_protocol_is_the_paper_protocol() -> None:
    config = ex.configure("paper", {"data.dataset": "mnist", "model.name": "classical"})
    assert ex.deviations(config) == []
    assert config.train_config(config.train.epochs).total_steps(60_000) == 9_375
    assert config.train_config(20) == tr.TrainConfig(checkpoint_every=469)
    assert config.evaluation.epochs == (1, 10, 20) and config.evaluation.samples == 7_000


def test_save_grid_leaves_the_plotting_backend_alone(tmp_path, monkeypatch) -> None:
    import matplotlib

    from qhd_lib.experiments.samples import save_grid

    monkeypatch.setattr(matplotlib, "use", lambda *a, **k: pytest.fail("backend switched"))
    path = save_grid(tmp_path / "g.png", np.zeros((20, 28, 28), np.uint8), "title")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_library_modules_never_exit() -> None:
    from pathlib import Path

    import qhd_lib

    entry_points = {"cli.py", "__main__.py"}
    for path in Path(qhd_lib.__file__).parent.rglob("*.py"):
        text = path.read_text()
        body = text.split("\ndef main(", 1)[0]  # data and metrics keep a main() entry point
        if path.name not in entry_points:
            assert "SystemExit" not in body and "sys.exit(" not in body, path


@pytest.mark.parametrize("target", ["classical", "1fqconv", "7hqconv"])
def test_real_models_share_every_parameter_outside_the_vertex(target) -> None:
    from qhd_lib import models

    def zeros(name):
        shapes = models.param_shapes(models.UNet(models.model_config(name)))  # not TinyNet
        return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)

    source, fresh_target = zeros("classical"), zeros(target)
    vertex = ex.VERTEX_SCOPES["resblocks"]
    merged, copied, fresh = tr.transfer_params(source, fresh_target, lambda p: p[0] in vertex)
    assert {p[0] for p in fresh} == set(vertex)
    assert {p[0] for p in copied}.isdisjoint(vertex)
    assert len(copied) + len(fresh) == len(jax.tree_util.tree_leaves(fresh_target))


def test_run_json_records_the_matmul_precision_it_ran_at(tmp_path, monkeypatch) -> None:
    seen: list[str] = []
    original = tr.train

    def spy(*args, **kwargs):
        seen.append(str(jax.config.jax_default_matmul_precision))
        return original(*args, **kwargs)

    monkeypatch.setattr(tr, "train", spy)
    paper = ex.run(smoke(**{"evaluation.metrics": False}), tmp_path / "highest", progress=False)
    assert paper["provenance"]["matmul_precision"] == "highest"
    assert not any("matmul" in d for d in paper["deviations"])
    tf32 = ex.run(
        smoke(**{"evaluation.metrics": False, "matmul_precision": "default"}),
        tmp_path / "default",
        progress=False,
    )
    assert tf32["provenance"]["matmul_precision"] == "default"
    assert any("matmul precision 'default'" in d for d in tf32["deviations"])
    assert seen == ["highest", "default"]  # what the training ran under, not only a label
    with pytest.raises(ConfigError, match="highest: float32"):
        smoke(matmul_precision="tf32")
