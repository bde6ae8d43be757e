"""The first code cell of every chapter: one scale, one seed, one plotting style."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np

from qhd_lib.plotting import use_book_style
from qhd_lib.scale import Scale, get_scale


def setup(seed: int = 0) -> Scale:
    """Seed Python and NumPy, apply the book's plotting style and return ``QHD_SCALE``.

    JAX randomness is explicit (keys), so each chapter makes its own ``jax.random.key(seed)``.
    """
    scale = get_scale()
    random.seed(seed)
    np.random.seed(seed)
    use_book_style()
    warnings.filterwarnings("ignore", category=FutureWarning, module="jax")
    return scale


def show_source(obj: object) -> object:
    """Display the library source of ``obj`` (one source of truth: chapters show, never copy)."""
    import inspect

    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def results_path(relative: str) -> Path:
    """``results/<relative>`` of the repository, found from a notebook's working directory.

    Chapters run from ``notebooks/`` (Jupyter, nbval) or the repository root (the book build); both
    find the same committed results.
    """
    for root in (Path.cwd(), *Path.cwd().parents):
        if (root / "results").is_dir() and (root / "qhd_lib").is_dir():
            return root / "results" / relative
    return Path("results") / relative
