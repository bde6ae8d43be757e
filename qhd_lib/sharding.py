"""Data parallel over every device JAX sees, through JAX's own sharding: the batch is split, the
parameters and the optimiser state are copied.

With one device (a laptop, Colab, one GPU) nothing here changes anything: :func:`batch_mesh`
returns None and training and sampling run the same single-device programs, bit for bit. With
several (``jax.devices()``: the GPUs of one machine, or a CPU split by
``XLA_FLAGS=--xla_force_host_platform_device_count=N``) a 1-D `Mesh` with the axis ``"batch"``
spans them; every batch is placed as ``NamedSharding(mesh, P("batch"))``, one slice per device,
and parameters and optimiser state as ``P()``, a copy on each. XLA partitions the jit-compiled
step itself and adds the all-reduce of the gradients. There is no launcher: the one Python process
drives every device it sees.

JAX's random numbers do not depend on how an array is split, so N devices compute what one does,
up to the order in which floats are summed (``tests/test_sharding.py`` measures it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from qhd_lib.errors import ConfigError

AXIS = "batch"


def batch_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """A 1-D mesh ``("batch",)`` over ``devices`` (default ``jax.devices()``); None for one
    device, so that the single-device path stays exactly what it was."""
    found = list(jax.devices() if devices is None else devices)
    if not found:
        raise ConfigError("no devices given; pass None for every device JAX sees")
    return Mesh(np.asarray(found), (AXIS,)) if len(found) > 1 else None


def device_count(mesh: Mesh | None) -> int:
    """How many devices share a batch (1 without a mesh)."""
    return 1 if mesh is None else int(mesh.size)


def check_divides(size: int, mesh: Mesh | None, what: str) -> None:
    """Refuse a batch of ``size`` images that does not split evenly over the mesh's devices;
    ``what`` names the setting to change."""
    n = device_count(mesh)
    if size % n:
        below, above = size // n * n, (size // n + 1) * n
        raise ConfigError(
            f"{what} is {size}, which does not split over the {n} devices JAX sees; use a "
            f"multiple of {n} (e.g. {above}{f' or {below}' if below else ''}), or make fewer "
            "devices visible (CUDA_VISIBLE_DEVICES)"
        )


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis split over the mesh, one slice per device."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A whole copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def shard_batch(x: Any, mesh: Mesh | None) -> jax.Array:
    """``x`` on the devices, its batch split over the mesh (without a mesh: ``jnp.asarray``)."""
    if mesh is None:
        return jnp.asarray(x)
    check_divides(int(np.shape(x)[0]), mesh, "the batch")
    return jax.device_put(x, batch_sharding(mesh))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf of ``tree`` copied onto each device of the mesh (without a mesh: unchanged)."""
    return tree if mesh is None else jax.device_put(tree, replicated(mesh))
