"""Where a number came from: commit, device and package versions, recorded beside every result.

One implementation for the experiment runner and the benchmark scripts, so every file under
``results/`` describes its origin the same way.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES: tuple[str, ...] = ("qhd-book", "jax", "jaxlib", "flax", "optax", "numpy", "torch", "torchmetrics")


def git_commit() -> str:
    """``git rev-parse HEAD``, suffixed ``-dirty`` when tracked files outside ``results/`` differ
    from it (a run rewriting its own result file stays clean); else "uncommitted"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                 ".", ":!results"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "uncommitted"
    commit = head.stdout.strip()
    if head.returncode != 0 or not commit:
        return "uncommitted"
    return f"{commit}-dirty" if status.stdout.strip() else commit


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
    """CPU model, core count, load average and (optionally) JAX's devices.

    Timings are comparable only where these agree; the load average says how shared the CPU was.
    """
    info: dict[str, Any] = {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
                            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if jax_devices:
        import jax

        info["jax_devices"] = [str(d) for d in jax.devices()]
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
