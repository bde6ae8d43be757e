"""run.json: the record a run writes as it goes, read back in one layout.

A record holds the resolved config tree (``config``), its ``deviations`` from the paper's
protocol, ``provenance`` (`qhd_lib.provenance.record`), the training summary (``train``) and one
entry per evaluation epoch (``evaluations``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qhd_lib import io

RUN_FILE = "run.json"
TRAIN_DIR = "train"
SOURCE_DIR = "transfer_source"


def read_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The record in ``run_dir`` (None when there is none)."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    return io.read_json(path)


def commit_label(record: dict[str, Any]) -> str:
    """The commit a record's provenance names, ``-dirty`` appended when the tree was dirty."""
    found = record["provenance"]
    return found["git_commit"] + ("-dirty" if found["dirty"] else "")
