"""The classical layers of the U-Net, as in *denoising-diffusion-flax* (which the paper's code uses).

Every layer here is plain Flax; the quantum blocks in `qhd_lib.models.quantum` reuse the ResNet
block's wiring (`ResnetBlock`) and only swap its two spatial layers.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Carry = Any  # what the first spatial layer of a block hands to the second (None for convs)


def standardize_kernel(kernel: jax.Array, eps: float = 1e-5) -> jax.Array:
    """Weight standardisation (Qiao et al. 2019): zero mean, unit variance per output filter."""
    axes = tuple(range(kernel.ndim - 1))
    mean = jnp.mean(kernel, axis=axes, keepdims=True)
    var = jnp.var(kernel, axis=axes, keepdims=True)
    return (kernel - mean) / jnp.sqrt(var + eps)


class WeightStandardizedConv(nn.Module):
    """A 3×3 'same' convolution whose kernel is standardised on every call (used with GroupNorm)."""

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        y = jax.lax.conv_general_dilated(
            x,
            standardize_kernel(kernel),
            window_strides=(1, 1),
            padding=[(k // 2, k // 2)] * 2,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Transformer-style sinusoidal embedding of the time step: (B,) → (B, dim), sin then cos.

    Frequencies ``10000^(-i/(dim/2 - 1))`` for ``i = 0..dim/2-1``, as in denoising-diffusion-flax.
    """
    if dim % 2 or dim < 4:
        raise ValueError(f"time embedding size must be even and ≥ 4, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
    angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of size ``dim`` → Dense(4·dim) → GELU → Dense(4·dim)."""

    dim: int

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        h = sinusoidal_embedding(t, self.dim)
        h = nn.Dense(4 * self.dim, name="dense_0")(h)
        return nn.Dense(4 * self.dim, name="dense_1")(nn.gelu(h))


class ResnetBlock(nn.Module):
    """ResNet block with time conditioning (He et al. 2016; Ho et al. 2020).

    ``h = swish(GN(layer_1(swish(GN(layer_0(x)) · (1 + scale) + shift))))``, output ``res(x) + h``,
    where ``(scale, shift) = Dense(2C)(swish(t_emb))`` and ``res`` is a 1×1 conv when the channel
    count changes. ``layer_0``/``layer_1`` are weight-standardised 3×3 convs here; the quantum
    blocks override `spatial_layer` and inherit everything else.
    """

    features: int
    groups: int = 10

    def spatial_layer(
        self, index: int, h: jax.Array, block_input: jax.Array, carry: Carry
    ) -> tuple[jax.Array, Carry]:
        """The block's ``index``-th (0 or 1) spatial layer: here a weight-standardised 3×3 conv."""
        return WeightStandardizedConv(self.features, name=f"conv_{index}")(h), None

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        h, carry = self.spatial_layer(0, x, x, None)
        h = nn.GroupNorm(num_groups=self.groups, name="norm_0")(h)
        scale_shift = nn.Dense(2 * self.features, name="time_mlp")(nn.swish(time_emb))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        h = nn.swish(h * (1 + scale) + shift)
        h, _ = self.spatial_layer(1, h, x, carry)
        h = nn.swish(nn.GroupNorm(num_groups=self.groups, name="norm_1")(h))
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), name="res_conv")(x)
        return x + h


def _split_heads(t: jax.Array, heads: int) -> jax.Array:
    """(B, H, W, heads·d) → (B, H·W, heads, d)."""
    b, hh, ww, c = t.shape
    return t.reshape(b, hh * ww, heads, c // heads)


def l2_normalize(t: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``t / max(‖t‖₂, eps)`` along ``axis``."""
    return t / jnp.maximum(jnp.linalg.norm(t, axis=axis, keepdims=True), eps)


class Attention(nn.Module):
    """Full multi-head attention with L2-normalised q and k and a fixed scale (the vertex).

    ``softmax(scale · q̂ k̂ᵀ) v`` per head; with q, k of unit length the logits lie in
    [−scale, scale]. (denoising-diffusion-flax normalises over the positions axis; we normalise
    each query/key vector, the cosine-similarity attention it was ported from.)
    """

    heads: int = 4
    dim_head: int = 32
    scale: float = 10.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        qkv = nn.Conv(3 * self.heads * self.dim_head, (1, 1), use_bias=False, name="to_qkv")(x)
        q, k, v = (_split_heads(t, self.heads) for t in jnp.split(qkv, 3, axis=-1))
        q, k = l2_normalize(q), l2_normalize(k)
        attn = nn.softmax(jnp.einsum("bihd,bjhd->bhij", q, k) * self.scale, axis=-1)
        out = jnp.einsum("bhij,bjhd->bihd", attn, v).reshape(b, hh, ww, -1)
        return nn.Conv(c, (1, 1), name="to_out")(out)


class LinearAttention(nn.Module):
    """Linear attention (Shen et al. 2021): softmax over features for q, over positions for k.

    ``out = q (kᵀ v)`` costs O(H·W) instead of O((H·W)²); a 1×1 conv and a LayerNorm close it.
    """

    heads: int = 4
    dim_head: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        qkv = nn.Conv(3 * self.heads * self.dim_head, (1, 1), use_bias=False, name="to_qkv")(x)
        q, k, v = (_split_heads(t, self.heads) for t in jnp.split(qkv, 3, axis=-1))
        q = nn.softmax(q, axis=-1) / math.sqrt(self.dim_head)
        k = nn.softmax(k, axis=1)
        v = v / (hh * ww)
        context = jnp.einsum("bnhd,bnhe->bhde", k, v)
        out = jnp.einsum("bhde,bnhd->bnhe", context, q).reshape(b, hh, ww, -1)
        out = nn.Conv(c, (1, 1), name="to_out")(out)
        return nn.LayerNorm(epsilon=1e-5, use_bias=False, name="to_out_norm")(out)


class AttnBlock(nn.Module):
    """Pre-norm residual attention: ``x + attention(LayerNorm(x))`` (linear or full)."""

    linear: bool = True
    heads: int = 4
    dim_head: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.LayerNorm(epsilon=1e-5, use_bias=False, name="norm")(x)
        if self.linear:
            h = LinearAttention(self.heads, self.dim_head, name="attention")(h)
        else:
            h = Attention(self.heads, self.dim_head, name="attention")(h)
        return x + h


class Downsample(nn.Module):
    """Strided conv halving the resolution: 4×4 stride 2 pad 1 (28→14→7), 7×7 for 7→2."""

    features: int
    kernel_size: int = 4

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        return nn.Conv(self.features, (k, k), strides=(2, 2), padding=1, name="conv")(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize to ``size`` × ``size`` (2→7, 7→14, 14→28), then a 3×3 conv."""

    features: int
    size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, _, _, c = x.shape
        x = jax.image.resize(x, (b, self.size, self.size, c), "nearest")
        return nn.Conv(self.features, (3, 3), padding=1, name="conv")(x)
