"""The GPU campaign (issue 19): its order, its files, and a run cut short by deadlines that
resumes, through the host's `collect`, to the numbers of a run that never stopped.

The U-Net is the tiny network of test_train (the ``tiny_world`` fixture of test_experiments);
the data, protocol, runner, packing and collecting are the real thing, at smoke scale.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from qhd_lib import io, provenance
from qhd_lib import train as tr
from qhd_lib.deadline import Deadline, DeadlineReached
from qhd_lib.errors import ConfigError, RunStateError
from qhd_lib.experiments import campaign, configure, plans, samples
from qhd_lib.experiments import run as run_experiment
from qhd_lib.experiments.overrides import override
from tests.test_experiments import tiny_world  # noqa: F401  (autouse: tiny model, stub metrics)
from tests.test_train import TinyNet, tiny_config, tiny_images


def in_process(run_dir: Path, config, hard_s: float) -> None:
    """The campaign's work without the child process of the command line."""
    run_experiment(config, run_dir, progress=False)


def invoke(root: Path, k: int, deadline_s: float, name: str | None = None) -> dict:
    """One invocation on the 'GPU machine', then the host's collect of what came back."""
    host, results, out = root / "host", root / "results", root / f"out{k}"
    state = host / "send" / "state"
    record = campaign.device_run(
        out,
        deadline_s=deadline_s,
        work=in_process,
        state=state if state.is_dir() else None,
        results=results,
        protocol="smoke",
        name=name,
        scratch=root / f"scratch{k}",
    )
    assert len(list(out.iterdir())) <= campaign.MAX_FILES
    campaign.collect(out, host, results)
    return record


@pytest.fixture
def short_chunks(monkeypatch):
    monkeypatch.setattr(samples, "STEPS_PER_CHUNK", 3)  # 10 smoke steps: 4 chunks to stop between


def test_campaign_runs_the_whole_paper_plan_cheap_columns_first() -> None:
    runs = [campaign.run_name(r) for r in plans.campaign_runs()]
    assert sorted(runs) == sorted(campaign.run_name(r) for r in plans.plan("paper").runs)
    assert runs[:7] == [
        "mnist_classical_seed42",
        "mnist_1hqconv_seed42",
        "mnist_7hqconv_seed42",
        "mnist_fullhqconv_seed42",
        "mnist_1fqconv_transfer_seed42",
        "mnist_classical_transfer_seed42",
        "mnist_quanvunet_seed42",
    ]
    assert runs[7:11] == [f"mnist_{m}_seed{s}" for s in (43, 44) for m in ("classical", "7hqconv")]
    assert runs.index("fashion_mnist_classical_seed42") == 15  # every MNIST run first
    assert runs[-1] == "fashion_mnist_quanvunet_released_seed42"


def test_next_run_is_the_first_without_a_complete_record(tmp_path) -> None:
    assert campaign.run_name(campaign.next_run(tmp_path, None)) == "mnist_classical_seed42"
    io.write_json(tmp_path / "mnist_classical_seed42" / "run.json", {"status": "complete"})
    io.write_json(tmp_path / "mnist_1hqconv_seed42" / "run.json", {"status": "training"})
    assert campaign.run_name(campaign.next_run(tmp_path, None)) == "mnist_1hqconv_seed42"
    in_progress = tmp_path / "state"
    io.write_json(
        in_progress / "run.json",
        {"status": "stopped", "campaign": {"run": "mnist_quanvunet_seed42"}},
    )
    assert campaign.run_name(campaign.next_run(tmp_path, in_progress)) == "mnist_quanvunet_seed42"


def test_a_transfer_run_is_rehearsed_at_smoke_scale_in_one_plus_one_epochs() -> None:
    planned = campaign.planned_run("mnist_1fqconv_transfer_seed42")
    config = campaign.campaign_config(planned, "smoke", 60.0)
    assert (config.train.epochs, config.train.transfer.source_epochs) == (2, 1)
    assert config.evaluation.metrics is False and config.deadline_s == 60.0
    paper = campaign.campaign_config(planned, "paper", None)
    assert (paper.train.epochs, paper.train.transfer.source_epochs) == (20, 19)


def test_a_run_cut_short_by_deadlines_resumes_to_the_numbers_of_one_that_never_stopped(
    tmp_path, short_chunks
) -> None:
    whole = invoke(tmp_path / "whole", 0, 10_000.0, name="mnist_classical_seed42")
    assert whole["status"] == "complete" and whole["campaign"]["invocations"] == 1

    cut = tmp_path / "cut"  # 11 s leave the work 1 s: it stops in training and in sampling
    records = [invoke(cut, 0, 11.0)]
    while records[-1]["status"] != "complete" and len(records) < 20:
        records.append(invoke(cut, len(records), 11.0))
    records.append(invoke(cut, len(records), 11.0))
    statuses = [r["status"] for r in records]
    first_done = statuses.index("complete")
    assert statuses[:first_done] == ["stopped"] * first_done
    stops = [r["stopped"] for r in records[:first_done]]
    assert any("training at step" in s for s in stops)
    assert any("sampling at step" in s for s in stops)
    assert records[first_done]["campaign"]["invocations"] == first_done + 1
    following = records[first_done + 1]["campaign"]  # on to the next run, from its start
    assert (following["run"], following["invocations"]) == ("mnist_1hqconv_seed42", 1)

    published = {
        name: tmp_path / name / "results" / "mnist_classical_seed42" for name in ("whole", "cut")
    }
    logs = {k: [json.loads(r) for r in (p / tr.LOG_FILE).open()] for k, p in published.items()}
    assert [r["step"] for r in logs["cut"]] == [1, 2, 3, 4]
    assert [r["loss"] for r in logs["cut"]] == [r["loss"] for r in logs["whole"]]
    assert [r["ema_params_loss"] for r in logs["cut"]] == [
        r["ema_params_loss"] for r in logs["whole"]
    ]
    np.testing.assert_array_equal(
        io.load_images(published["cut"] / "samples_epoch1.npz"),
        io.load_images(published["whole"] / "samples_epoch1.npz"),
    )
    record = io.read_json(published["cut"] / "run.json")
    assert record["status"] == "complete" and record["evaluations"][0]["metrics"] is None
    assert record["evaluations"][0]["metrics_skipped"] == campaign.METRICS_NOTE
    assert (published["cut"] / record["evaluations"][0]["grid_png"]).is_file()


def test_state_larger_than_a_file_travels_in_parts_and_comes_back_whole(tmp_path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out"
    big = np.random.default_rng(0).bytes(campaign.PART_BYTES + 1000)
    io.write_bytes(run_dir / "train" / tr.CHECKPOINT_FILE, big)
    io.write_bytes(run_dir / "samples_epoch1.npz", b"samples")
    io.write_json(run_dir / "run.json", {"status": "stopped", "campaign": {"run": "x"}})
    written = sorted(p.name for p in campaign.pack(run_dir, out))
    assert written == ["run.json", "samples_epoch1.npz", "state.tar.0", "state.tar.1"]
    assert all(p.stat().st_size <= campaign.PART_BYTES for p in out.iterdir())
    campaign._unpack_state(out, tmp_path / "again")
    assert (tmp_path / "again" / "train" / tr.CHECKPOINT_FILE).read_bytes() == big
    assert not (tmp_path / "again" / "samples_epoch1.npz").exists()  # samples stay on the host


class FakeClock:
    """time.monotonic for a test: every train step or reverse-step chunk takes one second."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_training_stops_before_a_block_would_pass_the_deadline(tmp_path, monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr("qhd_lib.deadline.time.monotonic", clock)
    config = tiny_config(log_every=2, checkpoint_every=100)  # 12 steps
    step, loss_of = tr._compiled_functions(TinyNet(), tr._compile_key(config))

    def slow_step(*args):
        clock.now += 1.0
        return step(*args)

    monkeypatch.setattr(tr, "_compiled_functions", lambda *a: (slow_step, loss_of))
    deadline = Deadline(10.5)  # blocks of 2 s, 1 s allowed for a checkpoint: 8 + 2 + 1 > 10.5
    with pytest.raises(DeadlineReached, match="training at step 8 of 12"):
        tr.train(TinyNet(), tiny_images(), config, tmp_path, progress=False, deadline=deadline)
    assert clock.now <= deadline.at  # stopped in time: 8 s of steps, then a checkpoint
    saved = tr.load_checkpoint(tmp_path / tr.CHECKPOINT_FILE, tr.init_state(
        tr.init_params(TinyNet(), config.seed, (8, 8, 1)), config))  # fmt: skip
    assert int(saved.step) == 8


def test_the_jax_cache_sends_this_invocations_compiles_first_within_a_files_size(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(campaign, "PART_BYTES", 35_000)  # three entries of 4 kB and the tar ends
    cache = tmp_path / "cache"
    for name, mtime in (("old-a", 100.0), ("old-b", 200.0), ("new-a", 5000.0), ("new-b", 6000.0)):
        io.write_bytes(cache / name, bytes(4000))
        os.utime(cache / name, (mtime, mtime))
    archive = campaign.save_cache(cache, tmp_path / "out", tmp_path / "log", since=1000.0)
    assert archive.stat().st_size <= campaign.PART_BYTES
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["new-a", "new-b", "old-b"]  # room for three: old-a left out
    assert campaign.load_cache(tmp_path / "out", tmp_path / "again") == 3


def test_evaluations_are_scored_there_only_when_the_f16_weights_travel(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(campaign, "SCORING_ALLOWANCE_S", 0.0)
    weights = tmp_path / "inception"
    weights.mkdir()
    found = {}
    for device in (None, "cpu"):  # no GPU for torch there: nothing scored; then a device
        monkeypatch.setattr(campaign, "scoring_device", lambda device=device: device)
        found[device] = campaign.device_run(
            tmp_path / f"out-{device}",
            deadline_s=10_000.0,
            work=in_process,
            results=tmp_path / "results",
            protocol="smoke",
            name="mnist_classical_seed42",
            scratch=tmp_path / f"scratch-{device}",
            inception=weights,
        )
    assert found[None]["evaluations"][0]["metrics"] is None
    assert found[None]["campaign"]["metrics"] == campaign.METRICS_NOTE
    scored = found["cpu"]["evaluations"][0]["metrics"]
    assert (scored["weights"], scored["device"]) == ("f16", "cpu")
    assert found["cpu"]["campaign"]["metrics"] == campaign.METRICS_ON_DEVICE
    campaign.collect(tmp_path / "out-cpu", tmp_path / "host", tmp_path / "results")
    published = io.read_json(tmp_path / "results" / "mnist_classical_seed42" / "run.json")
    assert published["evaluations"][0]["metrics"]["weights"] == "f16"
    assert "metrics_skipped" not in published["evaluations"][0]


def test_files_already_in_out_count_towards_the_eight(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(campaign, "PART_BYTES", 3000)  # a tar's 10 240-byte record: 4 parts
    run_dir, out = tmp_path / "run", tmp_path / "out"
    io.write_bytes(run_dir / "train" / tr.CHECKPOINT_FILE, bytes(4500))
    io.write_json(run_dir / "run.json", {"status": "stopped", "campaign": {"run": "x"}})
    assert len(campaign.pack(run_dir, tmp_path / "alone")) == 5  # + the log and cache: 7
    for name in ("bench_models_gpu.json", "bench_circuits_gpu.json"):
        io.write_json(out / name, {})
    with pytest.raises(RunStateError, match="bench_models_gpu.json already there"):
        campaign.pack(run_dir, out)


def test_a_new_run_samples_in_as_few_batches_as_memory_allows() -> None:
    mib = 2**20
    assert samples.batch_for_memory(7000, mib, 16 * 2**30) == 7000
    assert samples.batch_for_memory(7000, mib, 4 * 2**30) == 1750  # 2 048 fit: 7 000 / 4
    assert samples.batch_for_memory(7000, mib, 4 * 2**30, devices=4) == 7000  # 1 750 a device
    with pytest.raises(ConfigError, match="do not split over 3 devices"):
        samples.batch_for_memory(7000, mib, 4 * 2**30, devices=3)
    with pytest.raises(ConfigError, match="set sampling.batch"):
        samples.batch_for_memory(7000, 2**30, 2**30)
    per_image = samples.sampling_bytes_per_image(TinyNet())
    assert per_image >= 2 * 28 * 28 * 4  # at least its input and output, float32


def test_a_resumed_run_keeps_the_sampling_batch_it_began_with(tmp_path) -> None:
    config = configure("smoke")
    began = override(config, {"sampling.batch": 4})
    io.write_json(tmp_path / "run.json", {"config": began.to_dict()})
    assert campaign.sampling_batch(config, tmp_path, "8").sampling.batch == 4
    assert campaign.sampling_batch(config, tmp_path / "new", "8").sampling.batch == 8
    assert campaign.sampling_batch(config, tmp_path / "new", "auto") == config  # no memory known


def test_the_slot_benchmarks_then_campaigns_and_is_done_by_its_deadline(tmp_path) -> None:
    out, deadline_s = tmp_path / "OUT", 270.0
    command = [
        sys.executable, str(provenance.ROOT / "scripts" / "device_campaign.py"), "slot", "--tiny",
        "--protocol", "smoke", "--deadline-s", f"{deadline_s:g}", "--bench-s", "150",
        "--results", str(tmp_path / "results"), "--out", str(out),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=deadline_s + 60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    print(done.stdout)  # what each part did and took, shown when an assertion below fails
    assert time.monotonic() - started < deadline_s + 15  # + the interpreter's own start
    names = {p.name for p in out.iterdir()}
    assert len(names) <= campaign.MAX_FILES
    assert {"bench_models_gpu.json", "bench_circuits_gpu.json", "run.json"} <= names
    assert {campaign.LOG_NAME, campaign.CACHE_FILE} <= names
    models = io.read_json(out / "bench_models_gpu.json")
    listed = models["items"] + models["skipped"]
    assert [(i["kind"], i["batch"]) for i in listed] == [
        ("train_step", 2), ("forward", 4), ("forward", 8)]  # fmt: skip
    assert models["items"] and all(i["floor_s"] > 0 for i in models["items"])
    assert models["provenance"]["git_commit"] == provenance.commit().sha
    circuits = io.read_json(out / "bench_circuits_gpu.json")
    assert len(circuits["cases"] + circuits["skipped"]) == 6  # HQConv and FQConv, 3 cases each
    assert io.read_json(out / "run.json")["campaign"]["run"] == "mnist_classical_seed42"
    campaign.collect(out, tmp_path / "host", tmp_path / "results")
    assert (tmp_path / "bench_models_gpu.json").is_file()  # into results/, beside results/paper


def test_a_call_that_would_send_more_than_64_mib_is_refused_naming_the_fix():
    campaign.check_carry(40 << 20, 24 << 20)  # exactly the limit fits
    with pytest.raises(ConfigError, match="without --inception"):
        campaign.check_carry(12 << 20, (52 << 20) + 1)


def test_the_tree_a_call_sends_counts_tracked_files():
    assert campaign.tree_bytes() >= (provenance.ROOT / "README.md").stat().st_size
