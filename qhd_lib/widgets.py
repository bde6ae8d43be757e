"""The interactive cells of the chapters (ipywidgets), one function per widget.

Each chapter also draws the widget's default view in a plain cell, so the rendered book shows
a static figure; these functions add the sliders for readers running the notebook.
"""

from __future__ import annotations

import numpy as np


def parameter_shift_explorer(f, grad_f, shift: float = np.pi / 2):
    """Move θ and see f(θ), its tangent from autodiff and the two shifted evaluations of eq. 10.

    ``f`` and ``grad_f`` map a float θ to floats (e.g. a jitted one-parameter circuit).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    grid = np.linspace(-np.pi, 2 * np.pi, 181)
    curve = np.array([f(t) for t in grid])

    def show(theta: float) -> None:
        fig, ax = plt.subplots(figsize=(6.4, 3.2))
        ax.plot(grid, curve, color="k", lw=1, label="f(θ)")
        slope = grad_f(theta)
        shifted = (f(theta + shift) - f(theta - shift)) / 2
        span = np.array([-0.8, 0.8])
        ax.plot(theta + span, f(theta) + slope * span, lw=2, label=f"autodiff f'(θ) = {slope:+.4f}")
        ax.scatter(
            [theta - shift, theta + shift],
            [f(theta - shift), f(theta + shift)],
            zorder=3,
            label=f"shift rule ½[f(θ+π/2) − f(θ−π/2)] = {shifted:+.4f}",
        )
        ax.axvline(theta, color="grey", lw=0.5)
        ax.set_xlabel("θ")
        ax.legend(fontsize=8, loc="lower left")
        plt.show()

    return widgets.interact(
        show, theta=widgets.FloatSlider(value=0.6, min=-np.pi / 2, max=3 * np.pi / 2, step=0.05)
    )


def ansatz_explorer(inputs: np.ndarray, seed: int = 0):
    """Pick an ansatz, its stride and its layers: redraw the circuit, the qubit connectivity and
    the sensitivity |∂⟨Z_q⟩/∂x_j| of every output to every input pixel for one ``inputs`` patch."""
    import ipywidgets as widgets
    import jax
    import matplotlib.pyplot as plt

    from qhd_lib.circuits import init_params, make_ansatz, simulate
    from qhd_lib.circuits.reference import draw_ansatz
    from qhd_lib.plotting import qubit_connectivity, sensitivity_map

    def show(name: str, stride: int, layers: int) -> None:
        try:
            ansatz = make_ansatz(
                name, stride=None if name == "released_hqconv" else stride, layers=layers
            )
        except ValueError as error:
            print(error)
            return
        theta = init_params(jax.random.key(seed), ansatz)
        jac = jax.jacobian(lambda x: simulate(ansatz, x, theta))(np.asarray(inputs, np.float32))
        draw_ansatz(
            make_ansatz(
                name, stride=ansatz.stride if name != "released_hqconv" else None, layers=1
            ),
            style="pennylane",
            fontsize=9,
        )
        plt.show()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=[1.6, 1])
        qubit_connectivity(ansatz, ax=axes[0])
        sensitivity_map(np.asarray(jac), ax=axes[1], title=f"{layers} layer(s)")
        plt.show()

    return widgets.interact(
        show,
        name=widgets.Dropdown(options=["hqconv", "fqconv", "released_hqconv"], value="hqconv"),
        stride=widgets.IntSlider(value=1, min=1, max=11),
        layers=widgets.IntSlider(value=3, min=1, max=5),
    )
