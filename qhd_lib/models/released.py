"""The quantum blocks as the paper's released code wires them, for the audit (chapters 5 and 8).

``make_model(name, released_code=True)`` builds the U-Net from these classes and the released
HQConv gate list (``make_ansatz("released_hqconv")``: no A blocks, pixel-major qubits). Each class
is its paper-faithful parent with one change to the block's wiring, so parameter trees and
counts are the paper's; only which parameters reach the output differs:

- `ReleasedQResNetBlock`: the second layer's circuit outputs are computed and replaced by the
  first layer's, so ``conv_1.theta`` gets no gradient.
- `ReleasedFullQResNetBlock`: both layers run the 4-qubit circuit on the first layer's
  parameters, so ``conv_1.tail_theta`` is dead.
- `ReleasedQuanResNetBlock`: the second quanvolution reads the block's input instead of the
  intermediate activations.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qhd_lib.models.layers import ResnetBlock
from qhd_lib.models.quantum import (
    GROUP,
    FullQResNetBlock,
    QResNetBlock,
    QuanResNetBlock,
    QVertexLayer,
)


class ReleasedQResNetBlock(QResNetBlock):
    """QResNet whose second spatial layer keeps its conv's output but takes the first layer's
    circuit outputs in place of its own."""

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        n = GROUP * self.q
        first = self.spatial_layer(0, x)
        second = self.spatial_layer(1, self.condition(first, time_emb))
        return self.residual(x, jnp.concatenate([first[..., :n], second[..., n:]], axis=-1))


class SharedTailVertexLayer(QVertexLayer):
    """A Full vertex layer whose 4-qubit circuit runs on parameters handed to it (the first
    layer's); its own ``tail_theta`` is allocated, as in the released code, and never read."""

    @nn.compact
    def __call__(self, x: jax.Array, tail_theta: jax.Array) -> jax.Array:
        quantum = self.circuits(x)
        self.tail_params()
        rest = self.tail_circuit(x[..., GROUP * self.q :], tail_theta)
        return jnp.concatenate([quantum, rest], axis=-1)


class ReleasedFullQResNetBlock(FullQResNetBlock):
    """Full QResNet whose second layer runs its 4-qubit circuit on the first layer's parameters."""

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        first = self.vertex_layer(0, x)
        h = self.condition(first(x), time_emb)
        if first.tail is None:  # C = 3q: no 4-qubit circuit to share
            return self.residual(x, self.spatial_layer(1, h))
        second = self.vertex_layer(1, h, SharedTailVertexLayer)
        return self.residual(x, second(h, first.get_variable("params", "tail_theta")))


class ReleasedQuanResNetBlock(QuanResNetBlock):
    """QuanResNet whose second quanvolution reads the block input's first 3 channels; its conv
    still reads the intermediate activations."""

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        h = self.condition(self.spatial_layer(0, x), time_emb)
        mixed = jnp.concatenate([x[..., :GROUP], h[..., GROUP:]], axis=-1)
        return self.residual(x, self.spatial_layer(1, mixed))


RELEASED_BLOCKS: dict[str, type[ResnetBlock]] = {
    "partial": ReleasedQResNetBlock,
    "full": ReleasedFullQResNetBlock,
    "quanv": ReleasedQuanResNetBlock,
}
