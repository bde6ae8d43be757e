"""One run as a pipeline: train (or resume) → sample with the EMA parameters → measure → record.

:func:`run` writes ``out/run.json`` (`records`) after every stage, so a killed run loses at most
the stage it was in: rerunning resumes training from its last checkpoint, keeps finished
evaluations and, with ``sampling.chunk``, resumes sampling at its next chunk. Everything runs at
the config's ``matmul_precision``, which run.json's provenance records. With ``deadline_s``
an invocation stops, saved, before a unit of work would run past it (`qhd_lib.deadline`), records
the status ``stopped``, and the next one resumes to the numbers of a run that never stopped.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from qhd_lib import data, io, models, pretrained, provenance, train
from qhd_lib.deadline import NO_DEADLINE, Deadline, DeadlineReached
from qhd_lib.errors import ConfigError, DataError, RunStateError
from qhd_lib.experiments import scoring
from qhd_lib.experiments.config import VERTEX_SCOPES, RunConfig
from qhd_lib.experiments.overrides import config_from_dict
from qhd_lib.experiments.protocols import deviations
from qhd_lib.experiments.records import RUN_FILE, SOURCE_DIR, TRAIN_DIR, read_run
from qhd_lib.experiments.samples import draw_for_run, save_grid


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def training_images(config: RunConfig) -> np.ndarray:
    """The training set in the model's range, (N, 28, 28, 1) float32 in [-1, 1]."""
    images, _ = data.load(config.data.dataset, "train")
    wanted = config.data.train_images
    if wanted is not None:
        if wanted > len(images):
            raise ConfigError(
                f"data.train_images (--train-images) {wanted} > the {len(images)} "
                "training images there are; use fewer, or 0 for all"
            )
        images = images[:wanted]
    return data.to_model_range(images)


def run(
    config: RunConfig,
    out: str | Path,
    *,
    progress: bool = True,
    command: str | None = None,
    allow_dirty: bool = False,
) -> dict[str, Any]:
    """Train, sample at each evaluation epoch, measure; write ``out/run.json`` as it goes.

    Rerunning with the same config resumes; another config in ``out`` is refused. Writing into
    the repository's ``results/`` needs a clean tree unless ``allow_dirty`` (recorded).
    """
    out = Path(out)
    deadline = Deadline(config.deadline_s)
    provenance.check_clean_for(out, allow_dirty)
    previous = read_run(out)
    if previous is not None and "config" not in previous:  # a record of a run never started
        previous = None
    if previous is not None and _identity(previous["config"]) != config.identity():
        raise RunStateError(
            f"{out} holds a run with another configuration; use a new output "
            "directory to start a new run, or the same settings to resume it"
        )
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "config": config.to_dict(),
        "paper_protocol": not deviations(config),
        "deviations": deviations(config),
        "seed": config.seed,
        "provenance": provenance.record(
            command or "(called from Python)", seed=config.seed, allow_dirty=allow_dirty
        )
        | {"matmul_precision": matmul_precision(config)},
        "started": _now(),
        "status": "training",
    }
    io.write_json(out / RUN_FILE, record)
    try:
        with jax.default_matmul_precision(config.matmul_precision):
            _train_and_evaluate(config, out, record, previous, progress, deadline)
    except DeadlineReached as stop:
        record["status"], record["stopped"] = "stopped", str(stop)
        record["wall_s_this_invocation"] = record["provenance"]["wall_s"] = time.perf_counter() - t0
        io.write_json(out / RUN_FILE, record)
        return record
    record["status"] = "complete"
    record["finished"] = _now()
    record["wall_s_this_invocation"] = record["provenance"]["wall_s"] = time.perf_counter() - t0
    io.write_json(out / RUN_FILE, record)
    return record


def matmul_precision(config: RunConfig) -> str:
    """The precision JAX uses for float32 matrix products under ``config``, as JAX reports it."""
    with jax.default_matmul_precision(config.matmul_precision):
        return str(jax.config.jax_default_matmul_precision)


def _train_and_evaluate(
    config: RunConfig,
    out: Path,
    record: dict[str, Any],
    previous: dict[str, Any] | None,
    progress: bool,
    deadline: Deadline,
) -> None:
    """The stages of :func:`run`, each written into ``record`` (and run.json) when it is done."""
    images = training_images(config)
    record["train_images_used"] = len(images)
    record["train"] = _train_phases(config, out, images, progress, deadline)
    record["params"] = record["train"].pop("params")
    record["trainable_params"] = record["train"].pop("trainable_params")
    record["status"] = "evaluating"
    io.write_json(out / RUN_FILE, record)

    model = models.make_model(config.model.architecture, released_code=config.model.released_code)
    done = {e["epoch"]: e for e in (previous or {}).get("evaluations", []) if e.get("complete")}
    record["evaluations"] = []
    for epoch, step in record["train"]["snapshots"].items():
        entry = done.get(float(epoch)) or _evaluate_epoch(
            config, out, model, float(epoch), step, progress, deadline
        )
        record["evaluations"].append(entry)
        io.write_json(out / RUN_FILE, record)


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    return config_from_dict(config).identity()


def _leaf(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _train_phases(
    config: RunConfig,
    out: Path,
    images: np.ndarray,
    progress: bool,
    deadline: Deadline = NO_DEADLINE,
) -> dict[str, Any]:
    """Train (or resume) the run's network; with transfer learning, first get the source's
    parameters (trained here, or read from a file)."""
    model = models.make_model(config.model.architecture, released_code=config.model.released_code)
    n, batch = len(images), config.train.batch_size
    transfer, epochs, info = config.train.transfer, config.train.epochs, {}
    init, seed, stream = None, config.seed, 0
    if transfer is not None:
        source_params, info["transfer"] = _transfer_source(config, out, images, progress, deadline)
        seed = config.sampling_seed
        fresh_modules = VERTEX_SCOPES[transfer.fresh]
        init, copied, fresh = train.transfer_params(
            source_params, train.init_params(model, seed), lambda p: p[0] in fresh_modules
        )
        info["transfer"].update(
            {
                "fresh_modules": list(fresh_modules),
                "copied_leaves": len(copied),
                "fresh_leaves": len(fresh),
                "second_phase_seed": seed,
                "fresh_params": sum(int(np.prod(np.shape(_leaf(init, p)))) for p in fresh),
            }
        )
        epochs, stream = epochs - transfer.source_epochs, 1
    start = transfer.source_epochs if transfer is not None else 0.0
    snapshots = {e: train.steps_for_epochs(e - start, n, batch) for e in config.evaluation.epochs}
    result = train.train(
        model,
        images,
        config.train_config(epochs, seed=seed, stream=stream),
        out / TRAIN_DIR,
        init=init,
        snapshot_steps=snapshots.values(),
        progress=progress,
        deadline=deadline,
    )
    info.update(
        {
            "steps": result.total_steps,
            "resumed_from_step": result.resumed_from,
            "wall_s": result.wall_s,
            "median_step_s": result.median_step_s,
            "steps_timed": len(result.step_times_s),
            "devices": result.devices,
            "snapshots": {f"{e:g}": s for e, s in snapshots.items()},
            "params": models.count_params(result.state.params),
            "trainable_params": train.trainable_count(result.state.params, config.train.frozen),
            "frozen": list(config.train.frozen),
        }
    )
    return info


_PARTS = ("resblock_0", "resblock_1", "resblock", "attnblock", "downsample", "upsample", "conv")


def network_order(module: str) -> tuple:
    """Sort key of a U-Net's top-level module names in the order data flows through them:
    ``time_mlp``, ``init_conv``, ``down_0.*`` … ``mid.*`` … ``up_3.*`` … ``up_0.*``, ``final.*``."""
    head, _, part = module.partition(".")
    rank = _PARTS.index(part) if part in _PARTS else len(_PARTS)
    if head.startswith("down_") and head[5:].isdigit():
        return (2, int(head[5:]), rank)
    if head.startswith("up_") and head[3:].isdigit():
        return (5, -int(head[3:]), rank)
    if head == "mid":
        return (4, {"resblock_0": 0, "attnblock": 1, "resblock_1": 2}.get(part, 3), 0)
    order = {"time_mlp": 0, "init_conv": 1, "down_to_mid": 3, "final": 6}
    return (order.get(head, 7), rank, 0)


def transfer_layout(config: RunConfig) -> dict[str, tuple[int, int]]:
    """Per top-level module of the target network, how many parameters a transfer copies from
    the source and how many it initialises afresh (``train.transfer_params`` on the two
    parameter trees, filled with zeros: nothing is trained or loaded)."""
    transfer = config.train.transfer
    if transfer is None:
        raise ConfigError("transfer_layout needs a transfer run (train.transfer is unset)")

    def zeros(name: str) -> train.Params:
        model = models.make_model(name, released_code=config.model.released_code)
        return jax.tree_util.tree_map(
            lambda s: np.zeros(s.shape, s.dtype), models.param_shapes(model)
        )

    fresh_modules = VERTEX_SCOPES[transfer.fresh]
    target = zeros(config.model.architecture)
    _, copied, fresh = train.transfer_params(
        zeros(transfer.source), target, lambda p: p[0] in fresh_modules
    )
    out = {module: [0, 0] for module in sorted(target, key=network_order)}
    for index, paths in enumerate((copied, fresh)):
        for path in paths:
            out[path[0]][index] += int(np.prod(np.shape(_leaf(target, path))))
    return {module: (c, f) for module, (c, f) in out.items()}


def _transfer_source(
    config: RunConfig, out: Path, images: np.ndarray, progress: bool, deadline: Deadline
) -> tuple[train.Params, dict[str, Any]]:
    """The source network's parameters for transfer learning, and what to record about them."""
    transfer = config.train.transfer
    info: dict[str, Any] = {
        "source_model": transfer.source,
        "source_epochs": transfer.source_epochs,
    }
    if transfer.pretrained is not None:
        entry = pretrained.entry(*transfer.pretrained)
        info.update(
            source_file=transfer.source_file,
            source_sha256=entry.sha256,
            source_run=entry.run,
            note="the target starts from the library's pretrained EMA parameters; Adam state "
            "and EMA start afresh (the file holds no optimiser state)",
        )
        return pretrained.load(*transfer.pretrained), info
    if transfer.source_file is not None:
        path = Path(transfer.source_file)
        if not path.is_file():
            raise DataError(
                f"train.transfer.source_file {path} does not exist; give a parameter "
                "file written by qhd_lib.train.save_params"
            )
        info.update(
            source_file=str(path),
            note="the target starts from the file's parameters; "
            "Adam state and EMA start afresh (the file holds no optimiser state)",
        )
        return train.load_params(path), info
    source_model = models.make_model(transfer.source, released_code=config.model.released_code)
    source = train.train(
        source_model,
        images,
        config.train_config(transfer.source_epochs),
        out / SOURCE_DIR,
        progress=progress,
        deadline=deadline,
    )
    info.update(
        {
            "source_run_dir": str(out / SOURCE_DIR),
            "source_steps": source.total_steps,
            "source_wall_s": source.wall_s,
            "source_median_step_s": source.median_step_s,
            "note": "the target starts from the source's (non-EMA) parameters; Adam state and EMA "
            "restart",
        }
    )
    return source.state.params, info


NO_MATPLOTLIB = "matplotlib is not installed here; a grid is drawn where the samples are scored"


def _epoch_label(epoch: float) -> str:
    return f"{epoch:g}".replace(".", "p")


def _sampling_text(config: RunConfig) -> str:
    if config.sampling.sampler == "ddpm":
        return f"ancestral DDPM, {config.diffusion.timesteps} steps, EMA parameters"
    return f"DDIM (eta 0), {config.sampling.steps} steps, EMA parameters"


def _evaluate_epoch(
    config: RunConfig,
    out: Path,
    model: Any,
    epoch: float,
    step: int,
    progress: bool,
    deadline: Deadline,
) -> dict[str, Any]:
    params = train.load_params(train.snapshot_path(out / TRAIN_DIR, step))
    label = _epoch_label(epoch)
    t = time.perf_counter()
    images = draw_for_run(
        model,
        params,
        config,
        config.evaluation.samples,
        out / f"chunks_epoch{label}",
        progress,
        deadline,
    )
    sampling_s = time.perf_counter() - t
    npz = io.save_images(out / f"samples_epoch{label}.npz", images)
    entry: dict[str, Any] = {"grid_png": None, "grid_skipped": NO_MATPLOTLIB}
    if importlib.util.find_spec("matplotlib") is not None:
        title = f"{config.model.name}, {config.data.dataset}, epoch {epoch:g}"
        entry = {"grid_png": save_grid(out / f"samples_epoch{label}.png", images, title).name}
    entry |= {
        "epoch": epoch,
        "step": step,
        "samples_file": npz.name,
        "n_samples": len(images),
        "sampling_wall_s": sampling_s,
        "sampling": _sampling_text(config),
        "metrics": None,
    }
    ev = config.evaluation
    if ev.metrics:
        t = time.perf_counter()
        entry["metrics"] = scoring.measure(
            images, config.data.dataset, ev.n_real, config.seed, ev.real_split, progress
        )
        entry["metrics_wall_s"] = time.perf_counter() - t
    entry["complete"] = True
    return entry
