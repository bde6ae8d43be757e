"""The ansätze as gate lists, the fast simulator against PennyLane, and the shift rules."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qhd_lib.circuits import Gate, init_params, make_ansatz, plan_cost, simulate
from qhd_lib.circuits.gradients import parameter_shift_gradient
from qhd_lib.circuits.simulator import (
    NetworkPlan,
    _chain_forward,
    _chain_marginals,
    compile_plan,
    encode,
    plan_network,
    run_dense,
    run_network,
)
from qhd_lib.errors import ConfigError

_sim = jax.jit(simulate, static_argnums=0)

CASES = [
    ("hqconv", {}),
    ("hqconv", {"stride": 2, "layers": 1}),
    ("hqconv", {"stride": 3, "layers": 1}),
    ("hqconv", {"layers": 4}),
    ("hqconv", {"channels": 4, "layers": 2}),
    ("fqconv", {"layers": 2}),
    ("fqconv", {"stride": 8, "layers": 1}),
    ("fqconv", {"stride": 1, "layers": 1}),
    ("basic_entangler", {"channels": 1, "layers": 4}),
    ("released_hqconv", {"layers": 2}),
]


def _inputs(ansatz, batch=3, seed=0):
    return jax.random.uniform(jax.random.key(seed), (batch, ansatz.n_qubits), minval=-3, maxval=3)


def _theta(ansatz, seed=1):
    return init_params(jax.random.key(seed), ansatz)


@pytest.fixture(scope="module")
def reference():
    pytest.importorskip("pennylane")
    from qhd_lib.circuits import reference

    return reference


@pytest.mark.parametrize("name,kwargs", CASES)
def test_simulator_matches_pennylane_values_and_gradients(reference, name, kwargs):
    ansatz = make_ansatz(name, **kwargs)
    x, theta = _inputs(ansatz), _theta(ansatz)
    weights = jax.random.normal(jax.random.key(2), (3, ansatz.n_qubits))

    np.testing.assert_allclose(
        _sim(ansatz, x, theta), reference.simulate_reference(ansatz, x, theta), atol=1e-5
    )

    def loss(sim, x, theta):
        return jnp.sum(weights * sim(ansatz, x, theta))

    fast = jax.jit(jax.grad(lambda x, t: loss(simulate, x, t), argnums=(0, 1)))(x, theta)
    oracle = reference.reference_gradients(ansatz, x, theta, weights)
    for got, want in zip(fast, oracle):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_basic_entangler_is_pennylanes_template(reference):
    import pennylane as qml

    ansatz = make_ansatz("basic_entangler", channels=1, layers=4)
    x, theta = _inputs(ansatz), _theta(ansatz)

    @qml.qnode(qml.device("default.qubit", wires=4))
    def template(inputs, weights):
        qml.AngleEmbedding(inputs, wires=range(4))
        qml.BasicEntanglerLayers(weights, wires=range(4))
        return [qml.expval(qml.PauliZ(q)) for q in range(4)]

    want = np.array([template(np.asarray(xi), np.asarray(theta).reshape(4, 4)) for xi in x])
    np.testing.assert_allclose(_sim(ansatz, x, theta), want, atol=1e-5)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("hqconv", {"layers": 1}),
        ("fqconv", {"layers": 1}),
        ("basic_entangler", {"channels": 1, "layers": 2}),
        ("released_hqconv", {"layers": 1}),
    ],
)
def test_parameter_shift_equals_autodiff(name, kwargs):
    ansatz = make_ansatz(name, **kwargs)
    x, theta = _inputs(ansatz, batch=2), _theta(ansatz)
    autodiff = jax.jit(jax.jacobian(lambda t: simulate(ansatz, x, t)))(theta)
    np.testing.assert_allclose(parameter_shift_gradient(ansatz, x, theta), autodiff, atol=2e-5)
    if name == "hqconv":  # eq. 10's two terms are not enough for controlled rotations
        two_term = parameter_shift_gradient(ansatz, x, theta, two_term_only=True)
        assert np.abs(two_term - autodiff).max() > 1e-2


def test_parameter_counts_per_layer():
    assert make_ansatz("hqconv").n_params == 3 * 28
    assert make_ansatz("fqconv").n_params == 3 * 24
    assert make_ansatz("basic_entangler", channels=1, layers=4).n_params == 16
    released = make_ansatz("released_hqconv")
    assert released.n_params == 3 * 28
    assert released.used_params == tuple(28 * layer + k for layer in range(3) for k in range(4))
    assert len(make_ansatz("hqconv").used_params) == 84


def test_hqconv_pairs_follow_the_text_and_the_released_order():
    layer = make_ansatz("hqconv", layers=1).gates
    assert [g.kind for g in layer[:2]] == ["crz", "crx"]
    pairs = [(g.control, g.target) for g in layer[::2]]
    assert pairs == [
        (11, 8),
        (10, 11),
        (9, 10),
        (8, 9),  # A block of channel 2: p = 3, 2, 1, 0
        (7, 4),
        (6, 7),
        (5, 6),
        (4, 5),  # channel 1
        (3, 0),
        (2, 3),
        (1, 2),
        (0, 1),  # channel 0
        (4, 8),
        (0, 4),  # B blocks: first qubits, control in channel c
    ]
    assert [g.param for g in layer] == list(range(28))


def test_hqconv_stride_sets_intra_channel_distance():
    pairs = [(g.control, g.target) for g in make_ansatz("hqconv", stride=2, layers=1).gates[:8:2]]
    assert pairs == [(11, 9), (10, 8), (9, 11), (8, 10)]


def test_fqconv_pairs_link_the_same_pixel_of_the_next_channel():
    layer = make_ansatz("fqconv", layers=1).gates
    assert [g.kind for g in layer[:8]] == ["crz"] * 4 + ["crx"] * 4
    pairs = [(g.control, g.target) for g in layer]
    assert pairs[:4] == [(11, 3), (10, 2), (9, 1), (8, 0)]  # channel 2 -> channel 0
    assert pairs[8:12] == [(7, 11), (6, 10), (5, 9), (4, 8)]
    assert pairs[16:20] == [(3, 7), (2, 6), (1, 5), (0, 4)]
    assert all(c % 4 == t % 4 for c, t in pairs)


def test_fqconv_splits_into_pixel_columns():
    plan = compile_plan(make_ansatz("fqconv"))
    assert sorted(p.qubits for p in plan) == [(0, 4, 8), (1, 5, 9), (2, 6, 10), (3, 7, 11)]


def test_hqconv_runs_as_a_network_of_channels():
    (plan,) = compile_plan(make_ansatz("hqconv"))
    assert isinstance(plan, NetworkPlan)
    assert [site.qubits for site in plan.sites] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]


def test_hqconv_channels_form_a_chain_with_one_bond_per_layer_and_link():
    (plan,) = compile_plan(make_ansatz("hqconv", layers=3))
    (first_left, first_right), (middle_left, middle_right), (last_left, last_right) = plan.chain
    assert (first_left, last_right) == ((), ())
    assert len(first_right) == len(middle_left) == len(middle_right) == len(last_left) == 3
    assert set(first_right) == set(middle_left) and set(middle_right) == set(last_left)


def test_a_chain_with_bonds_both_ways_matches_the_dense_simulation():
    ansatz = make_ansatz("fqconv", channels=2, stride=1, layers=1)
    (dense,) = compile_plan(ansatz)
    site_of = {q: q // ansatz.pixels for q in range(ansatz.n_qubits)}
    network, _ = plan_network(list(ansatz.gates), dense.qubits, site_of, ansatz.n_qubits)
    assert all({op[0] for op in site.ops} >= {"copy", "add"} for site in network.sites)
    assert network.chain is not None
    single, angles = encode(_inputs(ansatz)), ansatz.angle_scale * _theta(ansatz)
    np.testing.assert_allclose(
        run_network(network, single, angles), run_dense(dense, single, angles), atol=1e-5
    )


def test_a_ring_of_channels_is_contracted_whole():
    (plan,) = [
        p
        for p in compile_plan(make_ansatz("fqconv", stride=1, layers=1))
        if isinstance(p, NetworkPlan)
    ]
    assert plan.chain is None


def test_hand_written_chain_backward_matches_autodiff_of_the_forward():
    shapes = ((1, 16, 8), (8, 16, 8), (8, 16, 2), (2, 4, 1))
    keys = iter(jax.random.split(jax.random.key(3), 2 * len(shapes)))
    products = tuple(jax.random.normal(next(keys), (5, s)) for _, s, _ in shapes)
    kernels = tuple(
        jax.random.normal(next(keys), (s, 2 * bond_left * s * r)) for bond_left, s, r in shapes
    )
    weights = [jax.random.normal(jax.random.key(4), (5, s)) for _, s, _ in shapes]

    def loss(marginals, products, kernels):
        return sum(jnp.sum(w * jnp.sin(p)) for w, p in zip(weights, marginals(products, kernels)))

    def custom(p, k):
        return _chain_marginals(shapes, p, k)

    def autodiff(p, k):
        return _chain_forward(shapes, p, k)[0]

    got = jax.grad(lambda p, k: loss(custom, p, k), argnums=(0, 1))(products, kernels)
    want = jax.grad(lambda p, k: loss(autodiff, p, k), argnums=(0, 1))(products, kernels)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4 * float(jnp.max(jnp.abs(w))))


def _hqconv_multiply_adds_by_hand(chunked: bool) -> tuple[int, int]:
    """Real multiply-adds per input of 3-layer HQConv, forward and backward, from the chain's
    shapes: sites (1, 16, 8), (8, 16, 8), (8, 16, 1); a complex multiply-add is 4 real ones."""
    d, s = 8, 16  # bond (3 layers: 2^3) and site (4 qubits) dimensions
    sites = 2 * s * (s * d + d * s * d + d * s)  # real products (16) @ real kernels (16, 2n)
    forward_chain = (
        d * s * d  # right environment of the last site
        + d * s * d * d  # middle: T·R
        + d * s * d * d  # middle: right environment
        + s * d * d  # first: T·R
        + d * s * d  # first: left environment
        + 2 * d * d * s * d  # middle: Lᵀ·(T·R) and Lᵀ·T
        + d * d * s * d  # middle: left environment
        + d * d * s  # last: Lᵀ·T
    )
    expval = 3 * s * 4
    backward_chain = (
        d * s * d
        + 2 * d * s * d * d  # RG sweep: last, middle (T·RG, environment)
        + d * s * d
        + 2 * s * d * d  # first: LG environment, V·R, (Lᵀ·T)·RG
        + 4 * d * d * s * d  # middle: LGᵀ·T, environment, V·R, (Lᵀ·T)·RG
        + d * d * s  # last: LGᵀ·T
    )
    rebuilt = sites + 4 * (d * s * d * d + d * d * s * d + d * d * s)  # T, T·R, Lᵀ·T
    forward = sites + 4 * forward_chain + expval
    backward = 2 * sites + 4 * backward_chain + expval + (rebuilt if chunked else 0)
    return forward, backward


@pytest.mark.parametrize("batch", [128, 6272])
def test_cost_model_counts_hqconv_multiply_adds_like_a_count_by_hand(batch):
    cost = plan_cost(make_ansatz("hqconv"), batch)
    inputs = cost.chunks * cost.chunk
    assert (cost.chunks, cost.chunk) == ((1, 128) if batch == 128 else (25, 251))
    forward, backward = _hqconv_multiply_adds_by_hand(chunked=cost.chunks > 1)
    assert sum(c.real_macs for c in cost.forward_per_input) == forward * inputs
    assert sum(c.real_macs for c in cost.backward_per_input) == backward * inputs


def test_hqconv_contractions_are_plain_batched_matrix_products():
    cost = plan_cost(make_ansatz("hqconv"), 6272)
    for c in cost.forward_per_input + cost.backward_per_input:
        (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = c.dimension_numbers
        assert len(lhs_contract) == len(rhs_contract) == 1, c
        assert lhs_batch == rhs_batch == ((0,) if len(c.lhs) == 3 else ()), c


_HLO_VALUE = re.compile(r"%([\w.\-]+) = \w+\[([\d,]*)\]")
_HLO_DOT = re.compile(r"= \w+\[([\d,]*)\]\S* dot\(%([\w.\-]+), .*lhs_contracting_dims=\{([\d,]*)\}")


def _xla_dot_multiply_adds(fn, *shapes) -> int:
    """Multiply-adds (complex counted once) of every dot in the optimized HLO XLA runs."""
    text = jax.jit(fn).lower(*shapes).compile().as_text()
    dims = {m[1]: [int(d) for d in m[2].split(",") if d] for m in _HLO_VALUE.finditer(text)}
    total = 0
    for out, lhs, contracting in _HLO_DOT.findall(text):
        k = math.prod(dims[lhs][int(a)] for a in contracting.split(",") if a)
        total += math.prod(int(d) for d in out.split(",") if d) * k
    return total


@pytest.mark.parametrize(
    "name,kwargs,chunk",
    [
        ("hqconv", {}, None),
        ("hqconv", {}, 16),
        ("hqconv", {"channels": 4, "layers": 2}, None),
    ],
)
def test_cost_model_covers_every_product_xla_runs(monkeypatch, name, kwargs, chunk):
    # XLA's own cost_analysis() is no check here: its flops count a complex multiply-add as 2
    # like a real one and include the elementwise work (13 % above the products for HQConv),
    # so the dots of the optimized program are counted one by one instead. Two batch sizes
    # cancel the θ-dependent products (which XLA may hoist out of the chunks' loop).
    from qhd_lib.circuits import simulator

    if chunk is not None:  # two chunks per call, forward and backward in separate loops
        monkeypatch.setattr(simulator, "CHUNK", chunk)
    ansatz = make_ansatz(name, **kwargs)
    sizes = (12, 16) if chunk is None else (2 * chunk - 6, 2 * chunk)
    theta = jax.ShapeDtypeStruct((ansatz.n_params,), jnp.float32)

    def forward(x, t):
        return simulate(ansatz, x, t)

    both = jax.grad(lambda x, t: jnp.sum(jnp.sin(simulate(ansatz, x, t))), argnums=(0, 1))
    counted, modelled = [], []
    for n in sizes:
        x = jax.ShapeDtypeStruct((n, ansatz.n_qubits), jnp.float32)
        counted.append([_xla_dot_multiply_adds(f, x, theta) for f in (forward, both)])
        cost = plan_cost(ansatz, n)
        macs = [
            sum(c.count // cost.chunks * math.prod(c.shape) for c in contractions)
            for contractions in (
                cost.forward_per_input,
                cost.forward_per_input + cost.backward_per_input,
            )
        ]
        modelled.append([m // cost.chunk for m in macs] + [cost.chunk])
    (f0, b0), (f1, b1) = counted
    (mf0, mb0, c0), (mf1, mb1, c1) = modelled
    assert (f1 - f0) / (c1 - c0) == mf0 == mf1  # per input, as XLA runs one chunk
    assert (b1 - b0) / (c1 - c0) == mb0 == mb1


def test_released_hqconv_applies_only_b_blocks_on_mixed_channels():
    ansatz = make_ansatz("released_hqconv", layers=1)
    assert [(g.kind, g.control, g.target, g.param) for g in ansatz.gates] == [
        ("crz", 5, 10, 0),
        ("crx", 5, 10, 1),
        ("crz", 0, 5, 2),
        ("crx", 0, 5, 3),
    ]
    x, theta = _inputs(ansatz), _theta(ansatz)
    grad = jax.jit(jax.grad(lambda t: jnp.sum(simulate(ansatz, x, t))))(theta)
    assert np.all(grad[4:] == 0) and np.all(grad[:4] != 0)
    untouched = [q for q in range(12) if q not in (0, 5, 10)]
    np.testing.assert_allclose(
        _sim(ansatz, x, theta)[:, untouched], np.cos(x[:, untouched]), atol=1e-6
    )


def test_simulate_keeps_leading_axes_and_jits():
    ansatz = make_ansatz("fqconv", layers=1)
    x = jnp.zeros((2, 5, 12))
    out = jax.jit(simulate, static_argnums=0)(ansatz, x, _theta(ansatz))
    assert out.shape == (2, 5, 12)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)  # |0...0> is left alone by controlled gates


def test_big_batches_are_chunked_without_changing_values(monkeypatch):
    from qhd_lib.circuits import simulator

    ansatz = make_ansatz("fqconv", layers=1)
    x, theta = _inputs(ansatz, batch=10), _theta(ansatz)
    whole = simulate(ansatz, x, theta)
    for chunk in (3, 4):  # 4 chunks of 3 (pads 2), 3 chunks of 4 (pads 2)
        monkeypatch.setattr(simulator, "CHUNK", chunk)
        np.testing.assert_allclose(simulate(ansatz, x, theta), whole, atol=1e-6)


def test_chunks_keep_the_largest_tensor_within_the_cache_budget():
    from qhd_lib.circuits.simulator import CHUNK, CHUNK_BYTES, chunk_limit

    assert chunk_limit(make_ansatz("hqconv")) * 8 * 16 * 8 * 8 == CHUNK_BYTES  # (l, s, r) c64
    assert chunk_limit(make_ansatz("hqconv", layers=4)) == 256 // 4
    assert chunk_limit(make_ansatz("fqconv")) == CHUNK  # 3-qubit clusters


def test_on_a_gpu_the_343000_circuits_of_a_sampling_step_run_in_few_large_chunks(monkeypatch):
    from qhd_lib.circuits import simulator
    from qhd_lib.circuits.simulator import chunk_limit, chunk_shape

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    limit = chunk_limit(make_ansatz("hqconv"))
    assert limit * 8 * 16 * 8 * 8 == simulator.ACCELERATOR_CHUNK_BYTES
    assert chunk_shape(343_000, limit)[0] == 11  # instead of 1 340 on a CPU
    assert chunk_limit(make_ansatz("fqconv")) > 2048


@pytest.mark.parametrize("n", [2049, 4097, 6272, 7000, 343_000])
def test_chunks_are_equal_and_pad_fewer_inputs_than_there_are_chunks(n):
    from qhd_lib.circuits.simulator import CHUNK, chunk_shape

    chunks, size = chunk_shape(n)
    assert size <= CHUNK
    assert 0 <= chunks * size - n < chunks


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: make_ansatz("hqconv", stride=4), "control == target"),
        (lambda: make_ansatz("hqconv", stride=0), "1..3"),
        (lambda: make_ansatz("fqconv", stride=12), "multiple of 12"),
        (lambda: make_ansatz("fqconv", layers=0), "layers must be a positive integer"),
        (lambda: make_ansatz("qconv"), "unknown ansatz 'qconv'; choose one of hqconv, fqconv"),
        (lambda: make_ansatz("basic_entangler", stride=1), "no stride"),
        (lambda: make_ansatz("released_hqconv", stride=2), "no stride"),
        (lambda: make_ansatz("hqconv", channels=1), "at least 2 channels"),
    ],
)
def test_invalid_ansatz_arguments_raise_clear_errors(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_wrong_input_width_and_parameter_count_raise():
    ansatz = make_ansatz("hqconv")
    with pytest.raises(ValueError, match="last axis must have 12"):
        simulate(ansatz, jnp.zeros((2, 4)), jnp.zeros(84))
    with pytest.raises(ValueError, match=r"shape \(84,\)"):
        simulate(ansatz, jnp.zeros((2, 12)), jnp.zeros(72))


def test_gate_is_hashable_data():
    gate = Gate("crz", 0, 1, 3)
    assert gate.wires == (0, 1) and hash(gate) == hash(Gate("crz", 0, 1, 3))


def test_importing_circuits_does_not_import_pennylane():
    code = "import sys, qhd_lib.circuits; assert 'pennylane' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
