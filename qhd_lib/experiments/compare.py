"""Runs side by side: seeds pooled, every model against the classical U-Net, the paper beside.

Every per-run list of a group (``seeds``, ``run_dirs``, the pooled ``values``, the ``grids`` of
an epoch) is ordered by seed, so position ``i`` of one list belongs to position ``i`` of another.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qhd_lib import paper, provenance
from qhd_lib.errors import RunStateError
from qhd_lib.experiments.protocols import RELEASED_DEVIATION
from qhd_lib.experiments.records import RUN_FILE, commit_label, read_run


def _protocol(record: dict[str, Any]) -> tuple[str, ...]:
    """How a run's protocol differs from the paper's, leaving out the model variant."""
    return tuple(d for d in record["deviations"] if d != RELEASED_DEVIATION)


def _transfer(config: dict[str, Any]) -> dict[str, Any]:
    return config["train"].get("transfer") or {}


def _group_key(record: dict[str, Any]) -> tuple:
    """Runs that differ only in their seed (same dataset, model, variant, source and protocol)."""
    c, transfer = record["config"], _transfer(record["config"])
    return (
        c["data"]["dataset"],
        c["model"]["name"],
        c["model"]["released_code"],
        transfer.get("source"),
        transfer.get("source_epochs"),
        transfer.get("source_file"),
        _protocol(record),
    )


def _column(config: dict[str, Any]) -> str:
    """The paper's column a run belongs to: ``transfer`` for source → hybrid transfer runs,
    ``transfer_control`` for the source → same-model control of fig. 13b."""
    source = _transfer(config).get("source")
    if source is None:
        return config["model"]["name"]
    return "transfer_control" if config["model"]["name"] == source else "transfer"


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n − 1; None for one run) and n over seeds."""
    arr = np.asarray(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
        "n": len(arr),
        "values": [float(v) for v in arr],
    }


def _verdict(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Difference of FID means (model − classical) against its standard error over seeds.

    "lower FID" / "higher FID" only when the difference exceeds two standard errors (Welch); with
    a single seed on either side there is no error bar, and the verdict says so.
    """
    diff = ours["mean"] - base["mean"]
    if ours["std"] is None or base["std"] is None:
        return {"fid_diff": diff, "se": None, "verdict": "single seed: no error bar, no verdict"}
    se = float(np.sqrt(ours["std"] ** 2 / ours["n"] + base["std"] ** 2 / base["n"]))
    if abs(diff) <= 2 * se:
        verdict = "within seed-to-seed spread (difference ≤ 2 SE)"
    else:
        verdict = "lower FID than classical" if diff < 0 else "higher FID than classical"
    return {"fid_diff": diff, "se": se, "verdict": verdict}


def _epoch_row(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """Pooled metrics of one evaluation epoch from (run record, evaluation) pairs, by seed."""
    m = [e["metrics"] for _, e in pairs]
    has_is = all(x.get("is_mean") is not None for x in m)
    return {
        "seeds": [r["seed"] for r, _ in pairs],
        "fid": _stats([x["fid"] for x in m]),
        "kid": _stats([x["kid_mean"] for x in m]),
        "is": _stats([x["is_mean"] for x in m]) if has_is else None,
        "grids": [str(Path(r["run_dir"]) / e["grid_png"]) for r, e in pairs],
    }


def _group_row(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's runs (sorted by seed) pooled per epoch, the paper's value beside."""
    first = records[0]
    config, column = first["config"], _column(first["config"])
    dataset = config["data"]["dataset"]
    seeds = [r["seed"] for r in records]
    if len(set(seeds)) != len(seeds):
        raise RunStateError(
            f"two runs of {column} on {dataset} share a seed ({seeds}); give "
            "each run its own seed, or leave the duplicate out"
        )
    by_epoch: dict[float, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
    for r in records:
        for e in r["evaluations"]:
            if e.get("metrics"):
                by_epoch.setdefault(float(e["epoch"]), []).append((r, e))
    epochs = {}
    for epoch, pairs in sorted(by_epoch.items()):
        row = _epoch_row(pairs)
        published = (
            paper.TABLES.get(dataset, {}).get(column)
            if epoch == 20
            else paper.IN_TEXT.get((dataset, column, epoch))
        )  # 1.0 finds 1
        row["paper"] = published
        comparable = published and first["paper_protocol"] and not config["model"]["released_code"]
        row["paper_fid_diff"] = (
            row["fid"]["mean"] - paper.mean_of(published["fid"]) if comparable else None
        )
        epochs[f"{epoch:g}"] = row
    return {
        "dataset": dataset,
        "model": config["model"]["name"],
        "column": column,
        "released_code": config["model"]["released_code"],
        "transfer_from": _transfer(config).get("source"),
        "paper_protocol": first["paper_protocol"],
        "deviations": first["deviations"],
        "protocol": list(_protocol(first)),
        "seeds": seeds,
        "params": first["params"],
        "paper_params": paper.PARAMS.get(column),
        "median_step_s": _stats([r["train"]["median_step_s"] for r in records]),
        "device": first["provenance"]["device"],
        "run_dirs": [r["run_dir"] for r in records],
        "commits": sorted({commit_label(r) for r in records}),
        "epochs": epochs,
    }


def compare_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Pool runs over seeds, compare every model with the classical U-Net of the same protocol,
    and put the paper's value beside each (a difference only where the protocol is the paper's)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        record = read_run(run_dir)
        if record is None or record.get("status") != "complete":
            raise RunStateError(
                f"{run_dir} holds no finished run ({RUN_FILE} missing or status "
                "not 'complete'); rerun its command to finish it, or leave it out"
            )
        record["run_dir"] = str(run_dir)
        groups.setdefault(_group_key(record), []).append(record)
    rows = [_group_row(sorted(records, key=lambda r: r["seed"])) for records in groups.values()]

    for row in rows:
        base = next(
            (
                b
                for b in rows
                if b["column"] == "classical"
                and not b["released_code"]
                and b["transfer_from"] is None
                and b["dataset"] == row["dataset"]
                and b["protocol"] == row["protocol"]
            ),
            None,
        )
        row["vs_classical"] = (
            None
            if base is None or base is row
            else {
                epoch: _verdict(stats["fid"], base["epochs"][epoch]["fid"])
                for epoch, stats in row["epochs"].items()
                if epoch in base["epochs"]
            }
        )
    rows.sort(
        key=lambda r: (
            r["dataset"],
            r["paper_protocol"],
            r["released_code"],
            paper.COLUMNS.index(r["column"]) if r["column"] in paper.COLUMNS else 99,
        )
    )
    return {
        "paper_source": paper.SOURCE,
        "groups": rows,
        "commit": provenance.git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
