"""Where a number came from: command, commit, device and package versions, beside every result.

One layout for the experiment runner and the benchmark scripts (:func:`record`), so every file
under ``results/`` describes its origin the same way::

    {"command": "python scripts/bench_models.py", "git_commit": "9a1dc27c...", "dirty": false,
     "allow_dirty": false, "commit_source": "git", "device": {...}, "packages": {...},
     "date": "2026-12-02T08:55:53+00:00", "seed": null, "wall_s": 916.7}

A result is traceable only if its commit holds the code that made it, so the tree counts as
dirty when a tracked file differs from the commit *or* an untracked file exists outside
``results/`` (a module not yet added would otherwise run without being recorded anywhere).
Writers call :func:`check_clean_for` before writing into ``results/``: a dirty tree is refused
unless the run asks for it (``allow_dirty``), and then the file says so. A machine without
``.git`` (the GPU machine gets a copy of the working tree) cannot see its commit: the caller
passes it in ``$QHD_COMMIT`` (scripts' ``--commit SHA``), as :func:`git_commit` prints it
(``SHA`` or ``SHA-dirty``), and the file records that it came from there.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from qhd_lib.errors import ProvenanceError

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = "results"
COMMIT_ENV = "QHD_COMMIT"
PACKAGES = ("qhd-book", "jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchmetrics")
UNCOMMITTED = "uncommitted"
_SHA = re.compile(r"[0-9a-f]{7,40}")


class Commit(NamedTuple):
    """The commit a run's code comes from, whether the tree differed from it, and who said so."""

    sha: str  # a hex commit hash, or UNCOMMITTED when neither git nor $QHD_COMMIT knows it
    dirty: bool
    source: str | None  # "git", "QHD_COMMIT" or None


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    """``git ARGS`` in :data:`ROOT`; None when git is missing or hangs."""
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _from_git() -> Commit | None:
    """HEAD and the dirty flag (tracked changes or untracked files outside ``results/``)."""
    head = _git("rev-parse", "HEAD")
    if head is None or head.returncode != 0 or not head.stdout.strip():
        return None
    status = _git(
        "status", "--porcelain", "--untracked-files=normal", "--", ".", f":!{RESULTS_DIR}"
    )
    if status is None or status.returncode != 0:
        return None
    return Commit(head.stdout.strip(), bool(status.stdout.strip()), "git")


def _from_environment() -> Commit | None:
    """The commit given in ``$QHD_COMMIT`` (``SHA`` or ``SHA-dirty``), None when unset."""
    given = os.environ.get(COMMIT_ENV, "").strip()
    if not given:
        return None
    sha = given.removesuffix("-dirty")
    if not _SHA.fullmatch(sha):
        raise ProvenanceError(
            f"${COMMIT_ENV}={given!r} is not a commit hash; set it to the output of "
            "`python -c 'from qhd_lib import provenance; print(provenance.git_commit())'` "
            "run in the repository the code was copied from"
        )
    return Commit(sha, sha != given, COMMIT_ENV)


def commit() -> Commit:
    """The commit of this code: from git where ``.git`` exists, else from ``$QHD_COMMIT``.

    Where both exist they must agree, so a stale ``$QHD_COMMIT`` never mislabels a result.
    """
    local, given = _from_git(), _from_environment()
    if local is not None and given is not None and not local.sha.startswith(given.sha):
        raise ProvenanceError(
            f"${COMMIT_ENV}={given.sha} but the repository is at {local.sha}; "
            f"unset {COMMIT_ENV} (it is for copies of the tree without .git)"
        )
    return local or given or Commit(UNCOMMITTED, False, None)


def git_commit() -> str:
    """The commit as one string: ``SHA``, ``SHA-dirty`` (see :func:`commit`) or "uncommitted"."""
    found = commit()
    return f"{found.sha}-dirty" if found.dirty else found.sha


def writes_into_results(path: str | Path) -> bool:
    """Whether ``path`` lies in the repository's ``results/`` folder."""
    return Path(path).resolve().is_relative_to(ROOT / RESULTS_DIR)


def check_clean_for(out_path: str | Path, allow_dirty: bool = False) -> Commit:
    """Refuse to write ``out_path`` into ``results/`` from code that no commit holds.

    Raises :class:`~qhd_lib.errors.ProvenanceError` when the tree is dirty or its commit unknown
    and ``allow_dirty`` is false; writes elsewhere are always allowed. Returns the commit, so a
    writer can call this before a long run and fail at once rather than at the end.
    """
    found = commit()
    if allow_dirty or not writes_into_results(out_path):
        return found
    if found.sha == UNCOMMITTED:
        raise ProvenanceError(
            f"refusing to write {out_path}: no commit is known (no .git here); pass --commit SHA "
            f"or set {COMMIT_ENV} to the commit this tree was copied from, or pass --allow-dirty"
        )
    if found.dirty:
        raise ProvenanceError(
            f"refusing to write {out_path}: the working tree differs from commit {found.sha[:12]} "
            "(changed or untracked files outside results/); commit first, or pass --allow-dirty "
            "(allow_dirty=True) to record the result as dirty"
        )
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every script that writes into ``results/``: ``--allow-dirty``, ``--commit``."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write into results/ from a tree with uncommitted changes (recorded as dirty)",
    )
    parser.add_argument(
        "--commit",
        metavar="SHA",
        help=f"the commit this copy of the tree was made from, where .git is missing "
        f"(sets ${COMMIT_ENV})",
    )


def apply_arguments(args: argparse.Namespace, out_path: str | Path) -> Commit:
    """Act on :func:`add_arguments`' flags: take ``--commit`` as ``$QHD_COMMIT``, then
    :func:`check_clean_for` ``out_path`` (call it before the work, so a refusal costs nothing)."""
    if args.commit:
        os.environ[COMMIT_ENV] = args.commit
    return check_clean_for(out_path, args.allow_dirty)


def python_command(argv: Sequence[str] | None = None) -> str:
    """``python SCRIPT ARGS`` of this process (``sys.argv``), the script relative to the repo."""
    script, *args = sys.argv if argv is None else argv
    path = Path(script).resolve()
    if path.is_relative_to(ROOT):
        script = path.relative_to(ROOT).as_posix()
    return shlex.join(["python", script, *args])


def record(
    command: str | Sequence[str],
    *,
    seed: int | None = None,
    wall_s: float | None = None,
    packages: Sequence[str] = PACKAGES,
    device: Mapping[str, Any] | None = None,
    allow_dirty: bool = False,
    found: Commit | None = None,
) -> dict[str, Any]:
    """The provenance of a result, in the one layout every file under ``results/`` uses.

    ``command`` is the command line (a sequence is shell-joined); ``device`` defaults to
    :func:`device_info`. ``found`` is the commit seen when the run started (what
    :func:`check_clean_for` returned: the code that ran, even if the tree changes during a long
    run), else :func:`commit` now; ``allow_dirty`` is recorded as given, beside ``dirty``.
    """
    found = found or commit()
    return {
        "command": command if isinstance(command, str) else shlex.join(command),
        "git_commit": found.sha,
        "dirty": found.dirty,
        "allow_dirty": allow_dirty,
        "commit_source": found.source,
        "device": dict(device) if device is not None else device_info(),
        "packages": package_versions(tuple(packages)),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "wall_s": wall_s,
    }


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def device_info(jax_devices: bool = True) -> dict[str, Any]:
    """CPU model, core count, load average and (optionally) JAX's devices and their number.

    Timings are comparable only where these agree; the load average says how shared the CPU was.
    """
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": load,
    }
    if jax_devices:
        import jax

        info["jax_devices"] = [str(d) for d in jax.devices()]
        info["jax_device_count"] = jax.device_count()  # a batch is split over all of them
    return info


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Versions of the packages that shape the numbers (read from metadata, nothing imported)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
