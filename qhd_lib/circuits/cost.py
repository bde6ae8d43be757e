"""The simulator's cost model: the matrix products it executes and their real multiply-adds.

The list is read from the program `simulate` runs for each chunk of inputs (the jaxpr of
`simulator.simulate_flat`), so it follows the executor exactly: every ``dot_general`` of the
forward, and every one JAX adds for the gradient with respect to inputs and θ. Autodiff's
backward of a matrix product is two products of the same size (one per operand; a single one
when an operand is a constant), while the chain of `simulator._contract_chain` brings its own
hand-written backward. Contractions are named by the executor's ``jax.named_scope``
(``transpose(jvp(...))`` marks the backward).

A complex multiply-add counts as 4 real ones. Elementwise work (encoding, outer products,
conjugates, marginals) is not counted: this is the arithmetic the matrix products must do.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from qhd_lib.circuits import simulator
from qhd_lib.circuits.ansatz import Ansatz


@dataclass(frozen=True)
class Contraction:
    """``count`` identical ``lax.dot_general`` calls: operand shapes, dimension numbers, dtype."""

    name: str
    lhs: tuple[int, ...]
    rhs: tuple[int, ...]
    dimension_numbers: tuple
    dtype: str
    count: int = 1

    @property
    def complex(self) -> bool:
        """Whether the operands are complex (4 real multiply-adds per multiply-add)."""
        return np.issubdtype(np.dtype(self.dtype), np.complexfloating)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(batch, m, k, n) of the batched matrix product: ``batch`` products of m×k by k×n."""
        (lc, rc), (lb, rb) = self.dimension_numbers

        def size(shape: tuple[int, ...], axes) -> int:
            return math.prod(shape[a] for a in axes)

        free_l = [a for a in range(len(self.lhs)) if a not in (*lc, *lb)]
        free_r = [a for a in range(len(self.rhs)) if a not in (*rc, *rb)]
        return (
            size(self.lhs, lb),
            size(self.lhs, free_l),
            size(self.lhs, lc),
            size(self.rhs, free_r),
        )

    @property
    def real_macs(self) -> int:
        """Real multiply-adds of all ``count`` calls."""
        return self.count * math.prod(self.shape) * (4 if self.complex else 1)


@dataclass(frozen=True)
class PlanCost:
    """What one `simulate` call multiplies for ``batch`` inputs, forward and backward.

    Counts are per call, in which a batch above `simulator.chunk_limit` runs as ``chunks``
    chunks of ``chunk`` inputs. ``*_per_input`` lists the products whose size grows with the
    batch, ``*_per_theta`` those that build the θ-dependent matrices (once per chunk, a few per
    cent of the multiply-adds).
    """

    batch: int
    chunks: int
    chunk: int
    forward_per_input: tuple[Contraction, ...]
    backward_per_input: tuple[Contraction, ...]
    forward_per_theta: tuple[Contraction, ...]
    backward_per_theta: tuple[Contraction, ...]

    @property
    def forward_real_macs(self) -> int:
        """Real multiply-adds of the forward pass (all its matrix products)."""
        return sum(c.real_macs for c in self.forward_per_input + self.forward_per_theta)

    @property
    def backward_real_macs(self) -> int:
        """Real multiply-adds the gradient adds to the forward pass."""
        return sum(c.real_macs for c in self.backward_per_input + self.backward_per_theta)


def _dots(closed: jax.extend.core.ClosedJaxpr) -> list[Contraction]:
    """Every dot_general of a jaxpr and its sub-jaxprs, in program order."""
    found: list[Contraction] = []

    def walk(jaxpr: jax.extend.core.Jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                lhs, rhs = (v.aval for v in eqn.invars)
                found.append(
                    Contraction(
                        str(eqn.source_info.name_stack),
                        tuple(lhs.shape),
                        tuple(rhs.shape),
                        eqn.params["dimension_numbers"],
                        str(lhs.dtype),
                    )
                )
            for param in eqn.params.values():
                for sub in param if isinstance(param, (tuple, list)) else (param,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(closed.jaxpr)
    return found


def _traced(ansatz: Ansatz, batch: int) -> tuple[list[Contraction], list[Contraction]]:
    """The forward's products and those the gradient (in inputs and θ) adds."""
    inputs = jax.ShapeDtypeStruct((batch, ansatz.n_qubits), jnp.float32)
    theta = jax.ShapeDtypeStruct((ansatz.n_params,), jnp.float32)

    def loss(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
        return jnp.sum(jnp.sin(simulator.simulate_flat(ansatz, x, t)))

    forward = _dots(
        jax.make_jaxpr(lambda x, t: simulator.simulate_flat(ansatz, x, t))(inputs, theta)
    )
    gradient = _dots(jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(inputs, theta))
    return forward, [c for c in gradient if "transpose(" in c.name]


def _unwrapped(name: str) -> str:
    """The executor's name of a product, without autodiff's ``transpose(jvp(...))``."""
    while name.startswith(("transpose(", "jvp(")):
        name = name[name.index("(") + 1 : -1]
    return name


def _grouped(contractions: list[Contraction], chunks: int) -> tuple[Contraction, ...]:
    """Identical contractions merged into one entry, counted per call, in order of appearance."""
    counts = Counter(contractions)
    return tuple(
        Contraction(c.name, c.lhs, c.rhs, c.dimension_numbers, c.dtype, n * chunks)
        for c, n in counts.items()
    )


def plan_cost(ansatz: Ansatz, batch: int) -> PlanCost:
    """The matrix products one `simulate` call runs for ``batch`` inputs of ``ansatz`` (its
    plan `compile_plan(ansatz)`), forward and backward, with their real multiply-adds.

    A product grows with the batch if its shapes differ when the program is traced for one more
    input; the others build θ-dependent matrices. The chain's backward rebuilds some forward
    products instead of keeping them (see `simulator._chain_forward`); in a single chunk XLA
    merges those with the forward's own, so they count only when the batch is chunked.
    """
    limit = simulator.chunk_limit(ansatz)
    chunks, chunk = simulator.chunk_shape(batch, limit) if batch > limit else (1, batch)
    traced, bigger = _traced(ansatz, chunk), _traced(ansatz, chunk + 1)
    (forward, backward), (forward_bigger, backward_bigger) = traced, bigger
    if chunks == 1:
        done = {(c.name, c.lhs, c.rhs, c.dimension_numbers, c.dtype) for c in forward}
        keep = [
            (_unwrapped(c.name), c.lhs, c.rhs, c.dimension_numbers, c.dtype) not in done
            for c in backward
        ]
        backward = [c for c, k in zip(backward, keep) if k]
        backward_bigger = [c for c, k in zip(backward_bigger, keep) if k]
    split = []
    for here, there in ((forward, forward_bigger), (backward, backward_bigger)):
        if len(here) != len(there):
            raise RuntimeError("the program's products depend on the batch size beyond shapes")
        grows = [(a.lhs, a.rhs) != (b.lhs, b.rhs) for a, b in zip(here, there)]
        split.append(
            (
                _grouped([c for c, g in zip(here, grows) if g], chunks),
                _grouped([c for c, g in zip(here, grows) if not g], chunks),
            )
        )
    (forward_input, forward_theta), (backward_input, backward_theta) = split
    return PlanCost(
        batch, chunks, chunk, forward_input, backward_input, forward_theta, backward_theta
    )
