"""Variational circuits of the paper (Sect. 2.2 and 3.1): ansätze as data, executed fast.

- `make_ansatz` builds an `Ansatz` (a tuple of `Gate` records): HQConv (Fig. 5), FQConv
  (Fig. 6), BasicEntanglerLayers and the HQConv the released code actually applies.
- `simulate` runs it exactly in pure JAX (jit-able, differentiable, batched).
- `simulate_shots` estimates ⟨Z⟩ from S shots per qubit (keyed randomness), `simulate_noisy`
  computes exact ⟨Z⟩ under depolarising and readout noise (observables in the Heisenberg picture);
  `shots_executor` / `noisy_executor` wrap them with the signature of `simulate`.
- `plan_cost` lists the matrix products `simulate` runs and their real multiply-adds.
- `qhd_lib.circuits.reference` runs the same gate list on PennyLane (imported only on demand).
"""

from qhd_lib.circuits.ansatz import ANSATZ_NAMES, Ansatz, Gate, make_ansatz
from qhd_lib.circuits.cost import Contraction, PlanCost, plan_cost
from qhd_lib.circuits.noise import MAX_NOISY_QUBITS, noisy_executor, simulate_noisy
from qhd_lib.circuits.shots import shots_executor, simulate_shots
from qhd_lib.circuits.simulator import init_params, simulate

__all__ = [
    "ANSATZ_NAMES",
    "Ansatz",
    "Contraction",
    "Gate",
    "MAX_NOISY_QUBITS",
    "PlanCost",
    "make_ansatz",
    "init_params",
    "noisy_executor",
    "plan_cost",
    "shots_executor",
    "simulate",
    "simulate_noisy",
    "simulate_shots",
]
