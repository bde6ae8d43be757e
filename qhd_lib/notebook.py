"""The first code cell of every chapter: one install line for Colab, one scale, one seed, one style.

Importing this module tells JAX not to pre-allocate most of a GPU's memory (it runs beside torch on
a shared Colab runtime); it must therefore be imported before JAX, as the setup cell does. It
imports nothing heavy itself, so the test legs (``noxfile.py``) read the install line from it.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qhd_lib.scale import Scale

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

#: The project's repository; the one place the chapters' install line takes it from.
REPOSITORY = "https://github.com/qhd-book/qhd-book"

#: The first code cell of every chapter, verbatim (a test keeps the chapters equal to it). On Colab
#: it installs the library with PennyLane and ipywidgets on the runtime's own JAX, NumPy and torch
#: (the declared ranges admit them, so pip reinstalls none of them); torchmetrics only beside a
#: torch the runtime already has, so it never pulls a torch build of its own.
SETUP_CELL = f"""\
import importlib.util
import sys
if "google.colab" in sys.modules:  # Colab only: the library, on the runtime's own JAX and torch
    extras = "colab,metrics" if importlib.util.find_spec("torch") else "colab"
    %pip install -q "qhd-book[{{extras}}] @ git+{REPOSITORY}"
from qhd_lib.notebook import setup
SCALE = setup(seed=0)
SCALE"""


def install_command(source: str, *, torch_present: bool) -> list[str]:
    """The ``pip install`` arguments the setup cell runs on Colab, with ``source`` (a ``git+...``
    URL or a path) in place of the repository: how the Colab test legs run the very same line."""
    extras = "colab,metrics" if torch_present else "colab"
    line = next(line for line in SETUP_CELL.splitlines() if "%pip install" in line)
    requirement = line.split('"')[1].replace("{extras}", extras)
    return ["install", "-q", requirement.replace(f"git+{REPOSITORY}", source)]


def installed_source() -> str | None:
    """Where the running ``qhd_lib`` was installed from (URL and commit), or None for a checkout.

    pip records a VCS install's URL and commit in the distribution's ``direct_url.json``; an
    editable checkout (``pip install -e``) prints nothing, its commit is in its own git.
    """
    try:
        raw = metadata.distribution("qhd-book").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not raw:
        return None
    origin = json.loads(raw)
    if origin.get("dir_info", {}).get("editable"):
        return None
    commit = origin.get("vcs_info", {}).get("commit_id")
    return f"{origin['url']}@{commit}" if commit else origin["url"]


def setup(seed: int = 0) -> Scale:
    """Seed Python and NumPy, apply the book's plotting style and return ``QHD_SCALE``.

    JAX randomness is explicit (keys), so each chapter makes its own ``jax.random.key(seed)``.
    """
    import numpy as np

    from qhd_lib.plotting import use_book_style
    from qhd_lib.scale import get_scale

    scale = get_scale()
    source = installed_source()
    if source is not None:
        print(f"qhd-book {metadata.version('qhd-book')} from {source}")
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
    """``results/<relative>``: the checkout's committed results, else the copy installed with
    the library.

    Chapters run from ``notebooks/`` (Jupyter, nbval) or the repository root (the book build) read
    the repository's ``results/``; installed from git (Colab), the same files come as package data
    (``qhd_lib/results``, see ``pyproject.toml``).
    """
    for root in (Path.cwd(), *Path.cwd().parents):
        if (root / "results").is_dir() and (root / "qhd_lib").is_dir():
            return root / "results" / relative
    return Path(__file__).resolve().parent / "results" / relative
