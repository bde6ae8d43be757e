"""run.json: the record a run writes as it goes, read back in one layout.

A record holds the resolved config tree (``config``), its ``deviations`` from the paper's
protocol, ``provenance`` (`qhd_lib.provenance.record`), the training summary (``train``) and one
entry per evaluation epoch (``evaluations``). Records written before the config tree (a flat
``config`` and top-level ``command``/``commit``/``device``/``versions``, as in
``results/demo/``) are read into this layout by :func:`read_run`; the files are not rewritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qhd_lib import io
from qhd_lib.experiments.overrides import config_from_dict

RUN_FILE = "run.json"
TRAIN_DIR = "train"
SOURCE_DIR = "transfer_source"

# Flat config fields of the old layout -> dotted paths of the tree.
_FLAT_PATHS: dict[str, str] = {
    "scale": "protocol",
    "seed": "seed",
    "dataset": "data.dataset",
    "train_images": "data.train_images",
    "model": "model.name",
    "released_code": "model.released_code",
    "timesteps": "diffusion.timesteps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "checkpoint_every": "train.checkpoint_every",
    "log_every": "train.log_every",
    "eval_epochs": "evaluation.epochs",
    "samples": "evaluation.samples",
    "n_real": "evaluation.n_real",
    "metrics": "evaluation.metrics",
    "sample_batch": "sampling.batch",
    "sampler": "sampling.sampler",
    "sampling_steps": "sampling.steps",
}
_TRANSFER_FIELDS = {
    "transfer_from": "source",
    "transfer_epochs": "source_epochs",
    "transfer_fresh": "fresh",
}
MIGRATED_NOTE = "read from the flat layout written before the config tree (issue 14)"


def read_run(run_dir: str | Path) -> dict[str, Any] | None:
    """The record in ``run_dir`` (None when there is none), in the current layout."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    record = io.read_json(path)
    return migrate(record) if "data" not in record.get("config", {}) else record


def migrate(old: dict[str, Any]) -> dict[str, Any]:
    """A record of the flat layout in the current one (config tree, ``provenance``)."""
    record = dict(old)
    flat = record.pop("config")
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        if key in _FLAT_PATHS:
            *parents, leaf = _FLAT_PATHS[key].split(".")
            node = tree
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
    if flat.get("transfer_from") is not None:
        tree.setdefault("train", {})["transfer"] = {
            new: flat[key] for key, new in _TRANSFER_FIELDS.items() if key in flat
        }
    record["config"] = config_from_dict(tree).to_dict()
    commit = str(record.pop("commit", "unknown"))
    record["provenance"] = {
        "command": record.pop("command", None),
        "git_commit": commit.removesuffix("-dirty"),
        "dirty": commit.endswith("-dirty"),
        "allow_dirty": None,
        "commit_source": "git",
        "device": record.pop("device", None),
        "packages": record.pop("versions", None),
        "date": record.get("started"),
        "seed": record.get("seed"),
        "wall_s": record.get("wall_s_this_invocation"),
    }
    record["migrated"] = MIGRATED_NOTE
    return record


def commit_label(record: dict[str, Any]) -> str:
    """The commit a record's provenance names, ``-dirty`` appended when the tree was dirty."""
    found = record["provenance"]
    return found["git_commit"] + ("-dirty" if found["dirty"] else "")
