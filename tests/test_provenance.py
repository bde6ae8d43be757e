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
