"""Data parallel through JAX's sharding: two (CPU) devices train and sample what one does.

JAX fixes its device count when it starts, so the two-device checks run in one subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` that trains and samples the tiny network
of test_train on one device and on both, and prints what the tests below compare.

Tolerances: the two devices sum their halves of the batch apart and then add the two partial
sums, so a loss or gradient can differ from one device's in its last bit (float32: 1.2e-7
relative); Adam divides by √v, which carries such a bit into the next parameters, and over the
six steps here the largest difference seen was 1.2e-7 in the loss and 1e-6 in a parameter. The
tests allow 1e-5 relative: ten times that, and far below the difference a step on half the batch
would make (a gradient not summed across the devices).
Sampling treats each image alone, so its images may differ only by the rounding of the kernels
that run on a half batch (atol 1e-5 in [-1, 1]; 0.0 was seen).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from qhd_lib import sharding
from qhd_lib.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import jax, numpy as np
from qhd_lib import diffusion, sharding, train as tr
from qhd_lib.errors import ConfigError
from qhd_lib.experiments import samples
from tests.test_train import TinyNet, tiny_config, tiny_images

out_dir = sys.argv[1]
one, both = jax.devices()[:1], jax.devices()
images, config = tiny_images(), tiny_config(epochs=1.0, log_every=1)  # 6 steps of 8 images
result = {}
for name, devices in (("one", one), ("two", both)):
    run = tr.train(TinyNet(), images, config, f"{out_dir}/{name}", progress=False,
                   devices=devices)
    log = [json.loads(row) for row in open(f"{out_dir}/{name}/{tr.LOG_FILE}")]
    result[name] = {
        "losses": [row["loss"] for row in log],
        "params": [np.asarray(p).ravel().tolist() for p in jax.tree_util.tree_leaves(
            run.state.params)],
        "devices": run.devices,
        "param_devices": sorted({len(p.sharding.device_set) for p in jax.tree_util.tree_leaves(
            run.state.params)}),
        "replicated": all(p.sharding.is_fully_replicated for p in jax.tree_util.tree_leaves(
            run.state.params)),
        "images": samples.draw_samples(
            TinyNet(), run.state.ema_params, 16, timesteps=10, seed=1, batch=8, progress=False,
            devices=devices).ravel().tolist(),
    }

mesh = sharding.batch_mesh(both)
step, _ = tr._compiled_functions(TinyNet(), tr._compile_key(config), mesh)
state = sharding.replicate(run.state, mesh)
x0 = sharding.shard_batch(images[:8], mesh)
result["step_hlo_all_reduce"] = "all-reduce" in step.lower(
    state, x0, tr.step_key(0, 0, 0)).compile().as_text()
drawn = diffusion.sample(
    diffusion.make_schedule("cosine", 10), samples._apply_fn(TinyNet()), run.state.ema_params,
    jax.random.key(0), (8, 8, 8, 1), progress=False, mesh=mesh)
result["sample_shards"] = [list(s.data.shape) for s in drawn.addressable_shards]

errors = []
for call in (
    lambda: tr.train(TinyNet(), images, tiny_config(batch_size=7), progress=False),
    lambda: samples.draw_samples(TinyNet(), run.state.ema_params, 14, timesteps=10, seed=1,
                                 batch=7, progress=False),
    lambda: samples.draw_samples(TinyNet(), run.state.ema_params, 9, timesteps=10, seed=1,
                                 batch=8, progress=False),
):
    try:
        call()
        errors.append(None)
    except ConfigError as err:
        errors.append(str(err))
result["errors"] = errors
print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What the probe measured in a process that sees two CPU devices."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    out = tmp_path_factory.mktemp("sharding")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_devices_train_to_the_losses_and_parameters_of_one(two_devices) -> None:
    one, two = two_devices["one"], two_devices["two"]
    assert (one["devices"], two["devices"]) == (1, 2)
    assert len(one["losses"]) == 6
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    for a, b in zip(two["params"], one["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_two_devices_split_the_batch_and_sum_the_gradients(two_devices) -> None:
    two = two_devices["two"]
    assert two["param_devices"] == [2] and two["replicated"]  # a copy of the state on each
    assert two_devices["step_hlo_all_reduce"]  # the gradients are summed across the devices
    assert two_devices["sample_shards"] == [[4, 8, 8, 1], [4, 8, 8, 1]]  # half the images each


def test_two_devices_sample_the_images_of_one(two_devices) -> None:
    np.testing.assert_allclose(
        two_devices["two"]["images"], two_devices["one"]["images"], rtol=0, atol=1e-5
    )


def test_a_batch_that_does_not_split_over_the_devices_names_the_setting_and_the_fix(
    two_devices,
) -> None:
    train_error, batch_error, samples_error = two_devices["errors"]
    assert "train.batch_size (--batch-size) is 7" in train_error
    assert "multiple of 2 (e.g. 8 or 6)" in train_error
    assert "sampling.batch (--sample-batch) is 7" in batch_error
    assert "evaluation.samples" in samples_error and "is 9" in samples_error


def test_one_device_builds_no_mesh_and_leaves_arrays_where_they_are() -> None:
    assert sharding.batch_mesh(jax.devices()[:1]) is None
    assert sharding.device_count(None) == 1
    x = np.arange(6.0, dtype=np.float32)
    np.testing.assert_array_equal(sharding.shard_batch(x, None), x)
    tree = {"w": x}
    assert sharding.replicate(tree, None) is tree
    sharding.check_divides(7, None, "any batch")  # one device takes any size


def test_no_devices_is_refused() -> None:
    with pytest.raises(ConfigError, match="no devices"):
        sharding.batch_mesh([])
