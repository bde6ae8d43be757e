"""Every result records where it came from."""

import re

from qhd_lib import provenance


def test_git_commit_is_a_hash_marked_dirty_when_tracked_files_changed() -> None:
    commit = provenance.git_commit()
    assert commit == "uncommitted" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit)


def test_git_commit_outside_a_repository_says_uncommitted(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    assert provenance.git_commit() == "uncommitted"


def test_device_info_names_the_cpu_and_the_load_without_jax_when_asked() -> None:
    info = provenance.device_info(jax_devices=False)
    assert info["cpu"] and info["cpu_count"] >= 1
    assert "jax_devices" not in info


def test_package_versions_reports_missing_packages_as_none() -> None:
    versions = provenance.package_versions(("numpy", "no-such-package-qhd"))
    assert versions["numpy"] and versions["no-such-package-qhd"] is None


def test_a_changed_result_file_does_not_make_the_commit_dirty(tmp_path, monkeypatch) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "bench.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    monkeypatch.setattr(provenance, "ROOT", tmp_path)
    (tmp_path / "results" / "bench.json").write_text('{"new": 1}')
    assert not provenance.git_commit().endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2")
    assert provenance.git_commit().endswith("-dirty")
