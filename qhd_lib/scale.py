"""The one run-size knob shared by notebooks, tests and the experiment runner.

``QHD_SCALE=smoke`` runs in seconds (CI), ``demo`` (the default) in a few minutes on a 2-core CPU,
``paper`` follows the paper's protocol (20 epochs, 7 000 samples x 1 000 DDPM steps). The runner
reads it as the name of its default protocol (`qhd_lib.experiments.protocols`); chapters size
their own figures and widgets with :func:`by_scale`.
"""

from __future__ import annotations

import os
from typing import Literal, TypeVar, get_args

from qhd_lib.errors import ConfigError

Scale = Literal["smoke", "demo", "paper"]
SCALES: tuple[str, ...] = get_args(Scale)
DEFAULT_SCALE: Scale = "demo"

T = TypeVar("T")


def get_scale(value: str | None = None) -> Scale:
    """Return the scale named by ``value`` or by ``$QHD_SCALE`` (default ``demo``)."""
    raw = value if value is not None else os.environ.get("QHD_SCALE", DEFAULT_SCALE)
    name = raw.strip().lower()
    if name not in SCALES:
        raise ConfigError(f"unknown scale {name!r}; set QHD_SCALE to one of {', '.join(SCALES)}")
    return name  # type: ignore[return-value]


def by_scale(smoke: T, demo: T, paper: T, scale: str | None = None) -> T:
    """Pick the value for the current scale, e.g. ``steps = by_scale(20, 2_000, 9_375)``."""
    return {"smoke": smoke, "demo": demo, "paper": paper}[get_scale(scale)]
