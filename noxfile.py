"""The chapters on readers' package stacks, not only on CI's pinned one (``make colab``).

Each session builds a fresh virtual environment holding a *runtime* stack (``.ci/stack-*.txt``:
a Colab-like older one, and the newest releases of a dated day), installs the library with the very
line the chapters' setup cell runs on Colab (``qhd_lib.notebook.SETUP_CELL``) from a ``git+file://``
clone of this checkout's HEAD, fails if that line reinstalled any package of the runtime, and
executes every chapter at smoke scale from a folder outside the checkout, so the chapters read the
committed results that came with the install. The legs install no torch (PyPI has no CPU build of
it for them); no chapter computes a metric, so none needs it.

The interpreter is Python 3.12, Colab's: the first ``python3.12`` on PATH that runs, else one of
pyenv's installed versions; failing both, 3.11, on which the newest JAX is 0.10
(``QHD_LEG_PYTHON`` chooses another). The session log names it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from glob import glob
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from qhd_lib.notebook import install_command  # noqa: E402


def colab_python() -> str:
    """An interpreter of Colab's Python 3.12 that really runs (a pyenv shim may not), or 3.11."""
    pyenv = os.path.expanduser(os.environ.get("PYENV_ROOT", "~/.pyenv"))
    found = [shutil.which("python3.12"), *sorted(glob(f"{pyenv}/versions/3.12*/bin/python3.12"))]
    for candidate in filter(None, found):
        works = subprocess.run([candidate, "-c", "import ssl, venv"], capture_output=True)
        if works.returncode == 0:
            return candidate
    return "3.11"


PYTHON = os.environ.get("QHD_LEG_PYTHON") or colab_python()
TOOLS = ROOT / ".ci" / "stack-tools.txt"
CHECKOUT_LIB = ROOT / "qhd_lib"  # the legs must import the installed copy, never this one

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = ["colab", "newest"]


def pinned(requirements: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line of a ``pip freeze`` output."""
    pins = {}
    for line in requirements.splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def reinstalled(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The runtime's packages whose version the install changed or removed, as ``name a -> b``."""
    return [
        f"{name} {version} -> {after.get(name, 'removed')}"
        for name, version in sorted(before.items())
        if after.get(name) != version
    ]


def chapters_on(session: nox.Session, stack: str) -> None:
    """Install ``stack`` as the runtime, then the library as Colab would, then run every chapter."""
    stack_file = ROOT / ".ci" / f"stack-{stack}.txt"
    session.log(f"{stack} stack on Python {PYTHON}, the library from {ROOT} at HEAD")
    pip = [line for line in stack_file.read_text().splitlines() if line.startswith("pip==")]
    session.install("-q", "--upgrade", *pip or ["pip"])  # the runtime's pip first, as on Colab
    session.install("-q", "-r", str(stack_file), "-r", str(TOOLS))
    before = pinned(session.run("python", "-m", "pip", "freeze", silent=True))
    has_torch = (
        session.run(
            "python",
            "-c",
            "import importlib.util; print(bool(importlib.util.find_spec('torch')))",
            silent=True,
        ).strip()
        == "True"
    )
    session.run(
        "python", "-m", "pip", *install_command(f"git+file://{ROOT}", torch_present=has_torch)
    )
    after = pinned(session.run("python", "-m", "pip", "freeze", silent=True))
    changed = reinstalled(before, after)
    if changed:
        session.error("the chapters' install line changed the runtime: " + "; ".join(changed))
    with tempfile.TemporaryDirectory(prefix=f"qhd-{stack}-") as outside:
        committed_notebooks(Path(outside))
        env = {"QHD_SCALE": "smoke", "JAX_PLATFORMS": "cpu", "MPLBACKEND": "Agg"}
        with session.chdir(outside):  # not the checkout: its qhd_lib and egg-info would shadow
            session.run(
                "python", "-c",
                "import qhd_lib; from qhd_lib.notebook import results_path, installed_source; "
                f"assert not qhd_lib.__file__.startswith({str(CHECKOUT_LIB)!r}), qhd_lib.__file__; "
                "assert installed_source(), 'qhd_lib was not installed from git'; "
                "assert results_path('epoch1/mnist_classical_seed42/run.json').is_file(), "
                "'the committed results did not come with the install'",
                env=env,
            )  # fmt: skip
            session.run(
                "python", "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-q",
                "-p", "no:cacheprovider", outside, env=env,
            )  # fmt: skip


def committed_notebooks(folder: Path) -> None:
    """Write HEAD's chapters into ``folder``: the same commit as the library the legs install."""
    listing = git("ls-tree", "--name-only", "HEAD", "notebooks/")
    for name in (n for n in listing.split() if n.endswith(".ipynb")):
        (folder / Path(name).name).write_text(git("show", f"HEAD:{name}"))


def git(*args: str) -> str:
    """Run git in this checkout and return its output."""
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout


def head_is_checked_out() -> None:
    """Warn when the working tree differs from HEAD: the legs install HEAD, not the edits."""
    if git("status", "--porcelain", "--untracked-files=no").strip():
        print("note: uncommitted changes are not part of these legs (they install HEAD)")


@nox.session(python=PYTHON)
def colab(session: nox.Session) -> None:
    """The chapters on a Colab-like older stack (JAX 0.7, flax 0.11, NumPy 2.0, ipywidgets 7)."""
    head_is_checked_out()
    chapters_on(session, "colab")


@nox.session(python=PYTHON)
def newest(session: nox.Session) -> None:
    """The chapters on the newest releases of the day named in ``.ci/stack-newest.txt``."""
    head_is_checked_out()
    chapters_on(session, "newest")


DEVICE_STACK = ROOT / ".ci" / "stack-device.txt"
DEVICE_CACHE = Path(os.path.expanduser("~/.cache/qhd-book/device-check"))  # JAX's, per run
# One run per network, at smoke scale, through the campaign: the transfer run trains classical
# and then 1FQConv, so these six cover every model of qhd_lib.models.
DEVICE_RUNS = (
    "mnist_classical_seed42",
    "mnist_1hqconv_seed42",
    "mnist_7hqconv_seed42",
    "mnist_fullhqconv_seed42",
    "mnist_1fqconv_transfer_seed42",
    "mnist_quanvunet_seed42",
)


@nox.session(python=PYTHON)
def device(session: nox.Session) -> None:
    """The GPU machine's stack on the CPU (``make device-check``, issue 19): Python 3.12,
    JAX 0.11.2, no PennyLane, torch or matplotlib; every model trains and samples at smoke scale
    through ``scripts/device_campaign.py run``. Each run's JAX cache comes back as a slot's does
    and is handed in again at the next check (``DEVICE_CACHE``), which then compiles nothing."""
    from qhd_lib.experiments.campaign import pack_data  # the host packs the data, as `prepare`

    session.install("-q", "-r", str(DEVICE_STACK))
    session.install("-q", "--no-deps", str(ROOT))
    session.run(
        "python", "-c",
        "import importlib.util as u, sys; absent = ('torch', 'pennylane', 'matplotlib', "
        "'platformdirs'); extra = [m for m in absent if u.find_spec(m)]; "
        "sys.exit(f'not on the GPU machine: {extra}' if extra else 0)",
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="qhd-device-") as scratch:
        folder = Path(scratch)
        pack_data("mnist", folder / "data")
        for name in DEVICE_RUNS:
            out, state = folder / name, DEVICE_CACHE / name
            state.mkdir(parents=True, exist_ok=True)
            session.run(
                "python", str(ROOT / "scripts" / "device_campaign.py"), "run",
                "--deadline-s", "600",
                "--protocol", "smoke", "--run", name, "--data", str(folder / "data"),
                "--results", str(folder / "results"), "--out", str(out), "--state", str(state),
                env={"JAX_PLATFORMS": "cpu", "QHD_DATA_DIR": ""},
            )  # fmt: skip
            files = sorted(p.name for p in out.iterdir())
            record = json.loads((out / "run.json").read_text())
            if record.get("status") != "complete" or len(files) > 8:
                session.error(f"{name}: {record.get('status')}, files {files}")
            session.log(f"{name}: complete, {len(files)} files back: {', '.join(files)}")
            shutil.copyfile(out / "jax_cache.tar", state / "jax_cache.tar")
