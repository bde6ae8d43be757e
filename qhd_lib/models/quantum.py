"""Quantum ResNet blocks: the paper's QResNet (Sect. 3.1, Fig. 4) and QuanResNet (Sect. 3.2, Fig. 8).

Both are `ResnetBlock` with a different `spatial_layer`; GroupNorm, the time scale/shift, swish
and the residual path are inherited unchanged. Circuits run on `qhd_lib.circuits.simulate`
(pure JAX: jit and grad go straight through them); ``executor="pennylane"`` swaps in the
PennyLane reference for a forward cross-check on a tiny batch (not jit-able, no gradients).

Qubit order is channel-major everywhere: a 2×2 patch of 3 channels becomes 12 values, value
``4c + p`` = channel ``c``, pixel ``p = 2·row + col``; the circuit's 12 ⟨Z⟩ go back to the same
places. (The released code flattens pixel-major; ``released_hqconv`` carries that relabelling
inside its gate list, so the model's order never changes.)
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from qhd_lib.circuits import Ansatz, init_params, make_ansatz, simulate
from qhd_lib.models.layers import Carry, ResnetBlock, WeightStandardizedConv

PATCH = 2  # circuits read 2×2 patches: 4 qubits per channel
GROUP = 3  # channels per 12-qubit circuit
TAIL_LAYERS = 4  # BasicEntanglerLayers on the Full vertex's last channel
EXECUTORS = ("jax", "pennylane")

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
    raise ValueError(f"unknown executor {executor!r}; use one of {', '.join(EXECUTORS)}")


def patch_to_qubits(patch: jax.Array) -> jax.Array:
    """(..., 2, 2, C) patch → (..., 4C) qubit inputs, channel-major (qubit 4c + p)."""
    *lead, h, w, c = patch.shape
    return jnp.moveaxis(patch, -1, -3).reshape(*lead, c * h * w)


def qubits_to_patch(values: jax.Array, channels: int) -> jax.Array:
    """Inverse of `patch_to_qubits`: (..., 4C) → (..., 2, 2, C)."""
    *lead, _ = values.shape
    return jnp.moveaxis(values.reshape(*lead, channels, PATCH, PATCH), -3, -1)


def _init_circuits(ansatz: Ansatz, count: int) -> Callable[[jax.Array], jax.Array]:
    """Initialiser for ``count`` independent circuits' parameters, each U[0, 1) (``init_params``)."""
    return lambda key: jax.vmap(lambda k: init_params(k, ansatz))(jax.random.split(key, count))


def vertex_circuits(
    run: Simulator, ansatz: Ansatz, x: jax.Array, theta: jax.Array
) -> jax.Array:
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


def patch_count(size: int, patch_stride: int) -> int:
    """Number of 2×2 patch positions along a side of ``size`` pixels with the given patch stride."""
    return (size - PATCH) // patch_stride + 1


def extract_patches(x: jax.Array, patch_stride: int) -> jax.Array:
    """(B, H, W, C) → (B, nH, nW, 2, 2, C): the 2×2 patches at rows/cols 0, s, 2s, ..."""
    nh, nw = patch_count(x.shape[1], patch_stride), patch_count(x.shape[2], patch_stride)
    span_h, span_w = patch_stride * (nh - 1) + 1, patch_stride * (nw - 1) + 1
    rows = [
        jnp.stack(
            [x[:, di : di + span_h : patch_stride, dj : dj + span_w : patch_stride] for dj in (0, 1)],
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
        raise ValueError(
            f"{block} acts on the 2×2 vertex, got a {x.shape[1]}×{x.shape[2]} map; "
            "use it only where the U-Net is 2×2 (the vertex)"
        )
    if x.shape[-1] != features:
        raise ValueError(
            f"{block} replaces its convs channel by channel, so it needs as many input channels "
            f"as it has features; got {x.shape[-1]} inputs for {features} features"
        )


class QResNetBlock(ResnetBlock):
    """QResNet (Fig. 4) with ``q`` circuits: in each of the two spatial layers, channels
    ``3g..3g+2`` (g < q) go through circuit g (its own parameters, ``theta[g]``), the other
    ``C − 3q`` channels through a weight-standardised conv with ``C − 3q`` filters.

    ``drop_second_circuits=True`` is the released code (REFERENCE.md, difference 2): the second
    layer's circuit outputs are computed and replaced by the first layer's, so ``conv_1.theta``
    gets no gradient.
    """

    q: int = 1
    ansatz: str = "hqconv"
    layers: int = 3
    drop_second_circuits: bool = False
    executor: str = "jax"

    def spatial_layer(
        self, index: int, h: jax.Array, block_input: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        check_vertex_input(h, self.features, type(self).__name__)
        n = GROUP * self.q
        if not 1 <= self.q <= self.features // GROUP:
            raise ValueError(
                f"q={self.q} circuits need {n} of {self.features} channels; "
                f"use q in 1..{self.features // GROUP}"
            )
        circuit = make_ansatz(self.ansatz, channels=GROUP, pixels=PATCH * PATCH, layers=self.layers)
        layer = QVertexLayer(circuit, self.q, self.features - n, None, self.executor,
                             name=f"conv_{index}")
        quantum, rest, _ = layer(h)
        if index == 1 and self.drop_second_circuits:
            quantum = carry
        return jnp.concatenate([quantum, rest], axis=-1), quantum


class FullQResNetBlock(ResnetBlock):
    """Full QResNet: every channel through circuits, no conv at all (FullHQConv/FullFQConv).

    ``C // 3`` groups of 3 channels on 12-qubit circuits; when ``C ≡ 1 (mod 3)`` (40 = 13·3 + 1)
    the last channel goes through a 4-qubit BasicEntanglerLayers circuit (4 layers, 16
    parameters, angle θ itself). ``share_tail=True`` is the released code (difference 5): both
    layers use the first layer's 4-qubit parameters, so ``conv_1.tail_theta`` is dead.
    """

    ansatz: str = "hqconv"
    layers: int = 3
    share_tail: bool = False
    executor: str = "jax"

    def spatial_layer(
        self, index: int, h: jax.Array, block_input: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        check_vertex_input(h, self.features, type(self).__name__)
        q, leftover = divmod(self.features, GROUP)
        if leftover == 2:
            raise ValueError(
                f"a Full QResNet needs C = 3q or 3q + 1 channels (12-qubit circuits plus one "
                f"4-qubit circuit), got C = {self.features}; use e.g. 39, 40 or 42 channels"
            )
        circuit = make_ansatz(self.ansatz, channels=GROUP, pixels=PATCH * PATCH, layers=self.layers)
        tail = make_ansatz("basic_entangler", channels=1, pixels=PATCH * PATCH, layers=TAIL_LAYERS)
        layer = QVertexLayer(circuit, q, 0, tail if leftover else None, self.executor,
                             name=f"conv_{index}")
        shared = carry if (index == 1 and self.share_tail) else None
        quantum, rest, used_tail = layer(h, tail_theta=shared)
        return jnp.concatenate([quantum, rest], axis=-1), used_tail


class QVertexLayer(nn.Module):
    """One spatial layer of a vertex block: ``q`` 12-qubit circuits on the first ``3q`` channels,
    then either a weight-standardised conv (``conv_features`` > 0) reading the remaining channels
    or a 4-qubit ``tail`` circuit on the last channel.

    Returns ``(circuit outputs (B,2,2,3q), rest (B,2,2,C−3q), 4-qubit parameters used or None)``;
    ``tail_theta`` overrides the layer's own 4-qubit parameters (the released code's sharing).
    """

    ansatz: Ansatz
    q: int
    conv_features: int
    tail: Ansatz | None
    executor: str = "jax"

    @nn.compact
    def __call__(
        self, x: jax.Array, tail_theta: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        run = simulator(self.executor)
        n = GROUP * self.q
        theta = self.param("theta", _init_circuits(self.ansatz, self.q))
        quantum = vertex_circuits(run, self.ansatz, x[..., :n], theta)
        if self.tail is not None:
            own = self.param("tail_theta", lambda key: init_params(key, self.tail))
            tail_theta = own if tail_theta is None else tail_theta
            rest = x[..., n:]
            out = run(self.tail, patch_to_qubits(rest), tail_theta)
            return quantum, qubits_to_patch(out, rest.shape[-1]), tail_theta
        if self.conv_features:
            conv = WeightStandardizedConv(self.conv_features, name="conv")
            return quantum, conv(x[..., n:]), None
        return quantum, x[..., n:n], None


class QuanResNetBlock(ResnetBlock):
    """QuanResNet (Fig. 8): the first 3 channels through one 12-qubit quanvolutional filter slid
    over 2×2 patches (``patch_stride`` 2: disjoint patches, the paper; 1: overlapping patches,
    averaged), the other ``C − 3`` channels through a weight-standardised conv with ``C − 3``
    filters. Each of the two spatial layers has its own circuit (``conv_i.theta``).

    ``second_reads_input=True`` is the released code (difference 3): the second quanvolution
    reads the block's input instead of the intermediate activations.
    """

    ansatz: str = "hqconv"
    layers: int = 3
    patch_stride: int = 2
    second_reads_input: bool = False
    executor: str = "jax"

    def spatial_layer(
        self, index: int, h: jax.Array, block_input: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        check_quanv_input(h, self.features, self.patch_stride)
        circuit = make_ansatz(self.ansatz, channels=GROUP, pixels=PATCH * PATCH, layers=self.layers)
        source = block_input if (index == 1 and self.second_reads_input) else h
        layer = QuanvLayer(circuit, self.features - GROUP, self.patch_stride, self.executor,
                           name=f"conv_{index}")
        return layer(source[..., :GROUP], h[..., GROUP:]), None


def check_quanv_input(x: jax.Array, features: int, patch_stride: int) -> None:
    """A QuanResNet needs > 3 channels in = features out and a map its patches can cover."""
    if patch_stride not in (1, 2):
        raise ValueError(
            f"patch stride {patch_stride} would leave pixels that no 2×2 patch covers; use 1 "
            "(overlapping patches, outputs averaged) or 2 (disjoint patches, the paper)"
        )
    if x.shape[-1] != features or features <= GROUP:
        raise ValueError(
            f"QuanResNet replaces convs channel by channel: it needs as many input channels as "
            f"features, and more than {GROUP}; got {x.shape[-1]} inputs for {features} features"
        )
    h, w = x.shape[1:3]
    if patch_stride == 2 and (h % 2 or w % 2):
        raise ValueError(
            f"patch stride 2 tiles only even-sized maps, got {h}×{w}; use patch stride 1 or "
            "place the QuanResNet at a level with an even size (28 or 14)"
        )


class QuanvLayer(nn.Module):
    """One spatial layer of a QuanResNet: quanvolution of 3 channels ‖ conv of the rest."""

    ansatz: Ansatz
    conv_features: int
    patch_stride: int
    executor: str = "jax"

    @nn.compact
    def __call__(self, quantum_in: jax.Array, conv_in: jax.Array) -> jax.Array:
        theta = self.param("theta", lambda key: init_params(key, self.ansatz))
        quantum = quanvolution(
            simulator(self.executor), self.ansatz, quantum_in, theta, self.patch_stride
        )
        rest = WeightStandardizedConv(self.conv_features, name="conv")(conv_in)
        return jnp.concatenate([quantum, rest], axis=-1)
