"""A fast, exact state-vector simulator for `Ansatz` gate lists, in pure JAX.

Four observations make it fast, and none of them is specific to one ansatz:

1. **The encoding is a product state.** ``RX(x_q)|0⟩ = (cos x_q/2, -i sin x_q/2)`` on every
   qubit, so nothing needs 2^n amplitudes until gates entangle qubits. The simulator keeps
   *clusters* of qubits, each with its own small state, and merges two clusters (an outer
   product) only when a gate first couples them. FQConv never couples different pixels, so its
   12 qubits stay 4 independent 3-qubit clusters (8 amplitudes each instead of 4 096).
2. **The ansatz does not depend on the input.** Gates are grouped into *blocks* on at most
   ``max_block_qubits`` qubits and each block is fused into one small unitary, built once per
   θ and shared by the whole batch. An HQConv layer becomes three 16×16 channel unitaries (the
   A blocks) and one 8×8 unitary on the first qubits of the channels (the B blocks); all three
   FQConv layers fuse into one 8×8 unitary per pixel column.
3. **Blocks are applied by einsum** to the batched cluster state ``(B, 2, ..., 2)``: one small
   matrix product per block instead of one pass over the state per gate.
4. **Channels as sites.** Where channels only talk through a few controlled gates (HQConv), each
   channel is a tensor with *bonds* to its neighbours, and its tensor is a fixed linear map of its
   16 input amplitudes (one matrix per θ, applied to the batch as one matrix product). When the
   sites form a chain, each site's marginal comes from environments swept in from both ends,
   never from the full 2^n state, and the gradient sweeps environments back the same way (a
   hand-written backward). `qhd_lib.circuits.cost` lists every matrix product this executes.

The plan (blocks, clusters, einsum strings) is compiled once per `Ansatz` (cached), so
`simulate` is jit-able with the ansatz as a static argument and differentiable in inputs and θ.
"""

from __future__ import annotations

import functools
import string
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib.circuits.ansatz import Ansatz, Gate

DTYPE = jnp.complex64
MAX_BLOCK_QUBITS = 4
CHUNK = 2048  # inputs simulated at once at most (a 12-qubit state of 2 048 inputs is 64 MiB)
CHUNK_BYTES = 2**21  # and at most as many as keep a chunk's largest tensor within 2 MiB
# On a GPU, caches do not reward small chunks and each chunk is a sequential step of `lax.map`:
# a chunk's largest tensor may take 256 MiB (HQConv: 32 768 inputs; the 343 000 circuits of a
# QuanvU-Net sampling step in 11 chunks instead of 1 340).
ACCELERATOR_CHUNK_BYTES = 2**28


@dataclass(frozen=True)
class Block:
    """Consecutive gates fused into one unitary on ``qubits`` (sorted)."""

    qubits: tuple[int, ...]
    gates: tuple[Gate, ...]


def fuse_blocks(gates: tuple[Gate, ...], max_block_qubits: int = MAX_BLOCK_QUBITS) -> list[Block]:
    """Group a gate list into blocks of at most ``max_block_qubits`` qubits, keeping its action.

    A gate commutes with every later block on other qubits, so it may join the last block that
    shares a qubit with it, provided the union stays small; otherwise it opens a new block.
    """
    blocks: list[tuple[set[int], list[Gate]]] = []
    for gate in gates:
        wires = set(gate.wires)
        last = next((i for i in range(len(blocks) - 1, -1, -1) if blocks[i][0] & wires), None)
        if last is not None and len(blocks[last][0] | wires) <= max_block_qubits:
            blocks[last][0].update(wires)
            blocks[last][1].append(gate)
        else:
            blocks.append((wires, [gate]))
    return [Block(tuple(sorted(q)), tuple(g)) for q, g in blocks]


def gate_matrix(kind: str, angle: jnp.ndarray | None) -> jnp.ndarray:
    """The gate's matrix (2×2 for "rx", 4×4 with the control as the first qubit otherwise)."""
    if kind == "cnot":
        return jnp.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], DTYPE)
    c, s = jnp.cos(angle / 2), jnp.sin(angle / 2)
    if kind in ("rx", "crx"):
        rot = jnp.stack([jnp.stack([c, -1j * s]), jnp.stack([-1j * s, c])]).astype(DTYPE)
    elif kind == "crz":
        rot = jnp.diag(jnp.stack([c - 1j * s, c + 1j * s])).astype(DTYPE)
    else:
        raise ValueError(f"unknown gate kind {kind!r}; use crz, crx, rx or cnot")
    if kind == "rx":
        return rot
    zero = jnp.zeros((2, 2), DTYPE)
    return jnp.block([[jnp.eye(2, dtype=DTYPE), zero], [zero, rot]])


def _apply_on_axes(tensor: jnp.ndarray, matrix: jnp.ndarray, axes: tuple[int, ...]) -> jnp.ndarray:
    """Apply a (2^m, 2^m) ``matrix`` to the size-2 ``axes`` of ``tensor`` (an einsum)."""
    m = len(axes)
    letters = string.ascii_letters
    names = list(letters[: tensor.ndim])
    new = list(letters[tensor.ndim : tensor.ndim + m])
    out = names.copy()
    for axis, letter in zip(axes, new):
        out[axis] = letter
    spec = f"{''.join(new)}{''.join(names[a] for a in axes)},{''.join(names)}->{''.join(out)}"
    return jnp.einsum(spec, matrix.reshape((2,) * (2 * m)), tensor)


def block_unitary(block: Block, angles: jnp.ndarray) -> jnp.ndarray:
    """Multiply the block's gates into one (2^k, 2^k) unitary (first gate applied first)."""
    k = len(block.qubits)
    position = {q: i for i, q in enumerate(block.qubits)}
    u = jnp.eye(2**k, dtype=DTYPE).reshape((2,) * k + (2**k,))
    for gate in block.gates:
        angle = None if gate.param is None else angles[gate.param]
        u = _apply_on_axes(u, gate_matrix(gate.kind, angle), tuple(position[w] for w in gate.wires))
    return u.reshape(2**k, 2**k)


@dataclass(frozen=True)
class DensePlan:
    """A component simulated as state vectors: fused blocks on lazily merged clusters."""

    qubits: tuple[int, ...]
    blocks: tuple[Block, ...]


@dataclass(frozen=True)
class SitePlan:
    """One site (the qubits of one channel) of a `NetworkPlan` and its operations in order.

    Labels ``< n_qubits`` are qubits, larger ones are bonds. ``("copy", qubit, bond)`` copies
    the Z value of a control qubit into a new bond axis; ``("add", bond)`` opens that bond on
    the target site; ``("block", Block)`` applies a fused unitary whose controls may be bonds.
    """

    qubits: tuple[int, ...]
    ops: tuple[tuple, ...]


@dataclass(frozen=True)
class NetworkPlan:
    """A component simulated as a tensor network with one tensor per channel (site).

    ``chain`` holds, per site, its bonds to the previous and to the next site when every bond
    links neighbouring sites (HQConv's B blocks link channel c to c+1); None otherwise (a ring),
    and then the sites are contracted into the full state.
    """

    qubits: tuple[int, ...]
    sites: tuple[SitePlan, ...]
    chain: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None


def _dense_cost(blocks: list[Block], n: int) -> int:
    """Complex multiply-adds per input of applying ``blocks`` to a 2^n state."""
    return sum(2 ** len(b.qubits) * 2**n for b in blocks)


def _on_bond(gate: Gate, n_qubits: int) -> bool:
    """Whether a gate's control is a bond label rather than a qubit."""
    return gate.control is not None and gate.control >= n_qubits


def plan_network(
    gates: list[Gate], qubits: tuple[int, ...], site_of: dict[int, int], n_qubits: int
) -> tuple[NetworkPlan, int]:
    """Split a component into channel sites linked by bonds; return the plan and its cost
    (multiply-adds per input: the site tensors' matrix products, then the environments of a
    chain or the contraction of the full state).

    A controlled gate from site a to site b is ``Σ_k P_k(control) ⊗ U^k(target)``: a bond of
    size 2 that carries the control's Z value. Later controlled gates from the same control to
    the same site reuse the bond while nothing has rotated the control qubit.
    """
    site_ids = sorted({site_of[q] for q in qubits})
    ops: dict[int, list] = {s: [] for s in site_ids}
    labels: dict[int, list[int]] = {s: [q for q in qubits if site_of[q] == s] for s in site_ids}
    open_bond: dict[int, tuple[int, int]] = {}
    n_bonds = 0
    for gate in gates:
        if gate.control is None or site_of[gate.control] == site_of[gate.target]:
            ops[site_of[gate.target]].append(gate)
        else:
            a, b = site_of[gate.control], site_of[gate.target]
            bond = open_bond.get(gate.control)
            if bond is None or bond[1] != b:
                label = n_qubits + n_bonds
                n_bonds += 1
                ops[a].append(("copy", gate.control, label))
                ops[b].append(("add", label))
                labels[a].append(label)
                labels[b].append(label)
                open_bond[gate.control] = bond = (label, b)
            ops[b].append(Gate(gate.kind, bond[0], gate.target, gate.param))
        open_bond.pop(gate.target, None)
    sites = []
    for s in site_ids:
        steps: list[tuple] = []
        run: list[Gate] = []
        for op in ops[s] + [None]:
            # gates controlled by a bond form their own blocks, so that they do not split the
            # next layer's channel unitary
            if isinstance(op, Gate) and (
                not run or _on_bond(run[-1], n_qubits) == _on_bond(op, n_qubits)
            ):
                run.append(op)
                continue
            steps += [("block", block) for block in fuse_blocks(tuple(run), MAX_BLOCK_QUBITS)]
            run = [op] if isinstance(op, Gate) else []
            if op is not None and not isinstance(op, Gate):
                steps.append(op)
        sites.append(SitePlan(tuple(q for q in qubits if site_of[q] == s), tuple(steps)))
    chain = _chain_bonds(sites)
    cost = sum(2 ** len(site.qubits) * 2 ** len(labels[s]) for s, site in zip(site_ids, sites))
    if chain is None:
        cost += 2 ** (len(qubits) + n_bonds)
    else:
        for site, (left, right) in zip(sites, chain):
            s_, l_, r_ = 2 ** len(site.qubits), 2 ** len(left), 2 ** len(right)
            cost += 2 * s_ * l_ * r_ * (l_ + r_)  # the five environment products, roughly
    return NetworkPlan(qubits, tuple(sites), chain), cost


def _chain_bonds(
    sites: list[SitePlan],
) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...] | None:
    """Per site, (bonds to the previous site, bonds to the next), if every bond links
    neighbouring sites; None if some bond skips a site or closes a ring."""
    ends: dict[int, list[int]] = {}
    for i, site in enumerate(sites):
        for op in site.ops:
            if op[0] in ("copy", "add"):
                ends.setdefault(op[-1], []).append(i)
    if any(abs(a - b) != 1 for a, b in ends.values()):
        return None
    return tuple(
        (
            tuple(b for b, e in ends.items() if i in e and min(e) < i),
            tuple(b for b, e in ends.items() if i in e and max(e) > i),
        )
        for i in range(len(sites))
    )


def _components(ansatz: Ansatz) -> list[tuple[int, ...]]:
    """Groups of qubits that gates connect (union-find over control-target pairs)."""
    parent = list(range(ansatz.n_qubits))

    def find(q: int) -> int:
        while parent[q] != q:
            parent[q] = parent[parent[q]]
            q = parent[q]
        return q

    for gate in ansatz.gates:
        if gate.control is not None:
            parent[find(gate.control)] = find(gate.target)
    groups: dict[int, list[int]] = {}
    for q in range(ansatz.n_qubits):
        groups.setdefault(find(q), []).append(q)
    return [tuple(g) for g in groups.values()]


@functools.cache
def compile_plan(ansatz: Ansatz) -> tuple[DensePlan | NetworkPlan, ...]:
    """The execution plan of an ansatz, computed once per ansatz (what `simulate` runs).

    Qubits that no gate connects are simulated independently. A component is simulated as a
    state vector of fused blocks, unless splitting it into channel sites linked by bonds (a
    tensor network) costs fewer multiply-adds, as for HQConv: its channels only talk through
    the few controlled gates of the B blocks.
    """
    site_of = {q: q // ansatz.pixels for q in range(ansatz.n_qubits)}
    plans: list[DensePlan | NetworkPlan] = []
    for qubits in _components(ansatz):
        members = set(qubits)
        gates = [g for g in ansatz.gates if g.target in members]
        blocks = fuse_blocks(tuple(gates))
        plan: DensePlan | NetworkPlan = DensePlan(qubits, tuple(blocks))
        if len({site_of[q] for q in qubits}) > 1:
            network, cost = plan_network(gates, qubits, site_of, ansatz.n_qubits)
            if cost < _dense_cost(blocks, len(qubits)):
                plan = network
        plans.append(plan)
    return tuple(plans)


def encode(inputs: jnp.ndarray) -> jnp.ndarray:
    """Single-qubit states after RX angle encoding: (..., n) inputs → (..., n, 2) amplitudes."""
    half = inputs / 2
    return jnp.stack([jnp.cos(half), -1j * jnp.sin(half)], axis=-1).astype(DTYPE)


def expval_z(state: jnp.ndarray) -> jnp.ndarray:
    """⟨Z_q⟩ = Σ |ψ|² (±1) for every qubit of a cluster state (B, 2, ..., 2) → (B, k) (eq. 9)."""
    k = state.ndim - 1
    probs = (jnp.real(state) ** 2 + jnp.imag(state) ** 2).reshape(state.shape[0], 2**k)
    return expval_z_from_probs(probs, k)


def expval_z_from_probs(probs: jnp.ndarray, k: int) -> jnp.ndarray:
    """⟨Z_q⟩ of k qubits from basis-state probabilities (B, 2^k): a matmul with the ±1 signs."""
    bits = (np.arange(2**k)[:, None] >> np.arange(k - 1, -1, -1)[None, :]) & 1
    with jax.named_scope("expval"):
        return probs @ jnp.asarray(1.0 - 2.0 * bits, probs.dtype)


def _merge(states: list[jnp.ndarray]) -> jnp.ndarray:
    """Outer product of cluster states (B, 2, ...) in the given order."""
    out = states[0]
    for s in states[1:]:
        batch = out.shape[0]
        out = (out.reshape(batch, -1, 1) * s.reshape(batch, 1, -1)).reshape(
            (batch,) + out.shape[1:] + s.shape[1:]
        )
    return out


def run_dense(plan: DensePlan, single: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
    """⟨Z⟩ (B, len(plan.qubits)) of a dense component; ``single`` holds the encoded qubits."""
    clusters = {q: ((q,), single[:, q, :]) for q in plan.qubits}
    owner = {q: q for q in plan.qubits}
    for block in plan.blocks:
        keys = sorted({owner[q] for q in block.qubits}, key=lambda k: min(clusters[k][0]))
        if len(keys) > 1:
            qubits = tuple(q for k in keys for q in clusters[k][0])
            state = _merge([clusters.pop(k)[1] for k in keys])
            clusters[keys[0]] = (qubits, state)
            for q in qubits:
                owner[q] = keys[0]
        qubits, state = clusters[keys[0]]
        axes = tuple(1 + qubits.index(q) for q in block.qubits)
        clusters[keys[0]] = (qubits, _apply_on_axes(state, block_unitary(block, angles), axes))
    order = [q for qubits, _ in clusters.values() for q in qubits]
    values = jnp.concatenate([expval_z(state) for _, state in clusters.values()], axis=-1)
    position = {q: i for i, q in enumerate(order)}
    return values[:, [position[q] for q in plan.qubits]]


def site_kernel(site: SitePlan, angles: jnp.ndarray) -> tuple[jnp.ndarray, list[int]]:
    """The site's operations applied to its 2^k basis states: (2^k, 2, ..., 2) and the labels of
    the trailing axes (its qubits, then its bonds in order of creation).

    A site's tensor is linear in its k qubits' encoded product state, so this one θ-dependent
    matrix turns the whole batch into site tensors with a single matrix product.
    """
    k = len(site.qubits)
    labels = list(site.qubits)
    state = jnp.eye(2**k, dtype=DTYPE).reshape((2**k,) + (2,) * k)
    for op in site.ops:
        if op[0] == "block":
            axes = tuple(1 + labels.index(w) for w in op[1].qubits)
            state = _apply_on_axes(state, block_unitary(op[1], angles), axes)
        elif op[0] == "copy":  # new axis equal to the control qubit's value
            shape = [1] * (state.ndim + 1)
            shape[1 + labels.index(op[1])] = shape[-1] = 2
            state = state[..., None] * jnp.eye(2, dtype=DTYPE).reshape(shape)
            labels.append(op[2])
        else:  # "add": the target side of a new bond, a copy per control value
            state = jnp.broadcast_to(state[..., None], state.shape + (2,))
            labels.append(op[1])
    return state, labels


def _real_amplitudes(single: jnp.ndarray) -> jnp.ndarray:
    """RX-encoded states ``(cos x/2, -i sin x/2)`` (from `encode`) as real ``(cos, sin)``.

    The dropped phase ``diag(1, -i)`` per qubit goes into the site kernels (`_real_kernel`), so
    the product states are real and a site tensor costs 2 real multiply-adds per entry, not 4.
    """
    return jnp.stack([jnp.real(single[..., 0]), -jnp.imag(single[..., 1])], axis=-1)


def _real_kernel(kernel: jnp.ndarray) -> jnp.ndarray:
    """A (2^k, n) site kernel for real product states: (2^k, 2n), real parts then imaginary.

    Row ``j`` takes the phase ``(-i)^popcount(j)`` that `_real_amplitudes` dropped, so that
    (real product states) @ (this) is the site tensors' real and imaginary parts side by side.
    """
    ones = np.array([bin(j).count("1") for j in range(kernel.shape[0])])
    kernel = kernel * jnp.asarray((-1j) ** ones, DTYPE)[:, None]
    return jnp.concatenate([jnp.real(kernel), jnp.imag(kernel)], axis=1)


def _site_tensors(product: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
    """Complex site tensors (B, n) from real product states and a `_real_kernel` (2^k, 2n)."""
    with jax.named_scope("site_tensors"):
        both = product @ kernel
    n = kernel.shape[1] // 2
    return jax.lax.complex(both[:, :n], both[:, n:])


def run_network(plan: NetworkPlan, single: jnp.ndarray, angles: jnp.ndarray) -> jnp.ndarray:
    """⟨Z⟩ (B, len(plan.qubits)) of a component simulated as one tensor per site.

    ``single`` holds RX-encoded qubits (`encode`). Each site tensor is the site's encoded
    product state times its `site_kernel`. A chain's kernels are permuted (not the batch) so
    that its tensors come out as (B, bonds to the previous site, 2^k, bonds to the next) for
    `_contract_chain`.
    """
    batch = single.shape[0]
    real = _real_amplitudes(single)
    products = [
        _merge([real[:, q, :] for q in site.qubits]).reshape(batch, -1) for site in plan.sites
    ]
    kernels = [site_kernel(site, angles) for site in plan.sites]
    if plan.chain is None:
        return _contract_all(
            plan,
            [
                (
                    _site_tensors(
                        product, _real_kernel(kernel.reshape(product.shape[1], -1))
                    ).reshape((batch,) + kernel.shape[1:]),
                    labels,
                )
                for product, (kernel, labels) in zip(products, kernels)
            ],
        )
    shapes, flat = [], []
    for site, product, (kernel, labels), (left, right) in zip(
        plan.sites, products, kernels, plan.chain
    ):
        order = [0] + [1 + labels.index(label) for label in (*left, *site.qubits, *right)]
        flat.append(_real_kernel(jnp.transpose(kernel, order).reshape(product.shape[1], -1)))
        shapes.append((2 ** len(left), product.shape[1], 2 ** len(right)))
    return _contract_chain(tuple(shapes), tuple(products), tuple(flat))


def _contract_all(plan: NetworkPlan, tensors: list[tuple[jnp.ndarray, list[int]]]) -> jnp.ndarray:
    """⟨Z⟩ from the full state: contract every site over its bonds, then each site's marginal."""
    operands: list = []
    for state, labels in tensors:
        operands += [state, [_BATCH] + labels]
    psi = jnp.einsum(*operands, [_BATCH] + list(plan.qubits), optimize="optimal")
    probs = jnp.real(psi) ** 2 + jnp.imag(psi) ** 2
    batch = probs.shape[0]
    values, start = [], 1
    for site in plan.sites:  # marginal of each site, then its ⟨Z⟩
        k = len(site.qubits)
        others = tuple(a for a in range(1, probs.ndim) if not start <= a < start + k)
        values.append(expval_z_from_probs(jnp.sum(probs, axis=others).reshape(batch, 2**k), k))
        start += k
    return jnp.concatenate(values, axis=-1)


# Batched matrix products (batch axis 0) as ``(lhs contracting axis, rhs contracting axis)``:
# a @ b, a @ bᵀ and aᵀ @ b, the three forms the chain uses (each a single dot_general).
_NN, _NT, _TN = (2, 1), (2, 2), (1, 1)


def _bmm(name: str, form: tuple[int, int], a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """One named batched matrix product of 3-d operands (the name is what `cost` reports)."""
    with jax.named_scope(name):
        return jax.lax.dot_general(a, b, (((form[0],), (form[1],)), ((0,), (0,))))


def _contract_chain(
    shapes: tuple[tuple[int, int, int], ...],
    products: tuple[jnp.ndarray, ...],
    kernels: tuple[jnp.ndarray, ...],
) -> jnp.ndarray:
    """⟨Z⟩ of a chain of site tensors T[b, l, s, r] (b the batch) from environments.

    Site i's tensor is ``products[i] @ kernels[i]`` (`_site_tensors`) of shape (B, ``shapes[i]``).
    The right environment ``R[l, l'] = Σ T[l,s,r] R_next[r,r'] T*[l',s,r']`` sums out every site
    after this one, the left environment every site before it, and the site's marginal is
    ``p[s] = Σ L[l,l'] T[l,s,r] R[r,r'] T*[l',s,r']``: a few batched products of small bond
    matrices (8 × 8 for 3-layer HQConv) per input instead of the 2^12 amplitudes of the full
    state. The layout (bond, site, bond) keeps every contraction a plain batched matrix product.
    """
    probs = _chain_marginals(shapes, products, kernels)
    return jnp.concatenate(
        [expval_z_from_probs(p, int(np.log2(p.shape[1]))) for p in probs], axis=-1
    )


def _chain_sites(
    shapes: tuple[tuple[int, int, int], ...],
    products: tuple[jnp.ndarray, ...],
    kernels: tuple[jnp.ndarray, ...],
) -> tuple[tuple, tuple]:
    """The site tensors (B, l, s, r) and their conjugates, each written to memory once (XLA
    would otherwise recompute them inside every product that reads them)."""
    sites = tuple(
        _site_tensors(p, k).reshape((p.shape[0],) + shape)
        for p, k, shape in zip(products, kernels, shapes)
    )
    return jax.lax.optimization_barrier((sites, tuple(jnp.conj(t) for t in sites)))


def _times_right(name: str, site: jnp.ndarray, right: jnp.ndarray | None) -> jnp.ndarray:
    """T·R: the site tensor with a right environment (ket, bra) summed in; T at the chain's end."""
    if right is None:
        return site
    b, bond_left, s, r = site.shape
    return _bmm(name, _NN, site.reshape(b, bond_left * s, r), right).reshape(b, bond_left, s, r)


def _left_times(name: str, left: jnp.ndarray | None, site: jnp.ndarray) -> jnp.ndarray:
    """Lᵀ·T: a left environment, kept as Lᵀ (bra, ket), applied to the site; T at the start."""
    if left is None:
        return site
    b, bond_left, s, r = site.shape
    return _bmm(name, _NN, left, site.reshape(b, bond_left, s * r)).reshape(b, bond_left, s, r)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _chain_marginals(
    shapes: tuple[tuple[int, int, int], ...],
    products: tuple[jnp.ndarray, ...],
    kernels: tuple[jnp.ndarray, ...],
) -> tuple[jnp.ndarray, ...]:
    """Each site's marginal p[b, s] of a chain (see `_contract_chain`)."""
    return _chain_forward(shapes, products, kernels)[0]


def _chain_forward(
    shapes: tuple[tuple[int, int, int], ...],
    products: tuple[jnp.ndarray, ...],
    kernels: tuple[jnp.ndarray, ...],
) -> tuple[tuple[jnp.ndarray, ...], tuple]:
    """Marginals, and the environments the backward reuses: ``right[i]`` is R (ket, bra) of
    the sites after site i, ``left[i]`` is Lᵀ (bra, ket) of those before it, None the 1 × 1
    identity at the ends.

    The backward recomputes the site tensors and their products with the environments instead
    of keeping them: under `jax.lax.map` kept values are stacked over all chunks, and writing
    and reading those stacks took longer than the three products that rebuild them.
    """
    n = len(shapes)
    sites, conj = _chain_sites(shapes, products, kernels)
    right: list = [None] * n
    with_right: list = [None] * n
    for i in range(n - 1, 0, -1):
        b, bond_left, s, r = sites[i].shape
        with_right[i] = _times_right("chain/T.R", sites[i], right[i])
        right[i - 1] = _bmm(
            "chain/right_env",
            _NT,
            with_right[i].reshape(b, bond_left, s * r),
            conj[i].reshape(b, bond_left, s * r),
        )
    with_right[0] = _times_right("chain/T.R", sites[0], right[0])
    left: list = [None] * n
    probs = []
    for i in range(n):
        b, bond_left, s, r = sites[i].shape
        name = "chain/L.T" if right[i] is None else "chain/L.T.R"
        both = _left_times(name, left[i], with_right[i])
        probs.append(jnp.real(jnp.sum(both * conj[i], axis=(1, 3))))
        if i < n - 1:
            with_left = _left_times("chain/L.T", left[i], sites[i])
            left[i + 1] = _bmm(
                "chain/left_env",
                _TN,
                conj[i].reshape(b, bond_left * s, r),
                with_left.reshape(b, bond_left * s, r),
            )
    return tuple(probs), (products, kernels, tuple(left), tuple(right))


def _chain_backward(
    shapes: tuple[tuple[int, int, int], ...], residuals: tuple, cotangents: tuple[jnp.ndarray, ...]
) -> tuple:
    """Cotangents of the product states and kernels from those of the marginals.

    With g_i the marginals' cotangents, Σ g_i·p_i = ⟨ψ|G|ψ⟩ for G = Σ_i g_i (diagonal on site i),
    and its derivative in T_i* is ``X_i = V_i·R_i + (Lᵀ·T)_i·RG_i`` with ``V_i = g_i ⊙ (Lᵀ·T)_i
    + LGᵀ_i·T_i``: LG and RG are the environments of G's terms left and right of site i, swept
    like L and R. That is six bond-matrix products for a middle site, and two more that rebuild
    T·R and Lᵀ·T (autodiff of the forward needs ten). The derivative in the site tensors' real
    and imaginary parts is 2·(Re X, Im X); the site-tensor product's backward is two plain
    matrix products.
    """
    products, kernels, left, right = residuals
    n = len(shapes)
    sites, conj = _chain_sites(shapes, products, kernels)
    g = [c[:, None, :, None] for c in cotangents]
    right_g: list = [None] * n
    for i in range(n - 1, 0, -1):
        b, bond_left, s, r = sites[i].shape
        u = g[i] * _times_right("chain/T.R", sites[i], right[i])
        if right_g[i] is not None:
            u = u + _times_right("chain_vjp/T.RG", sites[i], right_g[i])
        right_g[i - 1] = _bmm(
            "chain_vjp/right_env",
            _NT,
            u.reshape(b, bond_left, s * r),
            conj[i].reshape(b, bond_left, s * r),
        )
    left_g = None
    d_products, d_kernels = [], []
    for i in range(n):
        b, bond_left, s, r = sites[i].shape
        with_left = _left_times("chain/L.T", left[i], sites[i])
        v = g[i] * with_left
        if left_g is not None:
            v = v + _left_times("chain_vjp/LG.T", left_g, sites[i])
        if i < n - 1:
            left_g = _bmm(
                "chain_vjp/left_env",
                _TN,
                conj[i].reshape(b, bond_left * s, r),
                v.reshape(b, bond_left * s, r),
            )
        x = _times_right("chain_vjp/V.R", v, right[i])
        if right_g[i] is not None:
            x = x + _times_right("chain_vjp/L.T.RG", with_left, right_g[i])
        x = x.reshape(b, -1)
        d_site = 2 * jnp.concatenate([jnp.real(x), jnp.imag(x)], axis=1)
        with jax.named_scope("site_tensors_vjp"):
            d_products.append(jax.lax.dot_general(d_site, kernels[i], (((1,), (1,)), ((), ()))))
            d_kernels.append(jax.lax.dot_general(products[i], d_site, (((0,), (0,)), ((), ()))))
    return tuple(d_products), tuple(d_kernels)


_chain_marginals.defvjp(_chain_forward, _chain_backward)


_BATCH = 1_000_000  # einsum label of the batch axis (qubit and bond labels are smaller)


def simulate_flat(ansatz: Ansatz, inputs: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
    """`simulate` for a flat batch: inputs (B, n_qubits) → ⟨Z⟩ (B, n_qubits)."""
    angles = ansatz.angle_scale * theta
    single = encode(inputs)
    values, order = [], []
    for plan in compile_plan(ansatz):
        run = run_network if isinstance(plan, NetworkPlan) else run_dense
        values.append(run(plan, single, angles))
        order += plan.qubits
    return jnp.concatenate(values, axis=-1)[:, np.argsort(order)]


def chunk_limit(ansatz: Ansatz) -> int:
    """Inputs simulated at once: `CHUNK`, or fewer where the plan's largest tensor per input
    would make a chunk's tensors exceed `CHUNK_BYTES`.

    On CPU a chunk whose intermediates stay in the cache is faster: HQConv's middle site tensor
    holds 1 024 amplitudes per input (8 KiB), so it runs in chunks of 256, and at 6 272 inputs
    that takes about 0.65× the time of chunks of 2 048, forward and forward+backward. A dense
    cluster, or a ring's full state, holds at most 2^(its qubits) amplitudes. On any other
    backend (a GPU) the bound is `ACCELERATOR_CHUNK_BYTES` alone: few, large chunks.
    """
    widest = 1
    for plan in compile_plan(ansatz):
        if isinstance(plan, NetworkPlan) and plan.chain is not None:
            widest = max(
                [widest]
                + [
                    2 ** (len(site.qubits) + len(left) + len(right))
                    for site, (left, right) in zip(plan.sites, plan.chain)
                ]
            )
        else:
            widest = max(widest, 2 ** len(plan.qubits))
    per_input = widest * np.dtype(DTYPE).itemsize
    if jax.default_backend() != "cpu":
        return max(1, ACCELERATOR_CHUNK_BYTES // per_input)
    return max(1, min(CHUNK, CHUNK_BYTES // per_input))


def chunk_shape(n: int, limit: int | None = None) -> tuple[int, int]:
    """(chunks, size) for simulating ``n`` inputs at most ``limit`` (default `CHUNK`) at a time,
    with equal chunks.

    Equal chunks pad fewer than ``chunks`` inputs (6 272 = 4 × 1 568, where chunks of 2 048 would
    pad to 8 192 and simulate 30 % more; for HQConv 6 272 = 25 × 251).
    """
    chunks = -(-n // (CHUNK if limit is None else limit))
    return chunks, -(-n // chunks)


def check_arguments(
    ansatz: Ansatz, inputs: jnp.ndarray, theta: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``inputs`` and ``theta`` as arrays, refused with the fix when their shapes do not fit the
    ansatz (shared by every executor of `simulate`'s contract)."""
    inputs = jnp.asarray(inputs)
    theta = jnp.asarray(theta)
    if inputs.shape[-1:] != (ansatz.n_qubits,):
        raise ValueError(
            f"inputs have shape {inputs.shape}, but {ansatz.name} acts on {ansatz.n_qubits} "
            f"qubits: the last axis must have {ansatz.n_qubits} values"
        )
    if theta.shape != (ansatz.n_params,):
        raise ValueError(
            f"theta has shape {theta.shape}, but {ansatz.name} with {ansatz.layers} layers has "
            f"{ansatz.n_params} parameters: pass an array of shape ({ansatz.n_params},)"
        )
    return inputs, theta


def simulate(ansatz: Ansatz, inputs: jnp.ndarray, theta: jnp.ndarray) -> jnp.ndarray:
    """⟨Z⟩ of every qubit after RX encoding of ``inputs`` and the ansatz (eq. 9).

    ``inputs`` (..., n_qubits) raw values (channel-major), ``theta`` (n_params,). Returns
    (..., n_qubits) in [-1, 1]. Jit with ``static_argnums=0``; differentiable in both arguments.
    """
    inputs, theta = check_arguments(ansatz, inputs, theta)
    lead = inputs.shape[:-1]
    flat = inputs.reshape(-1, ansatz.n_qubits).astype(jnp.float32)
    theta = theta.astype(jnp.float32)
    n, limit = flat.shape[0], chunk_limit(ansatz)
    if n <= limit:
        out = simulate_flat(ansatz, flat, theta)
    else:  # bounded memory for big batches: chunks of at most `limit` inputs, one by one
        chunks, size = chunk_shape(n, limit)
        padded = jnp.pad(flat, ((0, chunks * size - n), (0, 0)))
        out = jax.lax.map(
            lambda x: simulate_flat(ansatz, x, theta), padded.reshape(chunks, size, ansatz.n_qubits)
        )
        out = out.reshape(chunks * size, ansatz.n_qubits)[:n]
    return out.reshape(lead + (ansatz.n_qubits,))


def init_params(key: jax.Array, ansatz: Ansatz) -> jnp.ndarray:
    """θ ~ U[0, 1), one value per parameter, as in the released code (angles are 2π·θ)."""
    return jax.random.uniform(key, (ansatz.n_params,), jnp.float32)
