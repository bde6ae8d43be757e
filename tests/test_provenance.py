"""Every result records where it came from, and that origin holds: a clean commit with the code."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qhd_lib import provenance
from qhd_lib.errors import ProvenanceError

ROOT = provenance.ROOT
HAS_GIT = (ROOT / ".git").exists()


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A committed repository with code and a result, standing in for the book's."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    return tmp_path


@pytest.fixture
def no_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the tree without .git, as the GPU machine receives it."""
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    return tmp_path


def test_git_commit_is_a_hash_marked_dirty_when_tracked_files_changed() -> None:
    commit = provenance.git_commit()
    assert commit == "uncommitted" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)


def test_git_commit_outside_a_repository_says_uncommitted(no_git: Path) -> None:
    assert provenance.git_commit() == "uncommitted"


def test_device_info_names_the_cpu_and_the_load_without_jax_when_asked() -> None:
    info = provenance.device_info(jax_devices=False)
    assert info["cpu"] and info["cpu_count"] >= 1
    assert "jax_devices" not in info


def test_package_versions_reports_missing_packages_as_none() -> None:
    versions = provenance.package_versions(("numpy", "no-such-package-qhd"))
    assert versions["numpy"] and versions["no-such-package-qhd"] is None


def test_a_changed_result_file_does_not_make_the_commit_dirty(repo: Path) -> None:
    (repo / "results" / "bench.json").write_text('{"new": 1}')
    assert not provenance.git_commit().endswith("-dirty")
    (repo / "code.py").write_text("x = 2")
    assert provenance.git_commit().endswith("-dirty")


def test_record_has_the_one_provenance_layout(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD").strip()
    record = provenance.record(
        ["python", "scripts/bench.py", "--n", "2"], seed=3, wall_s=1.5, device={"cpu": "test"}
    )
    assert record.keys() == {
        "command",
        "git_commit",
        "dirty",
        "allow_dirty",
        "commit_source",
        "device",
        "packages",
        "date",
        "seed",
        "wall_s",
    }
    assert record["command"] == "python scripts/bench.py --n 2"
    assert (record["git_commit"], record["dirty"], record["commit_source"]) == (head, False, "git")
    assert (record["seed"], record["wall_s"], record["device"]) == (3, 1.5, {"cpu": "test"})


def test_record_names_the_commit_seen_when_the_run_started(repo: Path) -> None:
    started = provenance.check_clean_for(repo / "results" / "bench.json")
    (repo / "code.py").write_text("x = 2")
    git(repo, "commit", "-q", "-am", "two")  # committed while the run was going on
    record = provenance.record("python code.py", device={}, found=started)
    assert record["git_commit"] == git(repo, "rev-parse", "HEAD~1").strip()


def test_an_untracked_file_outside_results_makes_the_tree_dirty(repo: Path) -> None:
    (repo / "new_module.py").write_text("y = 1")  # code that ran but no commit holds
    assert provenance.record("python new_module.py", device={})["dirty"] is True


def test_changes_only_under_results_leave_the_tree_clean(repo: Path) -> None:
    (repo / "results" / "bench.json").write_text('{"new": 1}')
    (repo / "results" / "new_run").mkdir()
    (repo / "results" / "new_run" / "run.json").write_text("{}")
    assert provenance.record("python code.py", device={})["dirty"] is False


def test_writes_into_results_from_a_dirty_tree_are_refused_unless_allowed(repo: Path) -> None:
    (repo / "new_module.py").write_text("y = 1")
    with pytest.raises(ProvenanceError, match="commit first, or pass --allow-dirty"):
        provenance.check_clean_for(repo / "results" / "bench.json")
    assert provenance.check_clean_for(repo / "results" / "bench.json", allow_dirty=True).dirty
    assert provenance.check_clean_for(repo / "elsewhere" / "bench.json").dirty


def test_allow_dirty_is_recorded_beside_the_dirty_flag(repo: Path) -> None:
    (repo / "code.py").write_text("x = 2")
    record = provenance.record("python code.py", device={}, allow_dirty=True)
    assert (record["dirty"], record["allow_dirty"]) == (True, True)


def test_without_git_the_commit_is_taken_from_qhd_commit(no_git: Path, monkeypatch) -> None:
    monkeypatch.setenv(provenance.COMMIT_ENV, "0123abc")
    record = provenance.record("python code.py", device={})
    assert (record["git_commit"], record["dirty"]) == ("0123abc", False)
    assert record["commit_source"] == "QHD_COMMIT"
    monkeypatch.setenv(provenance.COMMIT_ENV, "0123abc-dirty")
    assert provenance.record("python code.py", device={})["dirty"] is True


def test_without_git_or_a_given_commit_writes_into_results_are_refused(no_git: Path) -> None:
    with pytest.raises(ProvenanceError, match="--commit SHA"):
        provenance.check_clean_for(no_git / "results" / "bench.json")


def test_the_commit_flag_sets_qhd_commit_for_the_run(no_git: Path, monkeypatch) -> None:
    monkeypatch.setenv(provenance.COMMIT_ENV, "")  # recorded, so unset again after the test
    parser = argparse.ArgumentParser()
    provenance.add_arguments(parser)
    args = parser.parse_args(["--commit", "0123abc"])
    assert provenance.apply_arguments(args, no_git / "results" / "x.json").sha == "0123abc"


def test_a_qhd_commit_that_disagrees_with_the_repository_is_refused(repo: Path, monkeypatch):
    monkeypatch.setenv(provenance.COMMIT_ENV, "0123abc")
    with pytest.raises(ProvenanceError, match="unset QHD_COMMIT"):
        provenance.record("python code.py", device={})


def test_a_qhd_commit_that_is_not_a_hash_is_refused(no_git: Path, monkeypatch) -> None:
    monkeypatch.setenv(provenance.COMMIT_ENV, "main")
    with pytest.raises(ProvenanceError, match="not a commit hash"):
        provenance.record("python code.py", device={})


def test_python_command_names_the_script_relative_to_the_repository() -> None:
    script = str(ROOT / "scripts" / "bench_models.py")
    command = provenance.python_command([script, "--repeats", "2"])
    assert command == "python scripts/bench_models.py --repeats 2"


# --------------------------------------------------------------------------------------------
# The committed results


def provenance_of(result: Any) -> dict[str, Any] | None:
    """The provenance in a result file, in today's layout (``provenance``: record()) or an old
    one (run.json's top-level ``command``/``commit``; ``commit`` or ``git_commit``)."""
    if not isinstance(result, dict):
        return None
    for candidate in (result.get("provenance"), result):
        if isinstance(candidate, dict) and "command" in candidate:
            if "git_commit" in candidate or "commit" in candidate:
                return candidate
    return None


def module_paths(command: str) -> list[str]:
    """Where the module or script that ``command`` ran lives, relative to the repository."""
    words = shlex.split(command)
    if "-m" in words[:-1]:
        module = words[words.index("-m") + 1].replace(".", "/")
        return [f"{module}.py", f"{module}/__main__.py"]
    scripts = [Path(w) for w in words if w.endswith(".py")]
    if not scripts:
        return []
    script = scripts[0]
    if script.is_absolute() and script.is_relative_to(ROOT):
        script = script.relative_to(ROOT)
    return [script.as_posix()]


def committed_results() -> list[str]:
    """JSON files under results/ that git tracks and that carry provenance."""
    if not HAS_GIT:
        return []
    listed = git(ROOT, "ls-files", "--", "results").split()
    found = []
    for name in listed:
        path = ROOT / name
        if not name.endswith(".json") or not path.is_file():
            continue
        if provenance_of(json.loads(path.read_text())) is not None:
            found.append(name)
    return found


def git_has(obj: str) -> bool:
    """Whether the repository holds ``obj`` (``COMMIT^{commit}``, ``COMMIT:path``)."""
    done = subprocess.run(["git", "cat-file", "-e", obj], cwd=ROOT, capture_output=True)
    return done.returncode == 0


# Known stale, each until the run named beside it replaces it; the test fails once a file here
# is regenerated (strict xfail), so this list can only shrink.
STALE: dict[str, str] = {}


def known_stale(name: str) -> pytest.MarkDecorator | tuple:
    """A strict xfail mark for a file in `STALE`, nothing otherwise."""
    return pytest.mark.xfail(reason=STALE[name], strict=True) if name in STALE else ()


@pytest.mark.skipif(not HAS_GIT, reason="no .git here (e.g. a copy of the tree): commits unknown")
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=known_stale(n)) for n in committed_results()]
)
def test_committed_result_names_a_clean_commit_that_holds_its_code(name: str) -> None:
    record = provenance_of(json.loads((ROOT / name).read_text()))
    commit = record.get("git_commit", record.get("commit"))
    assert commit and not commit.endswith("-dirty") and not record.get("dirty", False), (
        f"{name} was written from a dirty tree at {commit}: rerun it from a committed tree"
    )
    assert re.fullmatch(r"[0-9a-f]{7,40}", commit), f"{name} names no commit ({commit!r})"
    assert git_has(f"{commit}^{{commit}}"), f"{name}: commit {commit} is not in this repository"
    modules = module_paths(record["command"])
    assert modules, f"{name}: no module or script in its command {record['command']!r}"
    assert any(git_has(f"{commit}:{m}") for m in modules), (
        f"{name}: commit {commit[:12]} does not hold {' or '.join(modules)}, which it ran; "
        "commit the code, then rerun"
    )
