"""The U-Net and its hybrids: parameter counts, shapes, quantum blocks, the released-code audit.

Whole models are only traced (``jax.eval_shape``: no compile, no compute); everything that runs
or differentiates circuits does so on single blocks with small inputs, so the file stays fast.
"""

from __future__ import annotations

import dataclasses
import inspect

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib.circuits import make_ansatz
from qhd_lib.errors import ConfigError
from qhd_lib.models import (
    MODEL_NAMES,
    PAPER_PARAM_COUNTS,
    FullQResNetBlock,
    QResNetBlock,
    QuanResNetBlock,
    ReleasedFullQResNetBlock,
    ReleasedQResNetBlock,
    ReleasedQuanResNetBlock,
    ResnetBlock,
    UNet,
    activation_shapes,
    assemble_patches,
    circuit_gradients,
    count_params,
    dummy_inputs,
    extract_patches,
    make_model,
    model_config,
    param_shapes,
    patch_to_qubits,
    quanvolution,
    qubits_to_patch,
    valid_patch_strides,
)
from qhd_lib.models.quantum import QuanvLayer, QVertexLayer, vertex_circuits

KEY = jax.random.key(0)


def identity_circuit(ansatz, inputs, theta):
    """A stand-in executor that returns its inputs: pins down where outputs go back to."""
    return inputs


# --- whole models (traced only) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("classical", 483_321),
        ("1hqconv", 475_329),
        ("7hqconv", 440_985),
        ("fullhqconv", 429_993),
        ("1fqconv", 475_329 - 4 * 12),  # FQConv: 72 instead of 84 parameters per circuit
        ("7fqconv", 440_985 - 4 * 7 * 12),
        ("fullfqconv", 429_993 - 4 * 13 * 12),
        ("quanvunet", 473_817),  # the paper's description; its Table says 474 293 (chapter 6)
    ],
)
def test_parameter_counts_match_the_paper(name, expected):
    assert count_params(param_shapes(make_model(name))) == expected
    if name in PAPER_PARAM_COUNTS and name != "quanvunet":
        assert expected == PAPER_PARAM_COUNTS[name]


def test_released_code_keeps_the_parameter_counts():
    for name in ("7hqconv", "fullhqconv"):
        released = param_shapes(make_model(name, released_code=True))
        assert count_params(released) == PAPER_PARAM_COUNTS[name]


def test_shapes_at_every_level():
    shapes = activation_shapes(make_model("quanvunet"), batch=2)
    expected = {
        "init_conv": (2, 28, 28, 10),
        "down_0.resblock_1": (2, 28, 28, 10),
        "down_0.downsample": (2, 14, 14, 10),
        "down_1.resblock_0": (2, 14, 14, 10),
        "down_1.downsample": (2, 7, 7, 20),
        "down_2.downsample": (2, 2, 2, 30),
        "down_3.attnblock": (2, 2, 2, 30),
        "down_to_mid.conv": (2, 2, 2, 40),
        "mid.resblock_0": (2, 2, 2, 40),
        "mid.attnblock": (2, 2, 2, 40),
        "mid.resblock_1": (2, 2, 2, 40),
        "up_3.upsample": (2, 7, 7, 30),
        "up_2.upsample": (2, 14, 14, 20),
        "up_1.upsample": (2, 28, 28, 10),
        "final.resblock": (2, 28, 28, 10),
        "final.conv": (2, 28, 28, 1),
    }
    assert {k: shapes[k] for k in expected} == expected
    assert list(shapes)[:3] == ["time_mlp", "init_conv", "down_0.resblock_0"]  # call order


def test_hybrids_are_the_same_unet_with_swapped_blocks():
    classical = param_shapes(make_model("classical"))
    hybrid = param_shapes(make_model("quanvunet"))
    swapped = {"mid.resblock_0", "mid.resblock_1", "down_1.resblock_0", "down_1.resblock_1"}
    assert set(classical) == set(hybrid)
    for name in set(classical) - swapped:
        assert jax.tree_util.tree_map(np.shape, classical[name]) == jax.tree_util.tree_map(
            np.shape, hybrid[name]
        ), name
    assert "theta" in hybrid["mid.resblock_0"]["conv_0"]
    assert "theta" in hybrid["down_1.resblock_1"]["conv_1"]


def test_model_names_and_configs():
    assert MODEL_NAMES == (
        "classical",
        "1hqconv",
        "7hqconv",
        "fullhqconv",
        "1fqconv",
        "7fqconv",
        "fullfqconv",
        "quanvunet",
    )
    assert model_config("quanvunet").quanv_level == 1
    assert model_config("7hqconv").q == 7
    assert model_config("1hqconv", released_code=True).circuit == "released_hqconv"
    assert model_config("1hqconv").circuit == "hqconv"
    assert isinstance(make_model("classical"), UNet)


# --- bad input -------------------------------------------------------------------------------


def test_unknown_model_name_is_rejected_naming_the_models():
    with pytest.raises(ConfigError, match="unknown model 'unet'; choose one of classical, 1hqconv"):
        make_model("unet")


def test_image_size_is_not_a_model_option():
    with pytest.raises(ConfigError, match=r"unknown ModelConfig field\(s\) \['image_size'\]"):
        model_config("classical", image_size=32)


@pytest.mark.parametrize("q", [0, 14])
def test_q_outside_1_to_13_is_rejected(q):
    with pytest.raises(ValueError, match="outside 1..13"):
        make_model("1hqconv", q=q)


def test_wrong_image_size_is_rejected():
    model = make_model("classical")
    with pytest.raises(ValueError, match=r"\(B, 28, 28, 1\)"):
        jax.eval_shape(model.init, KEY, jnp.zeros((1, 32, 32, 1)), jnp.zeros((1,), jnp.int32))


def test_full_vertex_needs_3q_or_3q_plus_1_channels():
    block = FullQResNetBlock(features=41, groups=1)
    x, temb = jnp.zeros((1, 2, 2, 41)), jnp.zeros((1, 8))
    with pytest.raises(ValueError, match="C = 3q or 3q \\+ 1"):
        jax.eval_shape(block.init, KEY, x, temb)


def test_vertex_block_outside_the_vertex_is_rejected():
    block = QResNetBlock(features=10, q=1)
    with pytest.raises(ValueError, match="2×2 vertex, got a 4×4 map"):
        jax.eval_shape(block.init, KEY, jnp.zeros((1, 4, 4, 10)), jnp.zeros((1, 8)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(patch_stride=3), "patch stride 3 is not supported; use 1 .* or 2"),
        (dict(patch_stride=0), "patch stride 0 is not supported; use 1 .* or 2"),
        (dict(ansatz="qcnn"), "unknown ansatz 'qcnn'; use one of hqconv, fqconv"),
        (dict(layers=0), "layers must be a positive integer"),
        (dict(executor="qiskit"), "unknown executor 'qiskit'; use one of jax, pennylane"),
        (dict(quanv_level=4), "not an encoder level"),
        (dict(quanv_level=2), r"level 2 \(7×7\) outside every 2×2 patch; use patch_stride=1"),
        (dict(dim_mults=(1, 2, 4)), "quantum vertex needs the 2×2 vertex"),
    ],
)
def test_bad_configurations_are_rejected(overrides, message):
    with pytest.raises(ConfigError, match=message):
        model_config("quanvunet", **overrides)


def test_released_code_is_only_modelled_for_hqconv():
    with pytest.raises(ValueError, match="released HQConv"):
        make_model("1fqconv", released_code=True)


# --- patches and circuits in place of convs --------------------------------------------------


def test_patches_are_flattened_channel_major():
    patch = jnp.arange(12.0).reshape(2, 2, 3)  # value = 3·(2·row + col) + channel
    qubits = patch_to_qubits(patch)
    for c in range(3):
        for p in range(4):
            assert qubits[4 * c + p] == patch[p // 2, p % 2, c]
    np.testing.assert_array_equal(qubits_to_patch(qubits, 3), patch)


def test_vertex_groups_go_back_to_their_channels():
    x = jax.random.normal(KEY, (2, 2, 2, 6))
    out = vertex_circuits(identity_circuit, make_ansatz("hqconv"), x, jnp.zeros((2, 84)))
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("patch_stride, size", [(2, 6), (1, 5)])
def test_quanvolution_puts_outputs_back_where_the_patch_came_from(patch_stride, size):
    x = jax.random.normal(KEY, (2, size, size, 3))
    out = quanvolution(identity_circuit, make_ansatz("hqconv"), x, jnp.zeros(84), patch_stride)
    np.testing.assert_allclose(out, x, rtol=1e-6)


def test_overlapping_patches_are_averaged():
    x = jax.random.normal(KEY, (1, 3, 3, 3))
    patches = extract_patches(x, 1)  # (1, 2, 2, 2, 2, 3): four overlapping patches
    sums = patches.sum(axis=(3, 4, 5), keepdims=True) * jnp.ones_like(patches)
    out = assemble_patches(sums, (3, 3), 1)
    s = sums[0, :, :, 0, 0, 0]
    np.testing.assert_allclose(out[0, 0, 0, 0], s[0, 0], rtol=1e-6)  # corner: one patch
    np.testing.assert_allclose(out[0, 0, 1, 0], (s[0, 0] + s[0, 1]) / 2, rtol=1e-6)  # edge
    np.testing.assert_allclose(out[0, 1, 1, 0], s.mean(), rtol=1e-6)  # centre: four patches


def test_patch_stride_2_needs_an_even_map():
    assert valid_patch_strides((14, 14)) == (1, 2)
    assert valid_patch_strides((7, 7)) == (1,)
    assert valid_patch_strides((14, 7)) == (1,)


@pytest.mark.parametrize("size", [7, 5])
def test_quanvolution_with_patch_stride_2_on_an_odd_map_is_rejected(size):
    x = jnp.zeros((1, size, size, 3))
    with pytest.raises(
        ConfigError, match=f"{size}×{size} map outside every 2×2 patch; use patch stride 1"
    ):
        quanvolution(identity_circuit, make_ansatz("hqconv"), x, jnp.zeros(84), 2)


@pytest.mark.parametrize("patch_stride", [0, 3, -1])
def test_unsupported_patch_strides_are_rejected_naming_1_and_2(patch_stride):
    with pytest.raises(ConfigError, match=f"patch stride {patch_stride} is not supported; use 1"):
        extract_patches(jnp.zeros((1, 6, 6, 3)), patch_stride)


def test_quanresnet_at_the_odd_level_needs_patch_stride_1():
    x, temb = jnp.zeros((1, 7, 7, 20)), jnp.zeros((1, 8))
    with pytest.raises(ConfigError, match="7×7 map outside every 2×2 patch"):
        jax.eval_shape(QuanResNetBlock(features=20, layers=1).init, KEY, x, temb)
    shapes = activation_shapes(make_model("quanvunet", quanv_level=2, patch_stride=1))
    assert shapes["down_2.resblock_1"] == (1, 7, 7, 20)


# --- gradients through the quantum blocks (small blocks, one circuit layer) -------------------


def block_gradients(block: nn.Module, x: jax.Array) -> dict[str, np.ndarray]:
    """Gradients of a scalar of the block's output w.r.t. its circuit parameters."""
    return circuit_gradients(block, x, jax.random.normal(jax.random.key(1), (x.shape[0], 8)))


def vertex_input(channels: int) -> jax.Array:
    return jax.random.uniform(jax.random.key(2), (2, 2, 2, channels), minval=-2.0, maxval=2.0)


def test_every_circuit_parameter_gets_a_gradient():
    grads = {
        **block_gradients(QResNetBlock(features=10, q=2, layers=1), vertex_input(10)),
        **{
            f"full/{k}": v
            for k, v in block_gradients(
                FullQResNetBlock(features=10, layers=1), vertex_input(10)
            ).items()
        },
        **{
            f"quanv/{k}": v
            for k, v in block_gradients(
                QuanResNetBlock(features=5, groups=5, layers=1),
                jax.random.uniform(jax.random.key(3), (2, 4, 4, 5), minval=-2.0, maxval=2.0),
            ).items()
        },
    }
    assert len(grads) == 2 + 4 + 2  # theta ×2; theta, tail_theta ×2; theta ×2
    for name, g in grads.items():
        assert np.all(g != 0), f"{name} has zero-gradient parameters"


RELEASED_CODE_FLAGS = {"drop_second_circuits", "second_reads_input", "share_tail", "released_code"}


@pytest.mark.parametrize(
    "block",
    [ResnetBlock, QResNetBlock, FullQResNetBlock, QuanResNetBlock, QVertexLayer, QuanvLayer],
)
def test_paper_blocks_carry_no_released_code_switches(block):
    assert not {f.name for f in dataclasses.fields(block)} & RELEASED_CODE_FLAGS
    if issubclass(block, ResnetBlock):
        assert list(inspect.signature(block.spatial_layer).parameters) == ["self", "index", "h"]


def block_classes(model: UNet) -> dict[str, type]:
    """The class of every top-level block the model builds, by name (traced, no compute)."""
    classes: dict[str, type] = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module.parent, UNet):
            classes[context.module.name] = type(context.module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        param_shapes(model)
    return classes


@pytest.mark.parametrize("name", ["1hqconv", "fullhqconv", "quanvunet"])
def test_released_code_swaps_in_the_blocks_of_the_released_module(name):
    paper = block_classes(make_model(name))
    released = block_classes(make_model(name, released_code=True))
    assert paper.keys() == released.keys()
    swapped = {k for k in paper if paper[k] is not released[k]}
    quantum = {k for k, cls in paper.items() if cls.__module__ == "qhd_lib.models.quantum"}
    assert swapped == quantum
    assert swapped  # every hybrid has quantum blocks
    for k in swapped:
        assert released[k].__module__ == "qhd_lib.models.released"
        assert issubclass(released[k], paper[k])


def test_released_code_leaves_parameters_without_gradient():
    released = make_ansatz("released_hqconv", layers=1)
    unused = np.setdiff1d(np.arange(released.n_params), released.used_params)
    assert len(unused) == 24  # difference 1: 4 of 28 parameters used
    partial = block_gradients(
        ReleasedQResNetBlock(features=10, q=2, layers=1, ansatz="released_hqconv"),
        vertex_input(10),
    )
    assert np.all(partial["conv_1/theta"] == 0)  # difference 2: outputs dropped
    assert np.all(partial["conv_0/theta"][:, unused] == 0)
    assert np.all(partial["conv_0/theta"][:, list(released.used_params)] != 0)
    full = block_gradients(ReleasedFullQResNetBlock(features=10, layers=1), vertex_input(10))
    assert np.all(full["conv_1/tail_theta"] == 0)  # difference 5: shared 4-qubit circuit
    assert np.all(full["conv_0/tail_theta"] != 0)


def test_released_second_quanvolution_reads_the_block_input():
    seen = {}

    def record(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and context.module.name == "conv_1":
            seen["quantum_in"] = args[0]
        return next_fun(*args, **kwargs)

    x = jax.random.normal(KEY, (1, 4, 4, 5))
    for block_class, released in ((QuanResNetBlock, False), (ReleasedQuanResNetBlock, True)):
        block = block_class(features=5, groups=5, layers=1)
        with nn.intercept_methods(record):
            block.init(KEY, x, jnp.zeros((1, 8)))
        assert np.allclose(seen["quantum_in"][..., :3], x[..., :3]) == released
        assert not np.allclose(seen["quantum_in"][..., 3:], x[..., 3:])  # the conv reads h


def test_pennylane_executor_matches_the_fast_simulator():
    x, temb = vertex_input(4)[:1], jnp.ones((1, 8))
    fast = QResNetBlock(features=4, q=1, groups=1, layers=1)
    params = fast.init(KEY, x, temb)["params"]
    reference = QResNetBlock(features=4, q=1, groups=1, layers=1, executor="pennylane")
    np.testing.assert_allclose(
        reference.apply({"params": params}, x, temb),
        fast.apply({"params": params}, x, temb),
        atol=1e-5,
    )


@pytest.mark.parametrize("name", ["7hqconv", "fullhqconv", "quanvunet"])
def test_circuit_runs_count_what_a_forward_pass_executes(monkeypatch, name) -> None:
    """A counting executor (not vmapped, like PennyLane) sees exactly ``circuit_runs`` circuits
    per image, by qubit count."""
    from qhd_lib.models import quantum

    seen: dict[int, int] = {}

    def counting(ansatz, inputs, theta):
        seen[ansatz.n_qubits] = seen.get(ansatz.n_qubits, 0) + int(np.prod(inputs.shape[:-1]))
        return jnp.zeros((*inputs.shape[:-1], ansatz.n_qubits))

    monkeypatch.setattr(quantum, "simulator", lambda executor: counting)
    config = model_config(name)
    model = UNet(config)
    x, t = dummy_inputs(config, batch=2)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t))
    seen.clear()  # count one apply, not the init
    model.apply(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params), x, t)
    assert {k: v // 2 for k, v in seen.items()} == config.circuit_runs()
