"""Classical controls for the quantum blocks: the same wiring, each circuit swapped for a classical
layer with the same inputs, outputs and number of parameters.

``fullhqconv-classical`` asks whether FullHQConv's results come from the circuits or merely from
its smaller, grouped vertex. Each 12-qubit HQConv circuit of the Full vertex reads 3 channels of
the 2×2 map and writes 3 channels; a weight-standardised 3→3 3×3 convolution on the same 3
channels has 3·3·3·3 + 3 = 84 parameters, exactly one 3-layer HQConv circuit. The 4-qubit tail
circuit (16 parameters) on the last channel becomes a 4×4 linear map of that channel's four
values (16 parameters). The network therefore has exactly FullHQConv's 429 993 parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from qhd_lib.models.layers import ResnetBlock, standardize_kernel
from qhd_lib.models.quantum import (
    GROUP,
    PATCH,
    full_vertex_groups,
    patch_to_qubits,
    qubits_to_patch,
)


class GroupedVertexLayer(nn.Module):
    """The classical twin of a Full vertex layer: ``q`` independent 3→3 3×3 convs (one grouped,
    weight-standardised conv, parameters ``kernel`` (3, 3, 3, 3q) and ``bias``) on the first
    ``3q`` channels, and a 4×4 map ``tail_kernel`` of the last channel's 2×2 values when there is
    one. (B, 2, 2, C) → (B, 2, 2, C)."""

    q: int
    tail: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = GROUP * self.q
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, GROUP, n))
        bias = self.param("bias", nn.initializers.zeros_init(), (n,))
        groups = jax.lax.conv_general_dilated(
            x[..., :n],
            standardize_kernel(kernel),
            window_strides=(1, 1),
            padding=[(1, 1), (1, 1)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=self.q,
        )
        rest = x[..., n:]
        if self.tail:
            pixels = PATCH * PATCH
            tail_kernel = self.param(
                "tail_kernel", nn.initializers.lecun_normal(), (pixels, pixels)
            )
            rest = qubits_to_patch(patch_to_qubits(rest) @ tail_kernel, rest.shape[-1])
        return jnp.concatenate([groups + bias, rest], axis=-1)


class GroupedVertexBlock(ResnetBlock):
    """A Full QResNet block (`FullQResNetBlock`) with every circuit replaced by its classical twin
    (`GroupedVertexLayer`); GroupNorm, time conditioning and residual path are unchanged."""

    def spatial_layer(self, index: int, h: jax.Array) -> jax.Array:
        q, has_tail = full_vertex_groups(h, self.features, type(self).__name__)
        return GroupedVertexLayer(q, has_tail, name=f"conv_{index}")(h)
