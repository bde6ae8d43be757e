"""Quantum ResNet blocks: the paper's QResNet (Sect. 3.1, Fig. 4), QuanResNet (Sect. 3.2, Fig. 8).

Both are `ResnetBlock` with a different `spatial_layer`; GroupNorm, the time scale/shift, swish
and the residual path are inherited unchanged. These blocks follow the paper; what the released
code does instead lives in `qhd_lib.models.released`. Circuits run on `qhd_lib.circuits.simulate`
(pure JAX: jit and grad go straight through them); ``executor="pennylane"`` swaps in the
PennyLane reference for a forward cross-check on a tiny batch (not jit-able, no gradients).
An executor written ``"key=value,..."`` (`CONFIGURED_EXECUTOR_KEYS`) runs the circuits with
finite shots (`qhd_lib.circuits.shots`) and/or exact depolarising and readout noise
(`qhd_lib.circuits.noise`), e.g. ``"shots=1000,seed=0"`` or ``"depolarizing=0.001,readout=0.01"``.

Qubit order is channel-major everywhere: a 2×2 patch of 3 channels becomes 12 values, value
``4c + p`` = channel ``c``, pixel ``p = 2·row + col``; the circuit's 12 ⟨Z⟩ go back to the same
places. (The released code flattens pixel-major; ``released_hqconv`` carries that relabelling
inside its gate list, so the model's order never changes.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from qhd_lib.circuits import Ansatz, init_params, make_ansatz, simulate
from qhd_lib.errors import ConfigError
from qhd_lib.models.layers import ResnetBlock, WeightStandardizedConv

PATCH = 2  # circuits read 2×2 patches: 4 qubits per channel
GROUP = 3  # channels per 12-qubit circuit
PATCH_STRIDES = (1, 2)  # overlapping patches (outputs averaged) or disjoint ones (the paper)
TAIL_LAYERS = 4  # BasicEntanglerLayers on the Full vertex's last channel
EXECUTORS = ("jax", "pennylane")
CONFIGURED_EXECUTOR_KEYS = ("shots", "seed", "depolarizing", "readout")

Simulator = Callable[[Ansatz, jax.Array, jax.Array], jax.Array]


_simulate_jit = jax.jit(simulate, static_argnums=0)


def simulator(executor: str) -> Simulator:
    """The circuit executor: the JAX simulator, or PennyLane (imported only when asked for).

    The JAX simulator is wrapped in `jax.jit` so that a model traces each circuit once per input
    shape, however many blocks call it (inside the model's own jit it is simply inlined).
    """
    if executor == "jax":
        return _simulate_jit
    if executor == "pennylane":
        from qhd_lib.circuits.reference import simulate_reference_jax

        return simulate_reference_jax
    if "=" in executor:
        return configured_executor(executor)
    raise ConfigError(
        f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)} or "
        "'key=value,...' with keys shots, seed, depolarizing, readout (e.g. 'shots=1000,seed=0')"
    )


def check_executor(executor: str) -> None:
    """Raise `ConfigError` unless ``executor`` names an executor (without importing PennyLane)."""
    if executor not in EXECUTORS:
        simulator(executor)


@functools.cache
def configured_executor(spec: str) -> Simulator:
    """The executor of a ``"key=value,..."`` spec: ``shots`` (S measurements per ⟨Z⟩; absent:
    exact expectations), ``seed`` (int, default 0), ``depolarizing`` (p after every two-qubit
    gate) and ``readout`` (ε), both default 0. Cached, so that a spec is one jitted function."""
    from qhd_lib.circuits.noise import noisy_executor
    from qhd_lib.circuits.shots import shots_executor

    options: dict[str, str] = {}
    for item in spec.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in CONFIGURED_EXECUTOR_KEYS or key in options:
            raise ConfigError(
                f"cannot read executor {spec!r} at {item!r}: write 'key=value' pairs separated "
                f"by commas, each key once, keys from {', '.join(CONFIGURED_EXECUTOR_KEYS)} "
                "(e.g. 'shots=1000,seed=0,depolarizing=0.001,readout=0.01')"
            )
        options[key] = value
    try:
        p = float(options.get("depolarizing", 0.0))
        eps = float(options.get("readout", 0.0))
        seed = int(options.get("seed", 0))
        shots = int(options["shots"]) if "shots" in options else None
    except ValueError as error:
        raise ConfigError(
            f"executor {spec!r}: shots and seed must be integers, depolarizing and readout "
            f"numbers ({error})"
        ) from None
    if shots is None:
        if "seed" in options:
            raise ConfigError(f"executor {spec!r}: a seed needs shots; add 'shots=S' or drop it")
        return noisy_executor(p, eps)
    return shots_executor(shots, seed, p, eps)


def patch_to_qubits(patch: jax.Array) -> jax.Array:
    """(..., 2, 2, C) patch → (..., 4C) qubit inputs, channel-major (qubit 4c + p)."""
    *lead, h, w, c = patch.shape
    return jnp.moveaxis(patch, -1, -3).reshape(*lead, c * h * w)


def qubits_to_patch(values: jax.Array, channels: int) -> jax.Array:
    """Inverse of `patch_to_qubits`: (..., 4C) → (..., 2, 2, C)."""
    *lead, _ = values.shape
    return jnp.moveaxis(values.reshape(*lead, channels, PATCH, PATCH), -3, -1)


def _init_circuits(ansatz: Ansatz, count: int) -> Callable[[jax.Array], jax.Array]:
    """Initialiser for ``count`` independent circuits' parameters, each U[0, 1) (`init_params`)."""
    return lambda key: jax.vmap(lambda k: init_params(k, ansatz))(jax.random.split(key, count))


def vertex_circuits(run: Simulator, ansatz: Ansatz, x: jax.Array, theta: jax.Array) -> jax.Array:
    """Groups of 3 channels of a 2×2 map through their own circuit: (B,2,2,3q), (q,P) → (B,2,2,3q).

    One circuit pass over the whole 2×2 image is the vertex's "convolution" (Sect. 3.1).
    """
    b = x.shape[0]
    q = theta.shape[0]
    groups = x.reshape(b, PATCH, PATCH, q, GROUP)  # channel 3g + c → (g, c)
    inputs = patch_to_qubits(jnp.moveaxis(groups, 3, 0))  # (q, B, 12)
    if run is _simulate_jit:
        out = jax.vmap(lambda i, t: run(ansatz, i, t))(inputs, theta)
    else:  # an executor that cannot be vmapped (PennyLane): one group at a time
        out = jnp.stack([run(ansatz, inputs[g], theta[g]) for g in range(q)])
    return jnp.moveaxis(qubits_to_patch(out, GROUP), 0, 3).reshape(b, PATCH, PATCH, q * GROUP)


def valid_patch_strides(size: tuple[int, int]) -> tuple[int, ...]:
    """The patch strides whose 2×2 patches cover every pixel of an H×W map: 1 for any map of at
    least 2×2, 2 only when H and W are even (at 7×7 it would leave the last row and column out)."""
    return tuple(s for s in PATCH_STRIDES if all(n >= PATCH and (n - PATCH) % s == 0 for n in size))


def check_patch_stride(size: tuple[int, int], patch_stride: int) -> None:
    """Reject a patch stride that is not 1 or 2, or whose patches leave pixels of the map out."""
    if patch_stride not in PATCH_STRIDES:
        raise ConfigError(
            f"patch stride {patch_stride!r} is not supported; use 1 (overlapping 2×2 patches, "
            "outputs averaged) or 2 (disjoint patches, the paper)"
        )
    valid = valid_patch_strides(size)
    if patch_stride not in valid:
        h, w = size
        fix = f"use patch stride {valid[0]}" if valid else "use a map of at least 2×2"
        raise ConfigError(
            f"patch stride {patch_stride} leaves pixels of a {h}×{w} map outside every 2×2 "
            f"patch; {fix} (patch stride 2 needs even sizes)"
        )


def patch_count(size: int, patch_stride: int) -> int:
    """Number of 2×2 patch positions along a side of ``size`` pixels with the given patch stride."""
    return (size - PATCH) // patch_stride + 1


def extract_patches(x: jax.Array, patch_stride: int) -> jax.Array:
    """(B, H, W, C) → (B, nH, nW, 2, 2, C): the 2×2 patches at rows/cols 0, s, 2s, ..."""
    check_patch_stride(x.shape[1:3], patch_stride)
    nh, nw = patch_count(x.shape[1], patch_stride), patch_count(x.shape[2], patch_stride)
    span_h, span_w = patch_stride * (nh - 1) + 1, patch_stride * (nw - 1) + 1
    rows = [
        jnp.stack(
            [
                x[:, di : di + span_h : patch_stride, dj : dj + span_w : patch_stride]
                for dj in (0, 1)
            ],
            axis=-2,
        )
        for di in (0, 1)
    ]
    return jnp.stack(rows, axis=-3)


def assemble_patches(patches: jax.Array, size: tuple[int, int], patch_stride: int) -> jax.Array:
    """(B, nH, nW, 2, 2, C) → (B, H, W, C): every pixel gets the mean of the outputs of the
    patches that cover it.

    With patch stride 2 the patches tile the map and each pixel is covered once (the paper's
    case, a plain reshape); with patch stride 1 interior pixels are covered by 4 patches, edges
    by 2, corners by 1, and their outputs are averaged.
    """
    check_patch_stride(size, patch_stride)
    b, nh, nw, _, _, c = patches.shape
    h, w = size
    total = jnp.zeros((b, h, w, c), patches.dtype)
    count = jnp.zeros((h, w), patches.dtype)
    span_h, span_w = patch_stride * (nh - 1) + 1, patch_stride * (nw - 1) + 1
    for di in (0, 1):
        for dj in (0, 1):
            window = (slice(di, di + span_h, patch_stride), slice(dj, dj + span_w, patch_stride))
            total = total.at[(slice(None),) + window].add(patches[:, :, :, di, dj])
            count = count.at[window].add(1.0)
    return total / count[None, :, :, None]


def quanvolution(
    run: Simulator, ansatz: Ansatz, x: jax.Array, theta: jax.Array, patch_stride: int
) -> jax.Array:
    """A quanvolutional filter (Henderson et al. 2020): one 12-qubit circuit slid over the 2×2
    patches of a 3-channel map, its 12 outputs put back where the patch came from.

    (B, H, W, 3) → (B, H, W, 3); ``theta`` (P,) is shared by every patch, like a conv kernel.
    """
    patches = extract_patches(x, patch_stride)  # (B, nH, nW, 2, 2, 3)
    out = run(ansatz, patch_to_qubits(patches), theta)  # (B, nH, nW, 12)
    return assemble_patches(qubits_to_patch(out, GROUP), x.shape[1:3], patch_stride)


def check_vertex_input(x: jax.Array, features: int, block: str) -> None:
    """A vertex block replaces convs channel by channel: 2×2 input with ``features`` channels."""
    if x.shape[1:3] != (PATCH, PATCH):
        raise ConfigError(
            f"{block} acts on the 2×2 vertex, got a {x.shape[1]}×{x.shape[2]} map; "
            "use it only where the U-Net is 2×2 (the vertex)"
        )
    if x.shape[-1] != features:
        raise ConfigError(
            f"{block} replaces its convs channel by channel, so it needs as many input channels "
            f"as it has features; got {x.shape[-1]} inputs for {features} features"
        )


def full_vertex_groups(x: jax.Array, features: int, block: str) -> tuple[int, bool]:
    """``(q, tail)`` of a vertex that maps every channel in groups: ``q`` groups of 3 channels and,
    when C = 3q + 1, one tail channel of its own; checks the input and that C = 3q or 3q + 1."""
    check_vertex_input(x, features, block)
    q, leftover = divmod(features, GROUP)
    if leftover == 2:
        raise ConfigError(
            f"{block} needs C = 3q or 3q + 1 channels (groups of 3, plus one tail channel), "
            f"got C = {features}; use e.g. 39, 40 or 42 channels"
        )
    return q, bool(leftover)


def vertex_ansatz(name: str, layers: int) -> Ansatz:
    """The 12-qubit ansatz of a vertex or quanvolutional circuit: 3 channels of a 2×2 patch."""
    return make_ansatz(name, channels=GROUP, pixels=PATCH * PATCH, layers=layers)


class QVertexLayer(nn.Module):
    """One spatial layer of a vertex block: ``q`` 12-qubit circuits on the first ``3q`` channels,
    then either a weight-standardised conv (``conv_features`` > 0) reading the remaining channels
    or a 4-qubit ``tail`` circuit on the last channel. (B, 2, 2, C) → (B, 2, 2, C).
    """

    ansatz: Ansatz
    q: int
    conv_features: int
    tail: Ansatz | None
    executor: str = "jax"

    def circuits(self, x: jax.Array) -> jax.Array:
        """The ``q`` circuits on the first ``3q`` channels (parameters ``theta``, (q, P))."""
        theta = self.param("theta", _init_circuits(self.ansatz, self.q))
        run = simulator(self.executor)
        return vertex_circuits(run, self.ansatz, x[..., : GROUP * self.q], theta)

    def tail_params(self) -> jax.Array:
        """The 4-qubit circuit's parameters ``tail_theta``."""
        return self.param("tail_theta", lambda key: init_params(key, self.tail))

    def tail_circuit(self, rest: jax.Array, tail_theta: jax.Array) -> jax.Array:
        """The 4-qubit circuit on the last channel's 2×2 values: (B, 2, 2, 1) → (B, 2, 2, 1)."""
        out = simulator(self.executor)(self.tail, patch_to_qubits(rest), tail_theta)
        return qubits_to_patch(out, rest.shape[-1])

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        quantum = self.circuits(x)
        rest = x[..., GROUP * self.q :]
        if self.tail is not None:
            rest = self.tail_circuit(rest, self.tail_params())
        elif self.conv_features:
            rest = WeightStandardizedConv(self.conv_features, name="conv")(rest)
        return jnp.concatenate([quantum, rest], axis=-1)


class QResNetBlock(ResnetBlock):
    """QResNet (Fig. 4) with ``q`` circuits: in each of the two spatial layers, channels
    ``3g..3g+2`` (g < q) go through circuit g (its own parameters, ``theta[g]``), the other
    ``C − 3q`` channels through a weight-standardised conv with ``C − 3q`` filters.
    """

    q: int = 1
    ansatz: str = "hqconv"
    layers: int = 3
    executor: str = "jax"

    def spatial_layer(self, index: int, h: jax.Array) -> jax.Array:
        check_vertex_input(h, self.features, type(self).__name__)
        n = GROUP * self.q
        if not 1 <= self.q <= self.features // GROUP:
            raise ConfigError(
                f"q={self.q} circuits need {n} of {self.features} channels; "
                f"use q in 1..{self.features // GROUP}"
            )
        circuit = vertex_ansatz(self.ansatz, self.layers)
        layer = QVertexLayer(
            circuit, self.q, self.features - n, None, self.executor, name=f"conv_{index}"
        )
        return layer(h)


class FullQResNetBlock(ResnetBlock):
    """Full QResNet: every channel through circuits, no conv at all (FullHQConv/FullFQConv).

    ``C // 3`` groups of 3 channels on 12-qubit circuits; when ``C ≡ 1 (mod 3)`` (40 = 13·3 + 1)
    the last channel goes through a 4-qubit BasicEntanglerLayers circuit (4 layers, 16
    parameters, angle θ itself). Each spatial layer has its own circuits and 4-qubit circuit.
    """

    ansatz: str = "hqconv"
    layers: int = 3
    executor: str = "jax"

    def vertex_layer(
        self, index: int, h: jax.Array, layer: type[QVertexLayer] = QVertexLayer
    ) -> QVertexLayer:
        """The ``index``-th spatial layer (a `QVertexLayer` unless ``layer`` names a subclass)
        for the input ``h``: 12-qubit circuits on groups of 3 channels, a 4-qubit one on a
        leftover channel."""
        q, has_tail = full_vertex_groups(h, self.features, type(self).__name__)
        tail = make_ansatz("basic_entangler", channels=1, pixels=PATCH * PATCH, layers=TAIL_LAYERS)
        return layer(
            vertex_ansatz(self.ansatz, self.layers),
            q,
            0,
            tail if has_tail else None,
            self.executor,
            name=f"conv_{index}",
        )

    def spatial_layer(self, index: int, h: jax.Array) -> jax.Array:
        return self.vertex_layer(index, h)(h)


class QuanResNetBlock(ResnetBlock):
    """QuanResNet (Fig. 8): the first 3 channels through one 12-qubit quanvolutional filter slid
    over 2×2 patches (``patch_stride`` 2: disjoint patches, the paper; 1: overlapping patches,
    averaged), the other ``C − 3`` channels through a weight-standardised conv with ``C − 3``
    filters. Each of the two spatial layers has its own circuit (``conv_i.theta``).
    """

    ansatz: str = "hqconv"
    layers: int = 3
    patch_stride: int = 2
    executor: str = "jax"

    def spatial_layer(self, index: int, h: jax.Array) -> jax.Array:
        check_quanv_input(h, self.features, self.patch_stride)
        layer = QuanvLayer(
            vertex_ansatz(self.ansatz, self.layers),
            self.features - GROUP,
            self.patch_stride,
            self.executor,
            name=f"conv_{index}",
        )
        return layer(h)


def check_quanv_input(x: jax.Array, features: int, patch_stride: int) -> None:
    """A QuanResNet needs > 3 channels in = features out and a map its patches can cover."""
    check_patch_stride(x.shape[1:3], patch_stride)
    if x.shape[-1] != features or features <= GROUP:
        raise ConfigError(
            f"QuanResNet replaces convs channel by channel: it needs as many input channels as "
            f"features, and more than {GROUP}; got {x.shape[-1]} inputs for {features} features"
        )


class QuanvLayer(nn.Module):
    """One spatial layer of a QuanResNet: quanvolution of the first 3 channels ‖ conv of the
    rest. (B, H, W, C) → (B, H, W, C)."""

    ansatz: Ansatz
    conv_features: int
    patch_stride: int
    executor: str = "jax"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        theta = self.param("theta", lambda key: init_params(key, self.ansatz))
        quantum = quanvolution(
            simulator(self.executor), self.ansatz, x[..., :GROUP], theta, self.patch_stride
        )
        rest = WeightStandardizedConv(self.conv_features, name="conv")(x[..., GROUP:])
        return jnp.concatenate([quantum, rest], axis=-1)


QUANTUM_BLOCKS: dict[str, type[ResnetBlock]] = {
    "partial": QResNetBlock,
    "full": FullQResNetBlock,
    "quanv": QuanResNetBlock,
}
