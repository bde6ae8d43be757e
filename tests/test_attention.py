"""The attention layers compute the formulas of `tests/attention_oracle.py`, rearranged.

The library never forms the values or the heads' outputs (see `LinearAttention`); these tests
hold it to the direct transcription: the same parameter tree and initial values, and outputs and
gradients equal to float32 precision, at every place the U-Net uses attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib.models import Attention, LinearAttention, activation_shapes, layers, make_model
from tests.attention_oracle import DirectAttention, DirectLinearAttention

TOLERANCE = 1e-5  # ‖library − oracle‖ / ‖oracle‖ per output and per gradient leaf

ATTENTION_INPUTS = {  # block name → (H, W, C) of its input, read off the classical U-Net
    name: shape[1:]
    for name, shape in activation_shapes(make_model("classical")).items()
    if name.endswith("attnblock")
}


def relative_error(new: jax.Array, old: jax.Array) -> float:
    return float(jnp.linalg.norm(new - old) / jnp.linalg.norm(old))


def outputs_and_gradients(module, params, x):
    """The module's output and the gradients of a generic scalar of it (params and input)."""

    def loss(p, x):
        return jnp.sum(jnp.sin(3.0 * module.apply({"params": p}, x)))

    out = jax.jit(module.apply)({"params": params}, x)
    return out, jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)


def pair(name: str):
    """(library module, oracle module) for an attention block of the U-Net."""
    if name == "mid.attnblock":
        return Attention(), DirectAttention()
    return LinearAttention(), DirectLinearAttention()


def test_the_unet_uses_attention_at_four_resolutions_and_the_vertex():
    sizes = {shape[0] for shape in ATTENTION_INPUTS.values()}
    assert sizes == {28, 14, 7, 2} and ATTENTION_INPUTS["mid.attnblock"] == (2, 2, 40)
    assert len(ATTENTION_INPUTS) == 9


@pytest.mark.parametrize("name", sorted(ATTENTION_INPUTS))
def test_attention_initialises_the_same_parameters_as_the_direct_formula(name):
    new, old = pair(name)
    x = jnp.zeros((1, *ATTENTION_INPUTS[name]))
    p_new = new.init(jax.random.key(3), x)["params"]
    p_old = old.init(jax.random.key(3), x)["params"]
    assert jax.tree.structure(p_new) == jax.tree.structure(p_old)
    for a, b in zip(jax.tree.leaves(p_new), jax.tree.leaves(p_old)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(ATTENTION_INPUTS))
def test_attention_matches_the_direct_formula_in_values_and_gradients(name):
    new, old = pair(name)
    x = jax.random.normal(jax.random.key(0), (4, *ATTENTION_INPUTS[name]))
    params = old.init(jax.random.key(1), x)["params"]
    # trained weights are not at their initial values: a nonzero output bias and norm scale
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(2), p.shape), params)
    out_new, grads_new = outputs_and_gradients(new, params, x)
    out_old, grads_old = outputs_and_gradients(old, params, x)
    assert relative_error(out_new, out_old) <= TOLERANCE
    leaves = jax.tree_util.tree_leaves_with_path(grads_old)
    for (path, g_old), g_new in zip(leaves, jax.tree.leaves(grads_new)):
        assert relative_error(g_new, g_old) <= TOLERANCE, jax.tree_util.keystr(path)


def test_the_unet_is_unchanged_by_the_rearranged_attention(monkeypatch):
    unet = make_model("classical")
    x = jax.random.normal(jax.random.key(0), (2, 28, 28, 1))
    t = jnp.array([10, 900])
    params = jax.jit(unet.init)(jax.random.key(1), x, t)["params"]

    def loss(p):
        return jnp.sum(jnp.sin(3.0 * unet.apply({"params": p}, x, t)))

    new = jax.jit(jax.value_and_grad(loss))(params)
    monkeypatch.setattr(layers, "LinearAttention", DirectLinearAttention)
    monkeypatch.setattr(layers, "Attention", DirectAttention)
    assert jax.tree.structure(jax.eval_shape(unet.init, jax.random.key(1), x, t)["params"]) == (
        jax.tree.structure(params)
    )
    old = jax.jit(jax.value_and_grad(loss))(params)
    assert relative_error(new[0], old[0]) <= TOLERANCE
    # A conv followed by GroupNorm has a bias whose gradient is 0 (the norm removes it): both
    # computations leave round-off there, so such leaves are held to round-off of the whole.
    zero = 1e-5 * float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(old[1]))))
    leaves = jax.tree_util.tree_leaves_with_path(old[1])
    for (path, g_old), g_new in zip(leaves, jax.tree.leaves(new[1])):
        if jnp.linalg.norm(g_old) < zero:
            assert jnp.linalg.norm(g_new) < zero, jax.tree_util.keystr(path)
        else:
            assert relative_error(g_new, g_old) <= TOLERANCE, jax.tree_util.keystr(path)
