"""The one run-size knob: QHD_SCALE."""

import pytest

from qhd_lib.scale import by_scale, get_scale


def test_scale_defaults_to_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QHD_SCALE", raising=False)
    assert get_scale() == "demo"


def test_scale_is_read_from_the_environment_case_insensitively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QHD_SCALE", " Smoke ")
    assert get_scale() == "smoke"
    assert by_scale(1, 2, 3) == 1


def test_explicit_scale_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHD_SCALE", "smoke")
    assert by_scale(1, 2, 3, scale="paper") == 3


def test_unknown_scale_names_the_valid_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QHD_SCALE", "huge")
    with pytest.raises(ValueError, match="smoke, demo, paper"):
        get_scale()
