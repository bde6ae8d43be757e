"""The chapters' widgets: for each, a render function (one view → a figure or a text) and its
controls.

In Jupyter or Colab a chapter calls the widget's function (``ansatz_explorer()``), which wraps the
render function in ipywidgets. The rendered book has no kernel: the Sphinx extension
`qhd_lib.sphinx_explorers` calls the same render function for every valid combination of the
controls' book values at build time and switches the pictures with plain HTML selectors. A render
function raises ValueError for a combination the library rejects (the live widget prints the
message, the book leaves the combination out).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

if TYPE_CHECKING:
    import ipywidgets
    from matplotlib.figure import Figure

#: What a render function returns: one figure, several (shown one below the other) or a text.
View: TypeAlias = "Figure | tuple[Figure, ...] | str"


@dataclass(frozen=True)
class Slider:
    """A numeric slider from ``start`` to ``stop`` in ``step``s, at ``default`` to begin with.

    The book offers the values ``default ± k·book_step`` inside the range and both ends
    (``book_step=None``: every step). Integers throughout give an integer slider.
    """

    name: str
    start: float
    stop: float
    step: float
    default: float
    book_step: float | None = None

    @property
    def is_int(self) -> bool:
        numbers = (self.start, self.stop, self.step, self.default, self.book_step or self.step)
        return all(isinstance(n, int) for n in numbers)

    def book_values(self) -> tuple[float, ...]:
        """The values the book offers, in increasing order."""
        step = self.book_step or self.step
        below = math.floor((self.default - self.start) / step + 1e-9)
        above = math.floor((self.stop - self.default) / step + 1e-9)
        grid = [round(self.default + k * step, 10) for k in range(-below, above + 1)]
        ends = [end for end in (self.start, self.stop) if min(abs(end - v) for v in grid) > 1e-9]
        return tuple(sorted(grid + ends))

    def live(self) -> ipywidgets.Widget:
        import ipywidgets as widgets

        kind = widgets.IntSlider if self.is_int else widgets.FloatSlider
        return kind(
            value=self.default,
            min=self.start,
            max=self.stop,
            step=self.step,
            description=self.name,
            continuous_update=False,
        )


@dataclass(frozen=True)
class Choice:
    """A choice among ``options`` (the first to begin with); ``(False, True)`` is a checkbox."""

    name: str
    options: tuple[Any, ...]

    @property
    def default(self) -> Any:
        return self.options[0]

    def book_values(self) -> tuple[Any, ...]:
        return self.options

    def live(self) -> ipywidgets.Widget:
        import ipywidgets as widgets

        if self.options == (False, True):
            return widgets.Checkbox(value=False, description=self.name)
        return widgets.Dropdown(options=self.options, value=self.default, description=self.name)


@dataclass(frozen=True)
class Explorer:
    """A widget: ``prepare()`` builds its data once and returns ``render(**view)``.

    ``name`` is the function a chapter calls (``qhd_lib.widgets.<name>()``), ``chapter`` the book
    page (Sphinx docname) whose code cell calls it.
    """

    name: str
    chapter: str
    controls: tuple[Slider | Choice, ...]
    prepare: Callable[[], Callable[..., View]]

    @property
    def default_view(self) -> dict[str, Any]:
        return {control.name: control.default for control in self.controls}

    def book_views(self) -> Iterator[dict[str, Any]]:
        """Every combination of the controls' book values, valid or not, in the controls' order."""
        names = [control.name for control in self.controls]
        for values in itertools.product(*(control.book_values() for control in self.controls)):
            yield dict(zip(names, values))

    def live(self) -> ipywidgets.interactive:
        """The ipywidgets form: the controls and, below them, the view they select."""
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        render = self.prepare()

        def show(**view: Any) -> None:
            try:
                shown = render(**view)
            except ValueError as error:
                print(error)
                return
            if isinstance(shown, str):
                print(shown)
            else:
                plt.show()

        return widgets.interactive(show, **{c.name: c.live() for c in self.controls})


# --- chapter 1: the forward process --------------------------------------------------------------


def noised_digits(digits: np.ndarray, t: int, schedule: str) -> Figure:
    """``digits`` at step ``t`` of the forward process (eq. 4, one noise draw with seed 0)."""
    import jax
    import jax.numpy as jnp

    from qhd_lib import diffusion
    from qhd_lib.plotting import image_grid

    s = diffusion.make_schedule(schedule, 1000)
    noise = jax.random.normal(jax.random.key(0), digits.shape)
    x_t = diffusion.q_sample(s, digits, jnp.full((digits.shape[0],), t), noise)
    return image_grid(
        x_t,
        titles=[f"t={t}"] * len(digits),
        suptitle=rf"{schedule}: $\bar\alpha_t$={float(s.alphas_cumprod[t]):.3f}",
    )


def _forward_process() -> Callable[..., View]:
    """Chapter 1's digits: the first eight MNIST training images, in [-1, 1]."""
    from qhd_lib import data

    images, _ = data.load("mnist", "train")
    return functools.partial(noised_digits, data.to_model_range(images[:8]))


FORWARD_PROCESS = Explorer(
    name="forward_process_explorer",
    chapter="notebooks/01_diffusion",
    controls=(
        Slider("t", 0, 999, 1, default=250, book_step=25),
        Choice("schedule", ("cosine", "linear")),
    ),
    prepare=_forward_process,
)


def forward_process_explorer() -> ipywidgets.interactive:
    """Move t and switch the schedule: chapter 1's eight MNIST digits at step t."""
    return FORWARD_PROCESS.live()


# --- chapter 2: the parameter-shift rule ---------------------------------------------------------


def parameter_shift(
    f: Callable[[float], float], grad_f: Callable[[float], float], theta: float
) -> Figure:
    """f(θ), its tangent from autodiff at ``theta`` and the two shifted evaluations of eq. 10."""
    import matplotlib.pyplot as plt

    shift = np.pi / 2
    grid = np.linspace(-np.pi, 2 * np.pi, 181)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    ax.plot(grid, [f(t) for t in grid], color="k", lw=1, label="f(θ)")
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
    return fig


def _parameter_shift() -> Callable[..., View]:
    """Chapter 2's f: ⟨Z⟩ of one qubit after RX(0.4) (the input) and RX(θ)."""
    import jax
    import jax.numpy as jnp

    from qhd_lib.circuits import Ansatz, Gate, simulate

    one_qubit = Ansatz(
        name="one rx",
        n_qubits=1,
        n_params=1,
        gates=(Gate("rx", None, 0, 0),),
        angle_scale=1.0,
        layers=1,
        stride=None,
        channels=1,
        pixels=1,
    )
    f = jax.jit(lambda t: simulate(one_qubit, jnp.array([0.4]), jnp.array([t]))[0])
    grad_f = jax.jit(jax.grad(f))
    return functools.partial(parameter_shift, lambda t: float(f(t)), lambda t: float(grad_f(t)))


PARAMETER_SHIFT = Explorer(
    name="parameter_shift_explorer",
    chapter="notebooks/02_variational_circuits",
    controls=(Slider("theta", -np.pi / 2, 3 * np.pi / 2, 0.05, default=0.6, book_step=0.2),),
    prepare=_parameter_shift,
)


def parameter_shift_explorer() -> ipywidgets.interactive:
    """Move θ and see chapter 2's f(θ), its tangent from autodiff and the two shifted
    evaluations of eq. 10."""
    return PARAMETER_SHIFT.live()


# --- chapter 3: ansätze, strides and layers ------------------------------------------------------


def ansatz_views(
    inputs: np.ndarray, name: str, stride: int, layers: int, seed: int = 0
) -> tuple[Figure, Figure]:
    """The circuit of one layer, the qubit connectivity and the sensitivity |∂⟨Z_q⟩/∂x_j| of
    every output to every input pixel for one ``inputs`` patch (θ drawn with ``seed``).

    Raises the library's ValueError for a stride the ansatz does not accept.
    """
    import jax
    import matplotlib.pyplot as plt

    from qhd_lib.circuits import init_params, make_ansatz, simulate
    from qhd_lib.circuits.reference import draw_ansatz
    from qhd_lib.plotting import qubit_connectivity, sensitivity_map

    ansatz = make_ansatz(name, stride=stride, layers=layers)
    theta = init_params(jax.random.key(seed), ansatz)
    jac = jax.jit(jax.jacobian(lambda x: simulate(ansatz, x, theta)))(
        np.asarray(inputs, np.float32)
    )
    circuit, _ = draw_ansatz(
        make_ansatz(name, stride=stride, layers=1), style="pennylane", fontsize=9
    )
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), width_ratios=[1.6, 1])
    qubit_connectivity(ansatz, ax=axes[0])
    sensitivity_map(np.asarray(jac), ax=axes[1], title=f"{layers} layer(s)")
    return circuit, fig


def _ansatz() -> Callable[..., View]:
    """Chapter 3's random patch: 12 inputs uniform in [-1.5, 1.5) (key 0)."""
    import jax

    patch = jax.random.uniform(jax.random.key(0), (12,), minval=-1.5, maxval=1.5)
    return functools.partial(ansatz_views, np.asarray(patch))


ANSATZ = Explorer(
    name="ansatz_explorer",
    chapter="notebooks/03_quantum_conv_ansatze",
    controls=(
        Choice("name", ("hqconv", "fqconv", "released_hqconv")),
        Slider("stride", 1, 11, 1, default=1),
        Slider("layers", 1, 5, 1, default=3),
    ),
    prepare=_ansatz,
)


def ansatz_explorer() -> ipywidgets.interactive:
    """Pick an ansatz, its stride and its layers: redraw the circuit, the qubit connectivity and
    the sensitivity map for chapter 3's patch."""
    return ANSATZ.live()


# --- chapter 5: parameters of the QVU-Net --------------------------------------------------------


@functools.cache
def _qvunet_counts(name: str, layers: int, q: int | None) -> tuple[int, int]:
    """(all parameters, circuit parameters) of ``make_model(name)``; only shapes are traced."""
    from qhd_lib import models

    overrides = {} if q is None else {"q": q}
    shapes = models.param_shapes(models.make_model(name, layers=layers, **overrides))
    return models.count_params(shapes), models.count_params(models.quantum_params(shapes))


def qvunet_parameters(ansatz: str, q: int, layers: int, full: bool) -> str:
    """The parameter count of a QVU-Net with ``q`` circuits (or the Full vertex) per vertex
    layer, against the classical U-Net's."""
    from qhd_lib.paper import PARAMS

    n, circuits = _qvunet_counts(("full" if full else "1") + ansatz, layers, None if full else q)
    return (
        f"{'Full' if full else q} × {ansatz}, {layers} layers: {n:,} parameters "
        f"({circuits:,} in circuits; {PARAMS['classical'] - n:,} fewer than the classical U-Net)"
    )


QVUNET_PARAMETERS = Explorer(
    name="qvunet_parameters_explorer",
    chapter="notebooks/05_qvunet",
    controls=(
        Choice("ansatz", ("hqconv", "fqconv")),
        Slider("q", 1, 13, 1, default=1),
        Slider("layers", 1, 6, 1, default=3),
        Choice("full", (False, True)),
    ),
    prepare=lambda: qvunet_parameters,
)


def qvunet_parameters_explorer() -> ipywidgets.interactive:
    """Pick the vertex's ansatz, q, layers or the Full vertex: chapter 5's parameter count."""
    return QVUNET_PARAMETERS.live()


# --- chapter 6: quanvolution ---------------------------------------------------------------------


def quanvolution_maps(
    image: np.ndarray, label: int, features: np.ndarray, theta: np.ndarray, patch_stride: int
) -> Figure:
    """A digit, the first 3 channels of its 14×14 feature map (grid: the 2×2 patches of stride
    2) and the quanvolutional filter's ⟨Z⟩ outputs with HQConv parameters ``theta``.

    Raises the library's ValueError for a patch stride the feature map does not allow.
    """
    import matplotlib.pyplot as plt

    from qhd_lib import models
    from qhd_lib.circuits import make_ansatz

    run = models.quantum.simulator("jax")
    outputs = models.quanvolution(
        run, make_ansatz("hqconv"), features[..., :3], theta, patch_stride
    )
    fig, axes = plt.subplots(2, 4, figsize=(10, 5))
    axes[0, 0].imshow(image[0, ..., 0], vmin=-1, vmax=1)
    axes[0, 0].set_title(f"MNIST digit {label}")
    axes[1, 0].axis("off")
    for c in range(3):
        ax = axes[0, c + 1]
        ax.imshow(features[0, ..., c], cmap="RdBu")
        for k in range(0, 15, 2):
            ax.axhline(k - 0.5, color="k", lw=0.4)
            ax.axvline(k - 0.5, color="k", lw=0.4)
        ax.set_title(f"input channel {c} (14×14)")
        axes[1, c + 1].imshow(outputs[0, ..., c], cmap="RdBu", vmin=-1, vmax=1)
        axes[1, c + 1].set_title(f"⟨Z⟩ channel {c}, patch stride {patch_stride}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.tight_layout()
    return fig


def _quanvolution() -> Callable[..., View]:
    """Chapter 6's feature map: MNIST test digit 0 through a fresh 7×7 input conv (key 0) and
    level 0's downsample (key 1); HQConv parameters from key 2."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from qhd_lib import models
    from qhd_lib.circuits import init_params, make_ansatz
    from qhd_lib.data import load, to_model_range

    images, labels = load("mnist", "test")
    x = jnp.asarray(to_model_range(images[:1]))
    init_conv = nn.Conv(10, (7, 7), padding=3)
    down = models.Downsample(10, 4)
    h28 = init_conv.apply(init_conv.init(jax.random.key(0), x), x)
    h14 = down.apply(down.init(jax.random.key(1), h28), h28)
    theta = init_params(jax.random.key(2), make_ansatz("hqconv"))
    return functools.partial(quanvolution_maps, x, int(labels[0]), h14, theta)


QUANVOLUTION = Explorer(
    name="quanvolution_explorer",
    chapter="notebooks/06_quanvunet",
    controls=(Choice("patch_stride", (2, 1)),),
    prepare=_quanvolution,
)


def quanvolution_explorer() -> ipywidgets.interactive:
    """Switch the patch stride: chapter 6's feature map through the quanvolutional filter."""
    return QUANVOLUTION.live()


#: Every widget of the book, by the name of the function a chapter calls.
EXPLORERS: dict[str, Explorer] = {
    e.name: e for e in (FORWARD_PROCESS, PARAMETER_SHIFT, ANSATZ, QVUNET_PARAMETERS, QUANVOLUTION)
}
