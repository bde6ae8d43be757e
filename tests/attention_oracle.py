"""The attention layers as first written (one 1×1 conv to q, k, v; attention; a 1×1 conv out).

Kept here, not in the library, as the oracle for `qhd_lib.models.layers`: the library computes
the same numbers in another order (no values, no per-head outputs), and
`tests/test_attention.py` holds it to this direct transcription of the formulas.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from qhd_lib.models.layers import l2_normalize


def _split_heads(t: jax.Array, heads: int) -> jax.Array:
    """(B, H, W, heads·d) → (B, H·W, heads, d)."""
    b, hh, ww, c = t.shape
    return t.reshape(b, hh * ww, heads, c // heads)


class DirectAttention(nn.Module):
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


class DirectLinearAttention(nn.Module):
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
