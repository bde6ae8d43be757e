"""The classical layers of the U-Net, as in *denoising-diffusion-flax* (the paper's code base).

Every layer here is plain Flax; the quantum blocks in `qhd_lib.models.quantum` reuse the ResNet
block's wiring (`ResnetBlock`) and only swap its two spatial layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    blocks override `spatial_layer` and inherit everything else (`condition`, `residual`).
    """

    features: int
    groups: int = 10

    def spatial_layer(self, index: int, h: jax.Array) -> jax.Array:
        """The block's ``index``-th (0 or 1) spatial layer: here a weight-standardised 3×3 conv."""
        return WeightStandardizedConv(self.features, name=f"conv_{index}")(h)

    def condition(self, h: jax.Array, time_emb: jax.Array) -> jax.Array:
        """Between the spatial layers: GroupNorm, the time step's scale and shift, swish."""
        h = nn.GroupNorm(num_groups=self.groups, name="norm_0")(h)
        scale_shift = nn.Dense(2 * self.features, name="time_mlp")(nn.swish(time_emb))
        scale, shift = jnp.split(scale_shift[:, None, None, :], 2, axis=-1)
        return nn.swish(h * (1 + scale) + shift)

    def residual(self, x: jax.Array, h: jax.Array) -> jax.Array:
        """After the second spatial layer: GroupNorm, swish, added to the (projected) input."""
        h = nn.swish(nn.GroupNorm(num_groups=self.groups, name="norm_1")(h))
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1, 1), name="res_conv")(x)
        return x + h

    @nn.compact
    def __call__(self, x: jax.Array, time_emb: jax.Array) -> jax.Array:
        h = self.condition(self.spatial_layer(0, x), time_emb)
        return self.residual(x, self.spatial_layer(1, h))


def l2_normalize(t: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``t / max(‖t‖₂, eps)`` along ``axis``."""
    return t / jnp.maximum(jnp.linalg.norm(t, axis=axis, keepdims=True), eps)


class Projection(nn.Module):
    """The parameters of a 1×1 ``nn.Conv`` (same names, shapes and initial values), returned as
    a ``(C_in, features)`` matrix and a bias instead of being applied.

    The attention layers below multiply these matrices in a different order than a convolution
    would, so they need the matrices themselves; the parameter tree stays that of the convs.
    """

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array | None]:
        shape = (1, 1, in_features, self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = (
            self.param("bias", nn.initializers.zeros_init(), (self.features,))
            if self.use_bias
            else None
        )
        return kernel.reshape(in_features, self.features), bias


def value_output_product(w_v: jax.Array, w_out: jax.Array, heads: int) -> jax.Array:
    """``W_v,h · W_out,h`` for every head: (heads, C, C) from W_v (C, h·d) and W_out (h·d, C).

    Values enter attention only through this product: a head's output is a weighted sum of
    values, ``Σ_n a_n (x_n W_v,h) W_out,h = (Σ_n a_n x_n) (W_v,h W_out,h)``, so neither the
    values (h·d per position) nor the heads' outputs ever need to exist.
    """
    c = w_v.shape[0]
    return jnp.einsum("che,hed->hcd", w_v.reshape(c, heads, -1), w_out.reshape(heads, -1, c))


class Attention(nn.Module):
    """Full multi-head attention with L2-normalised q and k and a fixed scale (the vertex).

    ``softmax(scale · q̂ k̂ᵀ) v`` per head, then the output projection; with q, k of unit length
    the logits lie in [−scale, scale]. (denoising-diffusion-flax normalises over the positions
    axis; we normalise each query/key vector, the cosine-similarity attention it was ported
    from.) Values and projection are applied as one (C × C) matrix per head
    (`value_output_product`).
    """

    heads: int = 4
    dim_head: int = 32
    scale: float = 10.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        inner = self.heads * self.dim_head
        w_qkv, _ = Projection(3 * inner, use_bias=False, name="to_qkv")(c)
        w_out, bias = Projection(c, name="to_out")(inner)
        x = x.reshape(b, hh * ww, c)
        qk = (x @ w_qkv[:, : 2 * inner]).reshape(b, hh * ww, 2, self.heads, self.dim_head)
        q, k = l2_normalize(qk[:, :, 0]), l2_normalize(qk[:, :, 1])
        attn = nn.softmax(jnp.einsum("bihd,bjhd->bhij", q, k) * self.scale, axis=-1)
        wvo = value_output_product(w_qkv[:, 2 * inner :], w_out, self.heads)
        out = jnp.einsum("bhij,bjc,hcd->bid", attn, x, wvo, optimize="optimal")
        return (out + bias).reshape(b, hh, ww, c)


POSITIONS_PER_CHUNK = 2048  # linear attention's 128-wide tensors for this many positions: 1 MiB


def map_in_chunks(
    fn: Callable[[jax.Array], jax.Array], x: jax.Array, positions: int | None = None
) -> jax.Array:
    """``fn`` applied to groups of images of ``x`` (B, N, C) holding about ``positions``
    (default `POSITIONS_PER_CHUNK`) positions each, one group after the other; ``fn`` must
    treat images independently.

    On a CPU the wide intermediates of one group stay in the cache instead of streaming the
    whole batch's through memory. What the backward pass keeps of each group is what ``fn``'s
    VJP saves: give ``fn`` a custom VJP with small residuals (as `linear_attention`), or wrap
    it in `jax.checkpoint`. Equal groups, the last padded with zero images.
    """
    b, n = x.shape[:2]
    per_group = max(1, (positions or POSITIONS_PER_CHUNK) // n)
    if b <= per_group:
        return fn(x)
    groups = -(-b // per_group)
    size = -(-b // groups)
    padded = jnp.pad(x, ((0, groups * size - b),) + ((0, 0),) * (x.ndim - 1))
    out = jax.lax.map(fn, padded.reshape(groups, size, *x.shape[1:]))
    return out.reshape(groups * size, *out.shape[2:])[:b]


def _query_softmax(x: jax.Array, w_q: jax.Array, heads: int) -> jax.Array:
    """softmax of ``x W_q`` over each head's features: (B, N, h·d)."""
    b, n, _ = x.shape
    return nn.softmax((x @ w_q).reshape(b, n, heads, -1), axis=-1).reshape(b, n, -1)


def _key_exponentials(x: jax.Array, w_k: jax.Array) -> jax.Array:
    """``exp(k − max_n k)`` with ``k = x W_k``: the keys' softmax over positions before its sum."""
    k = x @ w_k
    return jnp.exp(k - jnp.max(k, axis=1, keepdims=True))


def _head_matrices(kx: jax.Array, wvo: jax.Array, scale: float) -> jax.Array:
    """``M_h = scale · (kᵀx)_hᵀ (W_v W_out)_h`` for every image and head, stacked: (B, h·d, C)."""
    b, c, inner = kx.shape
    heads = wvo.shape[0]
    m = jnp.einsum("bchd,hce->bhde", kx.reshape(b, c, heads, -1), wvo)
    return scale * m.reshape(b, inner, -1)


@jax.custom_vjp
def _linear_attention(x: jax.Array, w_q: jax.Array, w_k: jax.Array, wvo: jax.Array) -> jax.Array:
    return _linear_attention_fwd(x, w_q, w_k, wvo)[0]


def _linear_attention_fwd(x, w_q, w_k, wvo):
    b, n, _ = x.shape
    heads, inner = wvo.shape[0], w_q.shape[1]
    p = _query_softmax(x, w_q, heads)
    e = _key_exponentials(x, w_k)
    s = jnp.sum(e, axis=1)  # (b, h·d)
    kx = jnp.einsum("bnc,bnj->bcj", x, e) / s[:, None, :]  # kᵀx: (b, c, h·d)
    scale = 1.0 / (n * math.sqrt(inner // heads))
    m = _head_matrices(kx, wvo, scale)
    return jnp.einsum("bnj,bjc->bnc", p, m), (x, w_q, w_k, wvo, s, kx, m)


def _linear_attention_bwd(residuals, g):
    """The gradients by hand: q's softmax and the keys' exponentials are recomputed from x
    (cheaper than storing them), the small per-image matrices are kept."""
    x, w_q, w_k, wvo, s, kx, m = residuals
    b, n, c = x.shape
    heads, inner = wvo.shape[0], w_q.shape[1]
    scale = 1.0 / (n * math.sqrt(inner // heads))
    p = _query_softmax(x, w_q, heads)
    e = _key_exponentials(x, w_k)
    dm = jnp.einsum("bnj,bnc->bjc", p, g).reshape(b, heads, -1, c)
    dp = jnp.einsum("bnc,bjc->bnj", g, m).reshape(b, n, heads, -1)
    ph = p.reshape(b, n, heads, -1)
    dq = (ph * (dp - jnp.sum(ph * dp, axis=-1, keepdims=True))).reshape(b, n, inner)
    dkx = scale * jnp.einsum("bhde,hce->bchd", dm, wvo).reshape(b, c, inner)
    dwvo = scale * jnp.einsum("bchd,bhde->hce", kx.reshape(b, c, heads, -1), dm)
    da = dkx / s[:, None, :]  # through kᵀx = (xᵀe) / s: the product ...
    ds = -jnp.sum(da * kx, axis=1)  # ... and the sum
    dk = e * (jnp.einsum("bnc,bcj->bnj", x, da) + ds[:, None, :])
    dx = jnp.einsum("bnj,bcj->bnc", e, da) + dq @ w_q.T + dk @ w_k.T
    return dx, jnp.einsum("bnc,bnj->cj", x, dq), jnp.einsum("bnc,bnj->cj", x, dk), dwvo


_linear_attention.defvjp(_linear_attention_fwd, _linear_attention_bwd)


def linear_attention(x: jax.Array, w_qkv: jax.Array, w_out: jax.Array, heads: int) -> jax.Array:
    """Linear attention of images x (B, N, C) before its output bias: (B, N, C).

    Per head, ``q (kᵀ v) W_out`` with q the softmax of ``x W_q`` over each head's features
    (divided by √d), k the softmax of ``x W_k`` over the N positions, and ``v = x W_v / N``.
    Regrouping the sums keeps only q and k at the heads' full width (h·d per position):

    - ``kᵀ v = (kᵀ x) W_v / N``: the keys meet the C-channel input, never the values;
    - ``(kᵀ v) W_out = (kᵀ x) (W_v W_out) / N``: a (d × C) matrix ``M_h`` per head and image
      (`value_output_product`), so ``Σ_h q_h M_h`` comes out C wide directly.

    The keys' softmax over positions is ``e / Σ_n e`` with ``e = exp(k − max_n k)``; the sum is
    divided out of ``kᵀ x`` after the product instead of out of every ``e``. The backward pass
    is written by hand: it keeps only ``kᵀx``, the sums and ``M_h`` (a few numbers per image)
    and recomputes q and e from x.
    """
    inner = w_out.shape[0]
    wvo = value_output_product(w_qkv[:, 2 * inner :], w_out, heads)
    return _linear_attention(x, w_qkv[:, :inner], w_qkv[:, inner : 2 * inner], wvo)


class LinearAttention(nn.Module):
    """Linear attention (Shen et al. 2021): softmax over features for q, over positions for k.

    ``out = q (kᵀ v)`` per head costs O(H·W) instead of O((H·W)²); the output projection and a
    LayerNorm close it. Computed by `linear_attention` (no values, no per-head outputs) in
    groups of images (`map_in_chunks`); the parameters are those of the 1×1 convs of the
    formula (``to_qkv``, ``to_out``).
    """

    heads: int = 4
    dim_head: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        inner = self.heads * self.dim_head
        w_qkv, _ = Projection(3 * inner, use_bias=False, name="to_qkv")(c)
        w_out, bias = Projection(c, name="to_out")(inner)
        out = map_in_chunks(
            lambda xs: linear_attention(xs, w_qkv, w_out, self.heads), x.reshape(b, hh * ww, c)
        )
        out = (out + bias).reshape(b, hh, ww, c)
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
