"""The experiment runner: train (or resume), sample with the EMA parameters, measure, write results/.

``python -m qhd_lib.experiments run --dataset mnist --model 7hqconv --scale paper --out results/x``
runs one column of the paper's Table 1/2 and writes ``results/x/run.json`` with everything needed
to trust the numbers: the configuration, parameter count, metrics (with ±) at each evaluation epoch
(epochs 1/10/20 as in figs. 10–12), sample grids, wall times, device, commit, seed, package
versions and the exact command. Rerunning the same command resumes an interrupted run.

``sample`` and ``evaluate`` split the work so samples drawn on one machine (say a GPU) can be
scored on another: samples are stored as compressed ``.npz`` of ``uint8`` images.

Scales: ``smoke`` takes seconds (CI; fewer diffusion steps, so **not** the paper's protocol),
``demo`` a few minutes on a 2-core CPU (a subset of the data, few samples), ``paper`` the paper's
protocol. ``run.json`` lists every deviation from the paper's protocol under ``deviations``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from qhd_lib import data, diffusion, train
from qhd_lib.provenance import device_info, git_commit, package_versions
from qhd_lib.models import MODEL_NAMES, count_params, make_model
from qhd_lib.scale import SCALES

RUN_FILE = "run.json"
RELEASED_DEVIATION = "released-code model variant (see the book's chapter on the released code)"
TRAIN_DIR = "train"
SOURCE_DIR = "transfer_source"
VERTEX_SCOPES: dict[str, tuple[str, ...]] = {
    "resblocks": ("mid.resblock_0", "mid.resblock_1"),
    "mid": ("mid.resblock_0", "mid.attnblock", "mid.resblock_1"),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Run sizes for one scale. ``train_images=None`` uses the whole training set (60 000)."""

    epochs: float
    eval_epochs: tuple[float, ...]
    samples: int
    timesteps: int
    train_images: int | None
    batch_size: int
    n_real: int
    sample_batch: int
    checkpoint_every: int
    log_every: int
    sampler: str = "ddpm"
    sampling_steps: int | None = None


PRESETS: dict[str, Preset] = {
    "smoke": Preset(epochs=1, eval_epochs=(1,), samples=8, timesteps=10, train_images=64, batch_size=16,
                    n_real=64, sample_batch=8, checkpoint_every=2, log_every=1),
    "demo": Preset(epochs=1, eval_epochs=(0.5, 1), samples=64, timesteps=1000, train_images=2_048,
                   batch_size=32, n_real=500, sample_batch=64, checkpoint_every=16, log_every=2,
                   sampler="ddim", sampling_steps=50),
    "paper": Preset(epochs=20, eval_epochs=(1, 10, 20), samples=7_000, timesteps=1000, train_images=None,
                    batch_size=128, n_real=7_000, sample_batch=500, checkpoint_every=469, log_every=10),
}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    train.atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


# --------------------------------------------------------------------------------------------
# Samples


def sampling_key(seed: int, batch_index: int) -> jax.Array:
    """Key of sample batch ``batch_index``: the same noise at every evaluation epoch of a run,
    so differences between epochs come from the network, not from the draw."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), 0x5A3), batch_index)


def draw_samples(
    model: Any,
    params: train.Params,
    n: int,
    *,
    timesteps: int,
    seed: int,
    batch: int,
    sampler: str = "ddpm",
    sampling_steps: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """``n`` images in [-1, 1], in batches: ancestral DDPM over all ``timesteps`` steps (the paper),
    or DDIM over ``sampling_steps`` (faster, for demos)."""
    schedule = diffusion.make_schedule("cosine", timesteps)
    apply_fn = _apply_fn(model)
    out = []
    for i, start in enumerate(range(0, n, batch)):
        size = min(batch, n - start)
        x = diffusion.sample(schedule, apply_fn, params, sampling_key(seed, i), (size, 28, 28, 1),
                              progress=progress, method=sampler, steps=sampling_steps)
        out.append(np.asarray(x))
    return np.concatenate(out)


_APPLY_FNS: dict[Any, train.ApplyFn] = {}


def _apply_fn(model: Any) -> train.ApplyFn:
    """One apply function per model, so the compiled sampler is reused."""
    if model not in _APPLY_FNS:
        _APPLY_FNS[model] = train.make_apply_fn(model)
    return _APPLY_FNS[model]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Model-range images (N, 28, 28, 1) in [-1, 1] -> uint8 (N, 28, 28), rounded."""
    images = np.asarray(images, np.float64)
    if images.ndim == 4:
        images = images[..., 0]
    return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_samples(path: str | Path, images: np.ndarray) -> Path:
    """Store images as compressed ``.npz`` (key ``images``, uint8 (N, 28, 28))."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = images if images.dtype == np.uint8 else to_uint8(images)
    tmp = path.with_name(path.stem + ".part.npz")
    np.savez_compressed(tmp, images=pixels)
    os.replace(tmp, path)
    return path


def load_samples(path: str | Path) -> np.ndarray:
    """uint8 images (N, 28, 28) saved by :func:`save_samples`."""
    with np.load(path) as f:
        if "images" not in f:
            raise ValueError(f"{path} has no 'images' array; write it with `experiments sample`")
        return f["images"]


def save_grid(path: str | Path, images: np.ndarray, title: str, n: int = 64) -> Path:
    """A PNG grid of the first ``n`` samples."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from qhd_lib.plotting import image_grid, use_book_style

    use_book_style()
    pixels = images if images.dtype == np.uint8 else to_uint8(images)
    fig = image_grid(pixels[:n], ncols=min(16, max(1, len(pixels[:n]))), scale=0.6, value_range=(0, 255))
    fig.suptitle(title, y=1.02)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


# --------------------------------------------------------------------------------------------
# Metrics


def measure(images: np.ndarray, dataset: str, n_real: int, seed: int, progress: bool = True) -> dict[str, Any]:
    """FID, KID ± std, IS ± std of ``images`` (torch is imported only here)."""
    from qhd_lib import metrics

    return metrics.evaluate(images, dataset, n_real=n_real, seed=seed, progress=progress)


# --------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One experiment: a column of Table 1/2 at some scale."""

    dataset: str
    model: str
    scale: str
    epochs: float
    eval_epochs: tuple[float, ...]
    samples: int
    seed: int
    timesteps: int
    train_images: int | None
    batch_size: int
    n_real: int
    sample_batch: int
    checkpoint_every: int
    log_every: int
    sampler: str = "ddpm"
    sampling_steps: int | None = None
    released_code: bool = False
    metrics: bool = True
    transfer_from: str | None = None
    transfer_epochs: float | None = None
    transfer_fresh: str = "resblocks"

    def train_config(self, epochs: float, stream: int = 0) -> train.TrainConfig:
        """The :class:`~qhd_lib.train.TrainConfig` of one training phase."""
        return train.TrainConfig(epochs=epochs, batch_size=self.batch_size, seed=self.seed,
                                 timesteps=self.timesteps, checkpoint_every=self.checkpoint_every,
                                 log_every=self.log_every, stream=stream)

    def deviations(self) -> list[str]:
        """How this run differs from the paper's protocol (empty at paper scale)."""
        paper, out = PRESETS["paper"], []
        if self.timesteps != paper.timesteps:
            out.append(f"{self.timesteps} diffusion steps instead of {paper.timesteps} (training and sampling)")
        if self.train_images is not None:
            out.append(f"trained on the first {self.train_images} training images instead of all 60 000")
        if self.epochs != paper.epochs:
            out.append(f"{self.epochs:g} epoch{'' if self.epochs == 1 else 's'} instead of {paper.epochs}")
        if self.batch_size != paper.batch_size:
            out.append(f"batch {self.batch_size} instead of {paper.batch_size}")
        if self.samples != paper.samples:
            out.append(f"{self.samples} generated images instead of {paper.samples}")
        if self.n_real != paper.n_real:
            out.append(f"{self.n_real} real images for the metrics instead of {paper.n_real}")
        if self.sampler != paper.sampler:
            out.append(f"{self.sampler.upper()} sampling with {self.sampling_steps} steps instead of "
                       f"ancestral DDPM with {paper.timesteps}")
        if self.released_code:
            out.append(RELEASED_DEVIATION)
        return out


def _run_config_from_args(args: argparse.Namespace) -> RunConfig:
    preset = PRESETS[args.scale]
    epochs = args.epochs if args.epochs is not None else preset.epochs
    if args.eval_epochs is not None:
        eval_epochs = tuple(args.eval_epochs)
    else:
        eval_epochs = tuple(e for e in preset.eval_epochs if e <= epochs) or (epochs,)
        if epochs not in eval_epochs:
            eval_epochs = (*eval_epochs, epochs)
    if args.transfer_from is not None:
        if args.transfer_epochs is None or not 0 < args.transfer_epochs < epochs:
            raise SystemExit(
                f"error: --transfer-from needs --transfer-epochs between 0 and --epochs ({epochs:g}), "
                f"e.g. --epochs 20 --transfer-epochs 19 for the paper's 19+1"
            )
        eval_epochs = (epochs,)
    bad = [e for e in eval_epochs if not 0 < e <= epochs]
    if bad:
        raise SystemExit(f"error: --eval-epochs {bad} outside (0, {epochs:g}]; evaluate within the run")
    sampler = args.sampler or preset.sampler
    train_images = preset.train_images if args.train_images is None else (args.train_images or None)
    return RunConfig(
        dataset=args.dataset, model=args.model, scale=args.scale, epochs=epochs,
        eval_epochs=tuple(sorted(set(eval_epochs))), samples=args.samples or preset.samples, seed=args.seed,
        timesteps=args.timesteps or preset.timesteps, train_images=train_images,
        batch_size=args.batch_size or preset.batch_size, n_real=args.n_real or preset.n_real,
        sample_batch=args.sample_batch or preset.sample_batch,
        sampler=sampler,
        sampling_steps=None if sampler == "ddpm" else (args.sampling_steps or preset.sampling_steps or 50),
        checkpoint_every=args.checkpoint_every or preset.checkpoint_every, log_every=preset.log_every,
        released_code=args.released_code, metrics=not args.no_metrics,
        transfer_from=args.transfer_from, transfer_epochs=args.transfer_epochs,
        transfer_fresh=args.transfer_fresh,
    )


def training_images(config: RunConfig) -> np.ndarray:
    """The training set in the model's range, (N, 28, 28, 1) float32 in [-1, 1]."""
    images, _ = data.load(config.dataset, "train")
    if config.train_images is not None:
        if config.train_images > len(images):
            raise SystemExit(f"error: --train-images {config.train_images} > {len(images)} available")
        images = images[: config.train_images]
    return data.to_model_range(images)


def _epoch_label(epoch: float) -> str:
    return f"{epoch:g}".replace(".", "p")


def _leaf(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _train_phases(config: RunConfig, out: Path, images: np.ndarray, progress: bool) -> dict[str, Any]:
    """Train (or resume) the run's network; with transfer learning, first the source network."""
    model = make_model(config.model, released_code=config.released_code)
    n = len(images)
    snapshots = {e: train.steps_for_epochs(e, n, config.batch_size) for e in config.eval_epochs}
    info: dict[str, Any] = {}
    init = None
    epochs = config.epochs
    stream = 0
    if config.transfer_from is not None:
        source_model = make_model(config.transfer_from, released_code=config.released_code)
        source = train.train(source_model, images, config.train_config(config.transfer_epochs),
                             out / SOURCE_DIR, progress=progress)
        fresh_modules = VERTEX_SCOPES[config.transfer_fresh]
        target = train.init_params(model, config.seed)
        init, copied, fresh = train.transfer_params(
            source.state.params, target, lambda path: path[0] in fresh_modules)
        info["transfer"] = {
            "source_model": config.transfer_from, "source_epochs": config.transfer_epochs,
            "source_run_dir": str(out / SOURCE_DIR), "source_steps": source.total_steps,
            "source_wall_s": source.wall_s, "source_median_step_s": source.median_step_s,
            "fresh_modules": list(fresh_modules), "copied_leaves": len(copied), "fresh_leaves": len(fresh),
            "fresh_params": sum(int(np.prod(np.shape(_leaf(init, p)))) for p in fresh),
            "note": "the target starts from the source's (non-EMA) parameters; Adam state and EMA restart",
        }
        epochs = config.epochs - config.transfer_epochs
        stream = 1
        snapshots = {config.epochs: train.steps_for_epochs(epochs, n, config.batch_size)}
    result = train.train(model, images, config.train_config(epochs, stream), out / TRAIN_DIR,
                         init=init, snapshot_steps=snapshots.values(), progress=progress)
    info.update({
        "steps": result.total_steps, "resumed_from_step": result.resumed_from, "wall_s": result.wall_s,
        "median_step_s": result.median_step_s, "steps_timed": len(result.step_times_s),
        "snapshots": {f"{e:g}": s for e, s in snapshots.items()},
    })
    info["params"] = count_params(result.state.params)
    return info


def run(config: RunConfig, out: str | Path, progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Train, sample at each evaluation epoch, measure; write ``out/run.json`` as it goes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    record: dict[str, Any] = {
        "command": command or "(called from Python)",
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
        "paper_protocol": not config.deviations(),
        "deviations": config.deviations(),
        "seed": config.seed,
        "started": _now(),
        "commit": git_commit(),
        "device": device_info(),
        "versions": package_versions(),
        "status": "training",
    }
    previous = _read_run(out)
    if previous is not None and previous.get("config") != record["config"]:
        raise SystemExit(
            f"error: {out} holds a run with another configuration; use a new --out to start a new run"
        )
    _write_json(out / RUN_FILE, record)
    images = training_images(config)
    record["train_images_used"] = len(images)
    record["train"] = _train_phases(config, out, images, progress)
    record["params"] = record["train"].pop("params")
    record["status"] = "evaluating"
    _write_json(out / RUN_FILE, record)

    model = make_model(config.model, released_code=config.released_code)
    done = {e["epoch"]: e for e in (previous or {}).get("evaluations", []) if e.get("complete")}
    record["evaluations"] = []
    for epoch, step in record["train"]["snapshots"].items():
        epoch_f = float(epoch)
        entry = done.get(epoch_f) or _evaluate_epoch(config, out, model, epoch_f, step, progress)
        record["evaluations"].append(entry)
        _write_json(out / RUN_FILE, record)
    record["status"] = "complete"
    record["finished"] = _now()
    record["wall_s_this_invocation"] = time.perf_counter() - t0
    _write_json(out / RUN_FILE, record)
    return record


def _evaluate_epoch(config: RunConfig, out: Path, model: Any, epoch: float, step: int,
                    progress: bool) -> dict[str, Any]:
    params = train.load_params(train.snapshot_path(out / TRAIN_DIR, step))
    label = _epoch_label(epoch)
    t = time.perf_counter()
    images = draw_samples(model, params, config.samples, timesteps=config.timesteps, seed=config.seed,
                          batch=config.sample_batch, sampler=config.sampler,
                          sampling_steps=config.sampling_steps, progress=progress)
    sampling_s = time.perf_counter() - t
    npz = save_samples(out / f"samples_epoch{label}.npz", images)
    png = save_grid(out / f"samples_epoch{label}.png", images,
                    f"{config.model}, {config.dataset}, epoch {epoch:g}")
    entry: dict[str, Any] = {
        "epoch": epoch, "step": step, "samples_file": npz.name, "grid_png": png.name,
        "n_samples": len(images), "sampling_wall_s": sampling_s,
        "sampling": (f"ancestral DDPM, {config.timesteps} steps, EMA parameters" if config.sampler == "ddpm"
                     else f"DDIM (eta 0), {config.sampling_steps} steps, EMA parameters"),
    }
    if config.metrics:
        t = time.perf_counter()
        entry["metrics"] = measure(images, config.dataset, config.n_real, config.seed, progress)
        entry["metrics_wall_s"] = time.perf_counter() - t
    else:
        entry["metrics"] = None
    entry["complete"] = True
    return entry


def _read_run(out: Path) -> dict[str, Any] | None:
    path = out / RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


# --------------------------------------------------------------------------------------------
# sample / evaluate subcommands


def sample_from_run(run_dir: str | Path, out: str | Path, *, epoch: float | None = None,
                    samples: int | None = None, seed: int | None = None, batch: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Draw samples from a finished (or snapshotted) run's EMA parameters into a ``.npz``."""
    run_dir = Path(run_dir)
    record = _read_run(run_dir)
    if record is None or "train" not in record:
        raise SystemExit(f"error: {run_dir} has no trained run ({RUN_FILE} missing or training unfinished)")
    config = RunConfig(**{**record["config"], "eval_epochs": tuple(record["config"]["eval_epochs"])})
    snapshots = {float(k): v for k, v in record["train"]["snapshots"].items()}
    epoch = max(snapshots) if epoch is None else epoch
    if epoch not in snapshots:
        raise SystemExit(f"error: no parameters saved at epoch {epoch:g}; available: "
                         f"{', '.join(f'{e:g}' for e in sorted(snapshots))}")
    model = make_model(config.model, released_code=config.released_code)
    params = train.load_params(train.snapshot_path(run_dir / TRAIN_DIR, snapshots[epoch]))
    n = samples or config.samples
    t = time.perf_counter()
    images = draw_samples(model, params, n, timesteps=config.timesteps,
                          seed=config.seed if seed is None else seed,
                          batch=batch or config.sample_batch, sampler=config.sampler,
                          sampling_steps=config.sampling_steps, progress=progress)
    path = save_samples(out, images)
    info = {"samples_file": str(path), "run": str(run_dir), "epoch": epoch, "n_samples": n,
            "sampling_wall_s": time.perf_counter() - t, "device": device_info(), "date": _now()}
    _write_json(path.with_suffix(".json"), info)
    return info


def evaluate_samples(samples: str | Path, dataset: str, *, n_real: int = 7_000, seed: int = 42,
                     out: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """FID/KID/IS of a ``.npz`` of samples; written to ``out`` (default: next to the samples)."""
    images = load_samples(samples)
    t = time.perf_counter()
    result = {"samples_file": str(samples), "metrics": measure(images, dataset, n_real, seed, progress)}
    result.update(metrics_wall_s=time.perf_counter() - t, device=device_info(), date=_now(),
                  commit=git_commit(), versions=package_versions())
    out = Path(out) if out is not None else Path(samples).with_name(Path(samples).stem + "_metrics.json")
    _write_json(out, result)
    return result


# --------------------------------------------------------------------------------------------
# compare: runs side by side, seeds pooled, against the paper


def _protocol(record: dict[str, Any]) -> tuple[str, ...]:
    """How a run's protocol differs from the paper's, leaving out the model variant."""
    return tuple(d for d in record["deviations"] if d != RELEASED_DEVIATION)


def _group_key(record: dict[str, Any]) -> tuple:
    """Runs that differ only in their seed (same dataset, model, variant and protocol)."""
    c = record["config"]
    return (c["dataset"], c["model"], c["released_code"], c["transfer_from"], c["transfer_epochs"],
            _protocol(record))


def _column(config: dict[str, Any]) -> str:
    """The paper's column a run belongs to: ``transfer`` for source → hybrid transfer runs,
    ``transfer_control`` for the source → same-model control of fig. 13b."""
    if config["transfer_from"] is None:
        return config["model"]
    return "transfer_control" if config["model"] == config["transfer_from"] else "transfer"


def _stats(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (n − 1; None for one run) and n over seeds."""
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "n": len(arr), "values": [float(v) for v in arr]}


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


def compare_runs(run_dirs: Sequence[str | Path]) -> dict[str, Any]:
    """Pool runs over seeds, compare every model with the classical U-Net of the same protocol,
    and put the paper's value beside each (a difference only where the protocol is the paper's)."""
    from qhd_lib import paper

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for run_dir in run_dirs:
        record = _read_run(Path(run_dir))
        if record is None or record.get("status") != "complete":
            raise SystemExit(f"error: {run_dir} holds no finished run ({RUN_FILE} missing or status not "
                             f"'complete'); rerun its command to finish it, or leave it out")
        record["run_dir"] = str(run_dir)
        groups.setdefault(_group_key(record), []).append(record)

    rows = []
    for records in groups.values():
        first = records[0]
        config, column = first["config"], _column(first["config"])
        seeds = sorted(r["seed"] for r in records)
        if len(set(seeds)) != len(seeds):
            raise SystemExit(f"error: two runs of {column} on {config['dataset']} share a seed ({seeds}); "
                             "give each run its own --seed")
        by_epoch: dict[float, list[dict[str, Any]]] = {}
        for r in records:
            for e in r["evaluations"]:
                if e.get("metrics"):
                    by_epoch.setdefault(float(e["epoch"]), []).append(e)
        epochs = {}
        for epoch, entries in sorted(by_epoch.items()):
            m = [e["metrics"] for e in entries]
            row = {"fid": _stats([x["fid"] for x in m]), "kid": _stats([x["kid_mean"] for x in m]),
                   "is": _stats([x["is_mean"] for x in m]) if all(x.get("is_mean") is not None for x in m)
                   else None,
                   "grids": [str(Path(r["run_dir"]) / e["grid_png"]) for r, e in zip(records, entries)]}
            published = (paper.TABLES.get(config["dataset"], {}).get(column) if epoch == 20
                         else paper.IN_TEXT.get((config["dataset"], column, epoch)))  # 1.0 finds 1
            row["paper"] = published
            if published and first["paper_protocol"] and not config["released_code"]:
                row["paper_fid_diff"] = row["fid"]["mean"] - paper.mean_of(published["fid"])
            else:
                row["paper_fid_diff"] = None
            epochs[f"{epoch:g}"] = row
        rows.append({
            "dataset": config["dataset"], "model": config["model"], "column": column,
            "released_code": config["released_code"], "transfer_from": config["transfer_from"],
            "paper_protocol": first["paper_protocol"], "deviations": first["deviations"],
            "protocol": list(_protocol(first)), "seeds": seeds,
            "params": first["params"], "paper_params": paper.PARAMS.get(column),
            "median_step_s": _stats([r["train"]["median_step_s"] for r in records]),
            "device": first["device"], "run_dirs": [r["run_dir"] for r in records],
            "commits": sorted({r["commit"] for r in records}), "epochs": epochs,
        })

    for row in rows:
        base = next((b for b in rows if b["column"] == "classical" and not b["released_code"]
                     and b["transfer_from"] is None
                     and b["dataset"] == row["dataset"] and b["protocol"] == row["protocol"]), None)
        row["vs_classical"] = None if base is None or base is row else {
            epoch: _verdict(stats["fid"], base["epochs"][epoch]["fid"])
            for epoch, stats in row["epochs"].items() if epoch in base["epochs"]}
    rows.sort(key=lambda r: (r["dataset"], r["paper_protocol"], r["released_code"],
                             paper.COLUMNS.index(r["column"]) if r["column"] in paper.COLUMNS else 99))
    return {"paper_source": paper.SOURCE, "groups": rows, "commit": git_commit(), "date": _now()}


# --------------------------------------------------------------------------------------------
# Command line


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _epoch_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 1,10,20, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one epoch, e.g. 1,10,20")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m qhd_lib.experiments`` command line."""
    parser = argparse.ArgumentParser(prog="python -m qhd_lib.experiments",
                                     description="Train, sample and measure the paper's models.")
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train (or resume), sample with EMA parameters, measure, write run.json")
    r.add_argument("--dataset", required=True, choices=data.DATASETS)
    r.add_argument("--model", required=True, choices=MODEL_NAMES)
    r.add_argument("--out", required=True, type=Path, help="run directory (rerun the command to resume)")
    r.add_argument("--scale", choices=SCALES, default="demo",
                   help="preset sizes: smoke (seconds, fewer diffusion steps), demo (minutes), paper")
    r.add_argument("--epochs", type=_positive_float, help="training epochs (paper: 20)")
    r.add_argument("--eval-epochs", type=_epoch_list, help="epochs to sample and measure at, e.g. 1,10,20")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--samples", type=int, help="generated images per evaluation (paper: 7000)")
    r.add_argument("--timesteps", type=int, help="diffusion steps T (paper: 1000)")
    r.add_argument("--train-images", type=int, help="use the first N training images (0 = all)")
    r.add_argument("--batch-size", type=int, help="batch size (paper: 128)")
    r.add_argument("--n-real", type=int, help="real images the metrics compare against (paper: 7000)")
    r.add_argument("--sample-batch", type=int, help="images sampled at once")
    r.add_argument("--sampler", choices=("ddpm", "ddim"),
                   help="ddpm: ancestral, all T steps (the paper); ddim: deterministic, --sampling-steps")
    r.add_argument("--sampling-steps", type=int, help="DDIM steps (default 50)")
    r.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    r.add_argument("--released-code", action="store_true", help="the released code's model variant")
    r.add_argument("--no-metrics", action="store_true", help="sample but do not compute FID/KID/IS")
    r.add_argument("--transfer-from", choices=MODEL_NAMES,
                   help="transfer learning: train this model first, then copy all but the vertex")
    r.add_argument("--transfer-epochs", type=_positive_float,
                   help="epochs of the source model (paper: 19 MNIST, 18 Fashion-MNIST)")
    r.add_argument("--transfer-fresh", choices=tuple(VERTEX_SCOPES), default="resblocks",
                   help="what counts as the vertex that is re-initialised (default: its two ResNet blocks)")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("sample", help="draw samples from a run's EMA parameters into a .npz")
    s.add_argument("--run", required=True, type=Path, help="run directory written by `run`")
    s.add_argument("--out", required=True, type=Path, help="output .npz")
    s.add_argument("--epoch", type=float, help="evaluation epoch to sample from (default: the last)")
    s.add_argument("--samples", type=int, help="number of images (default: the run's)")
    s.add_argument("--seed", type=int, help="sampling seed (default: the run's)")
    s.add_argument("--batch", type=int, help="images sampled at once")
    s.add_argument("--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="FID/KID/IS of a .npz of samples")
    e.add_argument("--samples", required=True, type=Path)
    e.add_argument("--dataset", required=True, choices=data.DATASETS)
    e.add_argument("--n-real", type=int, default=7_000)
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--out", type=Path, help="metrics JSON (default: <samples>_metrics.json)")
    e.add_argument("--quiet", action="store_true")

    c = sub.add_parser("compare", help="pool runs over seeds, compare with classical and the paper")
    c.add_argument("runs", nargs="+", type=Path, help="run directories written by `run`")
    c.add_argument("--out", required=True, type=Path, help="comparison JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qhd_lib.experiments``."""
    args = build_parser().parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = "python -m qhd_lib.experiments " + shlex.join(argv_list)
    progress = not getattr(args, "quiet", False)
    try:
        if args.command == "run":
            record = run(_run_config_from_args(args), args.out, progress=progress, command=command)
            print(json.dumps(_summary(record), indent=1))
        elif args.command == "sample":
            if not args.run.is_dir():
                raise SystemExit(f"error: run directory {args.run} does not exist")
            info = sample_from_run(args.run, args.out, epoch=args.epoch, samples=args.samples,
                                   seed=args.seed, batch=args.batch, progress=progress)
            print(json.dumps({k: info[k] for k in ("samples_file", "epoch", "n_samples")}))
        elif args.command == "compare":
            result = compare_runs(args.runs)
            result["command"] = command
            _write_json(args.out, result)
            print(json.dumps([{"column": g["column"], "dataset": g["dataset"], "seeds": g["seeds"],
                               "paper_protocol": g["paper_protocol"]} for g in result["groups"]]))
        else:
            if not args.samples.is_file():
                raise SystemExit(f"error: samples file {args.samples} does not exist")
            result = evaluate_samples(args.samples, args.dataset, n_real=args.n_real, seed=args.seed,
                                      out=args.out, progress=progress)
            print(json.dumps(result["metrics"], indent=1))
    except train.TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _summary(record: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for e in record.get("evaluations", []):
        m = e.get("metrics") or {}
        rows.append({"epoch": e["epoch"], "fid": m.get("fid"), "kid": m.get("kid_mean"), "is": m.get("is_mean")})
    return {"model": record["config"]["model"], "dataset": record["config"]["dataset"],
            "params": record.get("params"), "evaluations": rows}


if __name__ == "__main__":
    sys.exit(main())
