"""Ansätze as data: every circuit of the paper is a tuple of `Gate` records.

Executors (the fast simulator in `qhd_lib.circuits.simulator`, the PennyLane reference in
`qhd_lib.circuits.reference`) read these lists; none of them hard-codes an ansatz.

Conventions (Sect. 3.1 of the paper, and what its released code does where the text is silent):

- Qubits are **channel-major**: qubit ``pixels * c + p`` holds pixel ``p`` of channel ``c``
  (pixels of a 2×2 patch in row-major order).
- Every circuit starts with angle encoding: ``RX(x_q)`` on qubit ``q`` with the raw input value.
- Trainable parameters ``θ`` are initialised U[0, 1) and enter the HQConv/FQConv gates as the
  angle ``2π·θ`` (``Ansatz.angle_scale``); BasicEntanglerLayers uses ``θ`` itself.
- Gate **direction** follows the paper's text (``q_p`` control, ``q_{p+s}`` target). Where the
  text is silent, the **order** of the pairs follows the released code: pixels ``p = 3, 2, 1, 0``
  and channels from the last to the first, so parameters ``0..7`` of a HQConv layer belong to
  the last channel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from qhd_lib.errors import ConfigError

GateKind = Literal["crz", "crx", "rx", "cnot"]
AnsatzName = Literal["hqconv", "fqconv", "basic_entangler", "released_hqconv"]

ANSATZ_NAMES: tuple[str, ...] = ("hqconv", "fqconv", "basic_entangler", "released_hqconv")
GATE_KINDS: tuple[str, ...] = ("crz", "crx", "rx", "cnot")
PARAMS_PER_LAYER: dict[str, int] = {"hqconv": 28, "fqconv": 24, "released_hqconv": 28}
DEFAULT_STRIDE: dict[str, int] = {"hqconv": 1, "fqconv": 4, "released_hqconv": 1}


@dataclass(frozen=True)
class Gate:
    """One gate: ``kind`` in {"crz", "crx", "rx", "cnot"}; ``param`` indexes θ (None: fixed)."""

    kind: GateKind
    control: int | None
    target: int
    param: int | None

    @property
    def wires(self) -> tuple[int, ...]:
        """The qubits the gate acts on, control first."""
        return (self.target,) if self.control is None else (self.control, self.target)


@dataclass(frozen=True)
class Ansatz:
    """A variational circuit as data: hashable, so it can be a static argument of `jax.jit`.

    ``n_params`` counts every trainable parameter (a model allocates them all), even those that
    no gate reads (the released HQConv uses 4 of its 28 per layer, see `used_params`).
    """

    name: str
    n_qubits: int
    n_params: int
    gates: tuple[Gate, ...]
    angle_scale: float
    layers: int
    stride: int | None
    channels: int
    pixels: int

    @property
    def params_per_layer(self) -> int:
        """Trainable parameters per layer (28 HQConv, 24 FQConv, n_qubits BasicEntangler)."""
        return self.n_params // self.layers

    @property
    def used_params(self) -> tuple[int, ...]:
        """Indices of θ read by at least one gate (the others get zero gradient)."""
        return tuple(sorted({g.param for g in self.gates if g.param is not None}))

    def layer_gates(self, layer: int) -> tuple[Gate, ...]:
        """The gates whose parameters belong to ``layer`` (0-based)."""
        lo, hi = layer * self.params_per_layer, (layer + 1) * self.params_per_layer
        return tuple(g for g in self.gates if g.param is not None and lo <= g.param < hi)


def _check_stride(name: str, stride: int, pixels: int, n_qubits: int) -> None:
    if name in ("hqconv", "released_hqconv"):
        if not 1 <= stride < pixels:
            raise ConfigError(
                f"stride {stride} makes control == target or leaves the channel for {pixels} "
                f"pixels per channel; HQConv's intra-channel stride must be 1..{pixels - 1}"
            )
    elif stride % n_qubits == 0:
        raise ConfigError(
            f"stride {stride} makes control == target on {n_qubits} qubits; FQConv's "
            f"inter-channel stride must not be a multiple of {n_qubits} (the paper uses {pixels})"
        )


def hqconv_layer(first_param: int, channels: int, pixels: int, stride: int) -> list[Gate]:
    """One HQConv layer (Fig. 5): A blocks in every channel, then B blocks between channels.

    A block of channel ``c``: for ``p = 3, 2, 1, 0`` (released-code order), CRZ then CRX with
    control ``q_p`` and target ``q_{(p+s) mod 4}`` of that channel (paper's direction); channels
    from the last to the first, 8 parameters each. B blocks: CRZ then CRX from the first qubit of
    channel ``c`` to the first qubit of channel ``c+1``, for ``c = C-2, ..., 0`` (released order).
    """
    gates: list[Gate] = []
    k = first_param
    for c in reversed(range(channels)):
        for p in reversed(range(pixels)):
            control, target = pixels * c + p, pixels * c + (p + stride) % pixels
            gates += [Gate("crz", control, target, k), Gate("crx", control, target, k + 1)]
            k += 2
    for c in reversed(range(channels - 1)):
        control, target = pixels * c, pixels * (c + 1)
        gates += [Gate("crz", control, target, k), Gate("crx", control, target, k + 1)]
        k += 2
    return gates


def fqconv_layer(first_param: int, channels: int, pixels: int, stride: int) -> list[Gate]:
    """One FQConv layer (Fig. 6): per channel a C block (4 CRZ) then a D block (4 CRX).

    Each gate has control ``q`` and target ``(q + s) mod n_qubits``; with the paper's ``s = 4``
    this links pixel ``p`` of channel ``c`` to the same pixel of channel ``c+1`` (cyclically).
    Pairs in released-code order: channels last to first, pixels ``p = 3, 2, 1, 0``.
    """
    n_qubits = channels * pixels
    gates: list[Gate] = []
    k = first_param
    for c in reversed(range(channels)):
        for kind in ("crz", "crx"):
            for p in reversed(range(pixels)):
                q = pixels * c + p
                gates.append(Gate(kind, q, (q + stride) % n_qubits, k))
                k += 1
    return gates


def released_hqconv_layer(first_param: int, channels: int, pixels: int) -> list[Gate]:
    """The HQConv layer the released code actually applies (no A blocks, pixel-major qubits).

    Its A-block loop runs ``n_qubits % 4 = 0`` times, so only the B blocks act, and they read
    the layer's first parameters (4 of 28 for 3 channels). It flattens a 2×2×3 patch
    pixel-major (channel fastest): its qubit ``k`` holds pixel ``k // C`` of channel ``k % C``,
    i.e. our channel-major qubit ``pixels * (k % C) + k // C``. Its B blocks act from its qubit
    ``4c`` (control) to ``4c + 4`` (target), last pair first; in our labels these are qubits
    0 → 5 and 5 → 10 for 3 channels: pixel 0 of channel 0, pixel 1 of channel 1, pixel 2 of
    channel 2. Inputs stay channel-major, so the same patch feeds both variants.
    """

    def ours(k: int) -> int:
        return pixels * (k % channels) + k // channels

    gates: list[Gate] = []
    k = first_param
    for c in reversed(range(channels - 1)):
        control, target = ours(pixels * c), ours(pixels * (c + 1))
        gates += [Gate("crz", control, target, k), Gate("crx", control, target, k + 1)]
        k += 2
    return gates


def basic_entangler_layer(first_param: int, n_qubits: int) -> list[Gate]:
    """One BasicEntanglerLayers layer (PennyLane's template): RX(θ_q) on every qubit, then a CNOT
    ring ``q → q+1`` closed by ``n-1 → 0`` (a single CNOT for 2 qubits, none for 1)."""
    gates = [Gate("rx", None, q, first_param + q) for q in range(n_qubits)]
    if n_qubits == 2:
        gates.append(Gate("cnot", 0, 1, None))
    elif n_qubits > 2:
        gates += [Gate("cnot", q, (q + 1) % n_qubits, None) for q in range(n_qubits)]
    return gates


def make_ansatz(
    name: str,
    channels: int = 3,
    pixels: int = 4,
    stride: int | None = None,
    layers: int = 3,
) -> Ansatz:
    """Build an ansatz on ``channels * pixels`` qubits as a gate list.

    ``name``: "hqconv" (Fig. 5, 28 parameters a layer for 3 channels), "fqconv" (Fig. 6, 24),
    "released_hqconv" (what the released code applies: 28 allocated, 4 used) or
    "basic_entangler" (PennyLane's BasicEntanglerLayers, ``n_qubits`` parameters a layer; the
    Full vertex uses ``channels=1, layers=4``). ``stride``: HQConv's intra-channel control →
    target distance (default 1), FQConv's distance in qubits (default 4 = next channel).
    """
    if name not in ANSATZ_NAMES:
        raise ConfigError(f"unknown ansatz {name!r}; choose one of {', '.join(ANSATZ_NAMES)}")
    for label, value in (("channels", channels), ("pixels", pixels), ("layers", layers)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    n_qubits = channels * pixels

    if name == "basic_entangler":
        if stride is not None:
            raise ConfigError(
                "basic_entangler has no stride (its CNOT ring links neighbours); leave stride=None"
            )
        gates = [
            g for layer in range(layers) for g in basic_entangler_layer(layer * n_qubits, n_qubits)
        ]
        return Ansatz(
            name, n_qubits, layers * n_qubits, tuple(gates), 1.0, layers, None, channels, pixels
        )

    if name == "released_hqconv" and stride not in (None, 1):
        raise ConfigError(
            "released_hqconv has no stride to choose (the released code applies "
            "no A blocks); leave stride=None"
        )
    if channels < 2 and name != "fqconv":
        raise ConfigError(f"{name} needs at least 2 channels for its B blocks, got {channels}")
    stride = DEFAULT_STRIDE[name] if stride is None else stride
    if not isinstance(stride, int):
        raise ConfigError(f"stride must be an integer, got {stride!r}")
    _check_stride(name, stride, pixels, n_qubits)
    per_layer = (
        2 * pixels * channels + 2 * (channels - 1) if "hqconv" in name else 2 * pixels * channels
    )
    gates = []
    for layer in range(layers):
        k = layer * per_layer
        if name == "hqconv":
            gates += hqconv_layer(k, channels, pixels, stride)
        elif name == "fqconv":
            gates += fqconv_layer(k, channels, pixels, stride)
        else:
            gates += released_hqconv_layer(k, channels, pixels)
    return Ansatz(
        name,
        n_qubits,
        layers * per_layer,
        tuple(gates),
        2 * math.pi,
        layers,
        stride,
        channels,
        pixels,
    )
