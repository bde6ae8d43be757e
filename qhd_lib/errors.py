"""The errors the library raises, each message naming the fix.

Library code raises these and never exits; the command-line entry points (``python -m
qhd_lib.experiments``, ``qhd_lib.data``, ``qhd_lib.metrics``) turn them into a one-line message
and an exit code (`EXIT_CODES`).
"""

from __future__ import annotations


class QHDError(Exception):
    """Base class: something the user can fix; the message says how."""


class ConfigError(QHDError, ValueError):
    """An invalid configuration: unknown model, dataset, ansatz or protocol, a bad number."""


class DataError(QHDError):
    """Missing or corrupt data, weights or samples (the message names the set-up command)."""


class RunStateError(QHDError):
    """A run directory that does not hold what was asked of it: unfinished, from another
    configuration, missing an epoch's parameters, or a checkpoint of another model."""


class ProvenanceError(QHDError):
    """A result that could not be traced to a commit: e.g. a write into ``results/`` from a tree
    with uncommitted changes."""


EXIT_CODES: dict[type[QHDError], int] = {
    ConfigError: 2,
    DataError: 3,
    RunStateError: 4,
    ProvenanceError: 5,
}


def exit_code(error: QHDError) -> int:
    """The command-line exit code of ``error`` (1 for a `QHDError` without its own)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1
