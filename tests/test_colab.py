"""What a reader on Colab depends on: the chapters' install line, the results that come with the
install, the GPU left to share. The legs themselves (``make colab``, ``noxfile.py``) run the
chapters on other package stacks; these tests pin down the pieces they rely on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qhd_lib import notebook

ROOT = Path(__file__).resolve().parents[1]


def test_install_command_is_the_setup_cells_line_with_another_source() -> None:
    args = notebook.install_command("git+file:///tmp/clone", torch_present=False)
    assert args == ["install", "-q", "qhd-book[colab] @ git+file:///tmp/clone"]
    assert f'"qhd-book[{{extras}}] @ git+{notebook.REPOSITORY}"' in notebook.SETUP_CELL


def test_install_adds_torchmetrics_only_beside_a_torch_the_runtime_has() -> None:
    with_torch = notebook.install_command("/src", torch_present=True)
    assert with_torch[-1] == "qhd-book[colab,metrics] @ /src"
    assert "'colab,metrics' if" in notebook.SETUP_CELL.replace('"', "'")


def test_declared_ranges_admit_colabs_runtime() -> None:
    """The install line may reinstall nothing of Colab's: our ranges must admit its versions."""
    from packaging.requirements import Requirement

    stack = {}
    for line in (ROOT / ".ci" / "stack-colab.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            stack[name.strip()] = version.strip()
    text = (ROOT / "pyproject.toml").read_text()
    import tomllib

    project = tomllib.loads(text)["project"]
    needed = project["dependencies"] + project["optional-dependencies"]["colab"]
    checked = 0
    for spec in map(Requirement, needed):
        if spec.name in stack:
            assert spec.specifier.contains(stack[spec.name]), f"{spec} excludes Colab's {spec.name}"
            checked += 1
    assert checked >= 6, "the Colab stack should pin jax, flax, optax, numpy, scipy, matplotlib"


def test_a_checkout_reports_no_installed_source() -> None:
    """Only an install from git prints its origin; an editable checkout has its own git."""
    assert notebook.installed_source() is None


def test_an_install_from_git_reports_url_and_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"url": "https://example.org/repo", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}

    class Distribution:
        def read_text(self, name: str) -> str:
            return json.dumps(record) if name == "direct_url.json" else ""

    monkeypatch.setattr(notebook.metadata, "distribution", lambda name: Distribution())
    assert notebook.installed_source() == "https://example.org/repo@abc123"


def test_results_path_falls_back_to_the_installed_copy_outside_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = notebook.results_path("epoch1/x.json")
    assert path == Path(notebook.__file__).resolve().parent / "results" / "epoch1" / "x.json"


def test_results_path_reads_the_checkout_from_its_notebooks_folder(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT / "notebooks")
    assert notebook.results_path("bench_models.json") == ROOT / "results" / "bench_models.json"


def test_the_setup_module_leaves_the_gpu_to_share_before_jax_loads() -> None:
    code = (
        "import os, sys; import qhd_lib.notebook; "
        "print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'], 'jax' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["false", "False"], out.stderr


def test_the_wheel_carries_every_committed_result(tmp_path: Path) -> None:
    """Chapters on Colab read ``results/`` from the install: the wheel must hold all of it."""
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "qhd_lib", "results", "pyproject.toml", "README.md"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    source = tmp_path / "src"
    for name in tracked:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    results = [n for n in tracked if n.startswith("results/")]
    assert results, "no committed results found"
    missing = [n for n in results if f"qhd_lib/{n}" not in inside]
    assert not missing, f"not in the wheel: {missing}"


def test_the_legs_notice_a_reinstalled_runtime_package() -> None:
    nox = pytest.importorskip("nox")
    del nox
    sys.path.insert(0, str(ROOT))
    try:
        import noxfile
    finally:
        sys.path.remove(str(ROOT))
    before = noxfile.pinned("jax==0.7.2\nnumpy==2.0.2\nflax==0.11.2\n-e git+x#egg=y\n")
    after = noxfile.pinned("jax==0.12.1\nnumpy==2.0.2\n")
    assert noxfile.reinstalled(before, after) == ["flax 0.11.2 -> removed", "jax 0.7.2 -> 0.12.1"]
    assert noxfile.reinstalled(before, before) == []
