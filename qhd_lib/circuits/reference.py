"""The PennyLane reference executor: the oracle for tests and the source of circuit drawings.

It reads the same `Ansatz` gate list as the fast simulator and builds a QNode on
``default.qubit`` {cite}`bergholm2018pennylane`: ``qml.AngleEmbedding`` (RX), the gates in order,
⟨Z⟩ on every qubit. Importing this module imports PennyLane, so nothing in the model path does.

The oracle functions (`simulate_reference`, `reference_gradients`) use PennyLane's autograd
interface in float64: exact, no compilation, and none of the complex128 → complex64 cast warnings
PennyLane 0.45 emits with JAX in single precision. `make_qnode` also builds the JAX QNode the
released code used (timed in `scripts/bench_circuits.py`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pennylane as qml
from pennylane import numpy as pnp

from qhd_lib.circuits.ansatz import Ansatz, Gate

_OPS = {"crz": qml.CRZ, "crx": qml.CRX, "rx": qml.RX, "cnot": qml.CNOT}


def apply_gate(gate: Gate, angle_scale: float, theta: Any) -> None:
    """Queue one gate of an ansatz (its angle is ``angle_scale · θ[gate.param]``)."""
    op = _OPS[gate.kind]
    if gate.kind == "cnot":
        op(wires=[gate.control, gate.target])
    elif gate.kind == "rx":
        op(angle_scale * theta[gate.param], wires=gate.target)
    else:
        op(angle_scale * theta[gate.param], wires=[gate.control, gate.target])


def apply_ansatz(ansatz: Ansatz, theta: Any) -> None:
    """Queue the ansatz's gates (inside a QNode or a `qml.draw_mpl` function)."""
    for gate in ansatz.gates:
        apply_gate(gate, ansatz.angle_scale, theta)


@functools.cache
def make_qnode(ansatz: Ansatz, diff_method: str = "backprop", interface: str = "jax") -> qml.QNode:
    """A QNode ``(inputs (n_qubits,), theta) -> list of ⟨Z⟩`` on ``default.qubit``.

    ``interface="jax"`` is what the released code uses (and what the benchmark times);
    ``"autograd"`` runs in NumPy float64 without compiling, the quick oracle of the tests.
    """
    device = qml.device("default.qubit", wires=ansatz.n_qubits)

    @qml.qnode(device, interface=interface, diff_method=diff_method)
    def circuit(inputs, theta):
        qml.AngleEmbedding(inputs, wires=range(ansatz.n_qubits), rotation="X")
        apply_ansatz(ansatz, theta)
        return [qml.expval(qml.PauliZ(q)) for q in range(ansatz.n_qubits)]

    return circuit


def simulate_reference(ansatz: Ansatz, inputs: Any, theta: Any) -> np.ndarray:
    """Same contract as `qhd_lib.circuits.simulate`, computed by PennyLane in float64.

    Returns a NumPy array (..., n_qubits); one QNode execution per input (slow, exact).
    """
    inputs = np.asarray(inputs, np.float64)
    if inputs.shape[-1:] != (ansatz.n_qubits,):
        raise ValueError(
            f"inputs have shape {inputs.shape}; the last axis must have {ansatz.n_qubits} values"
        )
    circuit = make_qnode(ansatz, interface="autograd")
    theta = pnp.asarray(np.asarray(theta, np.float64))
    flat = inputs.reshape(-1, ansatz.n_qubits)
    out = np.array([np.stack(circuit(x, theta)) for x in flat])
    return out.reshape(inputs.shape)


def reference_gradients(
    ansatz: Ansatz, inputs: Any, theta: Any, weights: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``Σ weights · ⟨Z⟩`` w.r.t. inputs (B, n) and θ, by PennyLane (autograd)."""
    circuit = make_qnode(ansatz, interface="autograd")
    grads_x, grad_theta = [], np.zeros(ansatz.n_params)
    for x, w in zip(np.asarray(inputs, np.float64), np.asarray(weights, np.float64)):

        def loss(x, theta, w=w):
            return pnp.sum(w * pnp.stack(circuit(x, theta)))

        gx, gt = qml.grad(loss, argnums=[0, 1])(
            pnp.array(x, requires_grad=True),
            pnp.array(np.asarray(theta, np.float64), requires_grad=True),
        )
        grads_x.append(gx)
        grad_theta += gt
    return np.array(grads_x), grad_theta


def draw_ansatz(ansatz: Ansatz, theta: Any = None, **kwargs: Any):
    """Draw encoding + ansatz with ``qml.draw_mpl``; returns ``(fig, ax)``.

    ``theta`` defaults to zeros (the drawing shows the structure, not values).
    """
    theta = np.zeros(ansatz.n_params) if theta is None else np.asarray(theta)

    def circuit(inputs, theta):
        qml.AngleEmbedding(inputs, wires=range(ansatz.n_qubits), rotation="X")
        apply_ansatz(ansatz, theta)
        return [qml.expval(qml.PauliZ(q)) for q in range(ansatz.n_qubits)]

    kwargs.setdefault("decimals", None)
    return qml.draw_mpl(circuit, **kwargs)(np.zeros(ansatz.n_qubits), theta)


def simulate_reference_jax(ansatz: Ansatz, inputs: Any, theta: Any) -> Any:
    """Same contract as `qhd_lib.circuits.simulate` through PennyLane's JAX interface (traceable:
    usable inside `jax.jit` and `jax.grad`, as the released code did). Single precision unless
    x64 is enabled; PennyLane's complex128 → complex64 cast warning is silenced here only."""
    import warnings

    import jax
    import jax.numpy as jnp

    circuit = make_qnode(ansatz, interface="jax")
    flat = jnp.reshape(inputs, (-1, ansatz.n_qubits))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*complex128.*complex64.*")
        warnings.filterwarnings("ignore", message=".*[Cc]asting.*complex.*")
        out = jax.vmap(lambda x: jnp.stack(circuit(x, theta)))(flat)
    return jnp.reshape(out, jnp.shape(inputs))


def apply_noisy_ansatz(ansatz: Ansatz, theta: Any, p_depolarizing: float) -> None:
    """Queue the ansatz's gates with ``qml.DepolarizingChannel(p)`` on each wire of every
    two-qubit gate, right after it (the noise model of `qhd_lib.circuits.noise`)."""
    for gate in ansatz.gates:
        apply_gate(gate, ansatz.angle_scale, theta)
        if gate.control is not None:
            for wire in gate.wires:
                qml.DepolarizingChannel(p_depolarizing, wires=wire)


@functools.cache
def make_noisy_qnode(ansatz: Ansatz, p_depolarizing: float, readout_error: float) -> qml.QNode:
    """A QNode ``(inputs, theta) -> list of ⟨Z⟩`` on ``default.mixed`` (autograd, float64).

    Readout error is ``qml.BitFlip(ε)`` on every wire before measuring: what the device's
    ``readout_prob`` applies, which PennyLane 0.45.1 cannot use for expectation values (its
    ``default.mixed`` hands the float to code that expects a list of channels: TypeError).
    """
    device = qml.device("default.mixed", wires=ansatz.n_qubits)

    @qml.qnode(device, interface="autograd")
    def circuit(inputs, theta):
        qml.AngleEmbedding(inputs, wires=range(ansatz.n_qubits), rotation="X")
        apply_noisy_ansatz(ansatz, theta, p_depolarizing)
        for wire in range(ansatz.n_qubits):
            qml.BitFlip(readout_error, wires=wire)
        return [qml.expval(qml.PauliZ(q)) for q in range(ansatz.n_qubits)]

    return circuit


def simulate_reference_noisy(
    ansatz: Ansatz, inputs: Any, theta: Any, p_depolarizing: float, readout_error: float
) -> np.ndarray:
    """Same contract as `qhd_lib.circuits.noise.simulate_noisy`, by PennyLane's ``default.mixed``
    in float64 (one execution per input; its 4^n density matrix limits it to a few qubits)."""
    inputs = np.asarray(inputs, np.float64)
    circuit = make_noisy_qnode(ansatz, float(p_depolarizing), float(readout_error))
    theta = pnp.asarray(np.asarray(theta, np.float64))
    flat = inputs.reshape(-1, ansatz.n_qubits)
    out = np.array([np.stack(circuit(x, theta)) for x in flat])
    return out.reshape(inputs.shape)


def sample_reference_shots(
    ansatz: Ansatz, inputs: Any, theta: Any, shots: int, repeats: int, seed: int
) -> np.ndarray:
    """``repeats`` independent ``shots``-shot estimates of every ⟨Z_q⟩ for one input (n_qubits,),
    by ``default.qubit`` with a shot vector and a seeded device: (repeats, n_qubits).

    All qubits are measured in each shot, so unlike `qhd_lib.circuits.shots` the estimates of
    one repeat are correlated; each one's distribution is the same.
    """
    device = qml.device("default.qubit", wires=ansatz.n_qubits, seed=seed)

    @qml.qnode(device, interface="autograd")
    def circuit(inputs, theta):
        qml.AngleEmbedding(inputs, wires=range(ansatz.n_qubits), rotation="X")
        apply_ansatz(ansatz, theta)
        return [qml.expval(qml.PauliZ(q)) for q in range(ansatz.n_qubits)]

    run = qml.set_shots(circuit, shots=[(shots, repeats)])
    out = run(np.asarray(inputs, np.float64), np.asarray(theta, np.float64))
    return np.array([np.stack(r) for r in out], np.float64)
