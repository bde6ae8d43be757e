"""The GPU campaign: the paper plan made run by run, in resumable pieces, on a machine lent in
slots of minutes (issue 19; ``scripts/device_campaign.py`` is its command line).

Each invocation on the GPU machine continues the run in progress, or starts the next one of
`plans.campaign_runs` whose ``run.json`` is not complete under ``results/paper/``, and works on
it through the experiment runner with a deadline (`qhd_lib.deadline`): training stops between
logged blocks of steps, sampling between chunks of reverse steps, each saved, so that the next
invocation resumes to exactly the numbers of a run that never stopped. What comes back is at most
`MAX_FILES` files:

- ``run.json``: the runner's record of the run (``campaign`` says which run, which invocation);
- ``state.tar.0`` … : the run directory without its samples (checkpoints, EMA snapshots, logs,
  a sampling chunk in progress), in parts of at most `PART_BYTES`; only logs once it is complete;
- ``samples_epoch*.npz``: the uint8 samples of each evaluation finished in this invocation;
- ``jax_cache.tar``: JAX's compilation cache, sent along next time to skip the compiles;
- ``campaign.log``: what the invocation did, and when;
- anything else already in ``--out`` (the slot's benchmark files, ``bench_*.json``) counts
  towards the eight.

On the host, :func:`collect` files them: the state to send back next time under
``.campaign/send/state``, finished samples under ``.campaign/back/<run>``, benchmark files into
``results/``, and a complete run into ``results/paper/<run>/`` (run.json, training log, samples,
grids), ready to commit. Metrics: when the float16 Inception weights travel along
(``prepare --inception``, `qhd_lib.metrics.write_f16_weights`) and torch sees a GPU there, each
evaluation finished in an invocation is scored there, upcast to float32
(:func:`score_evaluations`); otherwise its samples come back and ``experiments evaluate`` scores
them on the host with the exact f32 weights. Every metrics result names its weights and device.
:func:`prepare` packs the training images of the next run's dataset (compressed IDX files) and
prints the device command.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io as pyio
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qhd_lib import data, io, metrics, provenance
from qhd_lib.errors import ConfigError, RunStateError
from qhd_lib.experiments import samples as sampling
from qhd_lib.experiments import scoring
from qhd_lib.experiments.config import RunConfig
from qhd_lib.experiments.overrides import override
from qhd_lib.experiments.plans import PlannedRun, campaign_runs
from qhd_lib.experiments.protocols import configure
from qhd_lib.experiments.publish import SOURCE_LOG
from qhd_lib.experiments.records import RUN_FILE, SOURCE_DIR, TRAIN_DIR, read_run
from qhd_lib.train import LOG_FILE

MAX_FILES = 8  # what the GPU machine sends back: at most 8 files of at most 16 MiB
CARRY_LIMIT_BYTES = 64 << 20  # what a call takes along: the working tree and the carried paths
PART_BYTES = 15 * 2**20
CACHE_FILE = "jax_cache.tar"
STATE_PREFIX = "state.tar."
LOG_NAME = "campaign.log"
HOST_DIR = Path(".campaign")
METRICS_NOTE = (
    "not measured on the GPU machine (the float16 Inception weights did not travel there, or "
    "there was no time or no GPU for torch): score the samples on the host with "
    "`python -m qhd_lib.experiments evaluate`"
)
METRICS_ON_DEVICE = (
    "scored on the GPU machine with the float16 Inception weights upcast to float32 "
    "(results/metrics_f16.json measures the difference to the exact weights)"
)
INCEPTION_DIR = "inception"  # prepare --inception: .campaign/send/inception/<F16_FILE>
SCORING_ALLOWANCE_S = 120.0  # torch's start, the Inception on 7 000 fake and 7 000 real images
BENCH_PREFIX = "bench_"  # the slot's benchmark files: filed into results/ by collect
TRANSFER_REHEARSAL = {  # a transfer run at a protocol other than the paper's: 1 + 1 epochs
    "train.epochs": 2,
    "train.transfer.source_epochs": 1,
    "evaluation.epochs": (2,),
}


def run_name(planned: PlannedRun) -> str:
    """The run's folder name under ``results/paper/``, e.g. ``mnist_classical_seed42``."""
    return Path(planned.out).name


def planned_run(name: str) -> PlannedRun:
    """The campaign's run called ``name``."""
    for planned in campaign_runs():
        if run_name(planned) == name:
            return planned
    raise ConfigError(
        f"no run {name!r} in the campaign; use one of `python -m qhd_lib.experiments plan paper`"
    )


def campaign_config(planned: PlannedRun, protocol: str, deadline_s: float | None) -> RunConfig:
    """The runner's settings for ``planned`` at ``protocol``: the paper's, or a rehearsal at a
    smaller protocol (a transfer then takes 1 + 1 epochs); metrics off (`METRICS_NOTE`)."""
    changes = dict(planned.changes)
    if protocol != planned.protocol and "train.transfer.source_epochs" in changes:
        changes |= TRANSFER_REHEARSAL
    changes |= {"evaluation.metrics": False, "deadline_s": deadline_s}
    return configure(protocol, changes)


def is_complete(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run."""
    record = read_run(run_dir)
    return record is not None and record.get("status") == "complete"


def next_run(results: Path, state: Path | None) -> PlannedRun | None:
    """The run to work on: the one in progress in ``state``, else the first of the campaign
    without a complete ``run.json`` under ``results``; None when every run is there."""
    record = read_run(state) if state is not None else None
    if record is not None and record.get("status") != "complete":
        return planned_run(record["campaign"]["run"])
    for planned in campaign_runs():
        name = run_name(planned)
        done = record is not None and record["campaign"]["run"] == name
        if not done and not is_complete(results / name):
            return planned
    return None


# ----------------------------------------------------------------------------------------------
# On the GPU machine


def device_run(
    out: Path,
    *,
    deadline_s: float,
    work: Callable[[Path, RunConfig, float], None],
    state: Path | None = None,
    data_dir: Path | None = None,
    results: Path = provenance.ROOT / "results" / "paper",
    protocol: str = "paper",
    name: str | None = None,
    scratch: Path,
    inception: Path | None = None,
) -> dict[str, Any] | None:
    """One invocation: pick the run, unpack its state into ``scratch``, let ``work`` train and
    sample it until ``deadline_s`` minus the time packing (and scoring) takes, score what it
    sampled when ``inception`` holds the float16 weights, pack what it left into ``out``.

    ``work(run_dir, config, hard_s)`` makes the run (``config.deadline_s`` is its own deadline);
    ``hard_s`` is when it must be over in any case (the command line kills a child process then).
    Returns the run's record, or None when the campaign is finished.
    """
    started = time.monotonic()
    log = _Log(out / LOG_NAME, started)
    planned = planned_run(name) if name is not None else next_run(results, state)
    if planned is None:
        log.write("every run of the campaign is complete")
        return None
    run_dir = scratch / run_name(planned)
    saved = read_run(state) if state is not None else None
    resumed = saved is not None and saved["campaign"]["run"] == run_name(planned)
    unpacked = _unpack_state(state, run_dir) if resumed else 0
    log.write(f"run {run_name(planned)} at protocol {protocol}; {unpacked} state bytes unpacked")
    if data_dir is not None:
        os.environ["QHD_DATA_DIR"] = str(_unpack_data(data_dir, scratch / "data"))
    reserve = packing_reserve(deadline_s) + (SCORING_ALLOWANCE_S if inception else 0.0)
    hard_s = deadline_s - reserve - (time.monotonic() - started)
    config = campaign_config(planned, protocol, max(hard_s - WORK_START_S, 1.0))
    invocations = saved["campaign"]["invocations"] if resumed else 0
    work(run_dir, config, hard_s)
    record = read_run(run_dir) or {}
    left = deadline_s - packing_reserve(deadline_s) - (time.monotonic() - started)
    scored = score_evaluations(record, run_dir, inception, left, log) if inception else 0
    record["campaign"] = {
        "run": run_name(planned),
        "protocol": protocol,
        "metrics": METRICS_ON_DEVICE if scored else METRICS_NOTE,
        "invocations": invocations + 1,
    }
    io.write_json(run_dir / RUN_FILE, record)
    log.write(f"status {record.get('status', 'not started')}: {record.get('stopped', '')}")
    written = pack(run_dir, out)
    log.write(f"packed {', '.join(p.name for p in written)}; reserve was {reserve:.0f} s")
    return record


WORK_START_S = 10.0  # a child process's imports before its own deadline starts counting


def scoring_device() -> str | None:
    """The torch device to score on here: "cuda" where torch sees a GPU, else None (a CPU
    leaves the scoring to the host, where it takes minutes, not seconds)."""
    import torch

    return "cuda" if torch.cuda.is_available() else None


def score_evaluations(
    record: dict[str, Any], run_dir: Path, inception: Path, left_s: float, log: _Log
) -> int:
    """Score, with the float16 Inception weights in ``inception`` upcast to float32, every
    evaluation of ``record`` whose samples this invocation made (they are in ``run_dir``) and
    that has no metrics yet, while ``left_s`` seconds allow; returns how many were scored. Each
    result names the weights and the device (`qhd_lib.metrics.evaluate`)."""
    device = scoring_device()
    todo = [
        e for e in record.get("evaluations", [])
        if e.get("metrics") is None and (run_dir / e["samples_file"]).is_file()
    ]  # fmt: skip
    if device is None or not todo:
        log.write(f"{len(todo)} evaluations to score; torch device: {device or 'none (no GPU)'}")
        return 0
    config = record["config"]
    ev, scored, started = config["evaluation"], 0, time.monotonic()
    where = {"QHD_WEIGHTS_DIR": str(inception), "QHD_CACHE_DIR": str(run_dir.parent / "cache")}
    with _environment(where):
        for entry in todo:
            if time.monotonic() - started + SCORING_ALLOWANCE_S > left_s:
                log.write(f"no time left to score epoch {entry['epoch']:g}: the host scores it")
                break
            t = time.perf_counter()
            entry["metrics"] = scoring.measure(
                io.load_images(run_dir / entry["samples_file"]),
                config["data"]["dataset"],
                ev["n_real"],
                config["seed"],
                ev["real_split"],
                progress=False,
                weights="f16",
                device=device,
            )
            entry["metrics_wall_s"] = time.perf_counter() - t
            scored += 1
            log.write(f"scored epoch {entry['epoch']:g} on {device}: FID {entry['metrics']['fid']}")
    return scored


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Environment variables set to ``values`` inside, restored after."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def sampling_batch(config: RunConfig, run_dir: Path, requested: int | str | None) -> RunConfig:
    """``config`` with the sampling batch of this run: the one a resumed run began with (its
    run.json: the noise of each batch depends on it), else ``requested`` (a number, or "auto":
    the largest that device memory allows, `samples.batch_for_memory`; the protocol's on a
    device that does not report its memory, a CPU)."""
    saved = read_run(run_dir)
    if saved is not None and "config" in saved:
        batch = saved["config"]["sampling"]["batch"]
    elif requested == "auto":
        memory = sampling.device_memory_bytes()
        if memory is None:
            return config
        from qhd_lib import models, sharding

        model = models.make_model(
            config.model.architecture, released_code=config.model.released_code
        )
        devices = sharding.device_count(sharding.batch_mesh())
        batch = sampling.batch_for_memory(
            config.evaluation.samples, sampling.sampling_bytes_per_image(model), memory, devices
        )
    elif requested is None:
        return config
    else:
        batch = int(requested)
    return override(config, {"sampling.batch": batch, "sampling.chunk": None})


def packing_reserve(deadline_s: float) -> float:
    """Seconds kept for packing the state after the work: 10 s and 2 % of the deadline."""
    return 10.0 + 0.02 * deadline_s


def pack(run_dir: Path, out: Path) -> list[Path]:
    """``out``'s files for ``run_dir``: run.json, the state in parts, the evaluations' samples
    (`MAX_FILES` at most, the log and the JAX cache included). A complete run sends only its
    logs as state: its checkpoints are no longer needed."""
    out.mkdir(parents=True, exist_ok=True)
    written = [io.write_bytes(out / RUN_FILE, (run_dir / RUN_FILE).read_bytes())]
    samples = sorted(run_dir.glob("samples_epoch*.npz"))
    written += [io.write_bytes(out / p.name, p.read_bytes()) for p in samples]
    keep = _state_files(run_dir, logs_only=is_complete(run_dir))
    archive = _tar({str(p.relative_to(run_dir)): p.read_bytes() for p in keep})
    parts = [archive[i : i + PART_BYTES] for i in range(0, len(archive), PART_BYTES)] or [b""]
    ours = {p.name for p in written} | {LOG_NAME, CACHE_FILE}
    others = [p for p in out.iterdir() if p.name not in ours]  # e.g. the slot's benchmarks
    room = MAX_FILES - len(written) - 2 - len(others)  # the log and the JAX cache
    if len(parts) > room:
        raise RunStateError(
            f"the state of {run_dir} needs {len(parts)} files of {PART_BYTES >> 20} MiB but only "
            f"{room} are left of {MAX_FILES} ({', '.join(sorted(p.name for p in others))} "
            "already there); evaluate fewer epochs per invocation"
        )
    written += [io.write_bytes(out / f"{STATE_PREFIX}{i}", b) for i, b in enumerate(parts)]
    return written


def _state_files(run_dir: Path, logs_only: bool) -> list[Path]:
    """The files of ``run_dir`` that resume it (all but samples, grids and temporary files), or
    only its run.json and training logs."""
    if logs_only:
        found = [run_dir / d / LOG_FILE for d in (TRAIN_DIR, SOURCE_DIR)]
        return [p for p in found if p.is_file()]
    return sorted(
        p
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.name != RUN_FILE
        and not p.name.endswith(".tmp")
        and not (p.parent == run_dir and p.name.startswith("samples_epoch"))
    )


def _tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of ``files`` (name → bytes): checkpoints and npz do not compress."""
    buffer = pyio.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, pyio.BytesIO(content))
    return buffer.getvalue()


def _unpack_state(state: Path, run_dir: Path) -> int:
    """Rebuild ``run_dir`` from the run.json and state parts in ``state``; returns the bytes."""
    archive = _joined_parts(state)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(state / RUN_FILE, run_dir / RUN_FILE)
    if archive:
        with tarfile.open(fileobj=pyio.BytesIO(archive)) as tar:
            tar.extractall(run_dir, filter="data")
    return len(archive)


def _joined_parts(state: Path) -> bytes:
    """The state archive that :func:`pack` split into parts, joined again."""
    parts = sorted(state.glob(f"{STATE_PREFIX}*"), key=lambda p: int(p.suffix[1:]))
    return b"".join(p.read_bytes() for p in parts)


def _unpack_data(data_dir: Path, into: Path) -> Path:
    """Extract the compressed IDX files of ``data_dir`` (:func:`pack_data`) into a data cache."""
    for archive in sorted(data_dir.glob("*.tar.xz")):
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    return into


def save_cache(cache_dir: Path, out: Path, log_path: Path, since: float) -> Path:
    """JAX's compilation cache as one archive in ``out``, at most a file's size: the entries
    written since ``since`` (a ``time.time()``: this invocation's compiles) first, newest first,
    then the older ones that still fit (hits of this run, or another model's programs)."""
    entries = sorted(
        (p for p in cache_dir.rglob("*") if p.is_file()),
        key=lambda p: (p.stat().st_mtime < since, -p.stat().st_mtime),
    )
    files, size, dropped = {}, 0, 0
    for path in entries:
        cost = TAR_HEADER + -(-path.stat().st_size // TAR_HEADER) * TAR_HEADER
        if size + cost > PART_BYTES - 2 * TAR_RECORD:
            dropped += 1
            continue
        files[str(path.relative_to(cache_dir))] = path.read_bytes()
        size += cost
    _Log(log_path, time.monotonic()).write(
        f"JAX cache: {len(files)} entries sent back ({size >> 20} MiB), {dropped} left out"
    )
    return io.write_bytes(out / CACHE_FILE, _tar(files))


TAR_HEADER, TAR_RECORD = 512, 10240  # a tar member's header and block; the archive's record


def load_cache(state: Path | None, cache_dir: Path) -> int:
    """Fill ``cache_dir`` from the JAX cache archive in ``state``; returns its entries."""
    archive = state / CACHE_FILE if state is not None else None
    if archive is None or not archive.is_file():
        return 0
    with tarfile.open(archive) as tar:
        tar.extractall(cache_dir, filter="data")
        return len(tar.getnames())


class _Log:
    """``campaign.log``: one timestamped line per event, seconds since the invocation began."""

    def __init__(self, path: Path, started: float) -> None:
        self.path, self.started = path, started

    def write(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(f"{time.monotonic() - self.started:7.1f} s  {text}\n")


# ----------------------------------------------------------------------------------------------
# On the host


def pack_data(dataset: str, into: Path) -> Path:
    """The training split of ``dataset`` as raw IDX files in one ``.tar.xz`` (what travels)."""
    data.load(dataset, "train")  # fetched if missing, and verified, before it is sent
    files = {f"{dataset}/{name}": (data.data_dir() / dataset / name).read_bytes()
             for name in data.FILES["train"]}  # fmt: skip
    buffer = pyio.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, pyio.BytesIO(content))
    return io.write_bytes(into / f"{dataset}.tar.xz", buffer.getvalue())


def tree_bytes(root: Path = provenance.ROOT) -> int:
    """Bytes of the working tree a call sends: tracked files and the untracked ones git does
    not ignore (ignored paths travel only when carried)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return sum((root / p).stat().st_size for p in listed.split("\0") if (root / p).is_file())


def check_carry(tree: int, send: int, limit: int = CARRY_LIMIT_BYTES) -> None:
    """Refuse a call whose tree and carried files together exceed what a call takes along."""
    if tree + send > limit:
        raise ConfigError(
            f"the call would send {(tree + send) / 2**20:.1f} MiB (tree {tree / 2**20:.1f} MiB, "
            f"carried {send / 2**20:.1f} MiB), over the {limit >> 20} MiB a call takes along: "
            "prepare again without --inception (score on the host), or remove untracked files"
        )


def prepare(host: Path, results: Path, inception: bool = False) -> dict[str, Any]:
    """Before a slot: the next run, its dataset packed into ``host/send/data``, and the commit
    (the tree must be clean: what runs there is what the commit holds); with ``inception``, the
    float16 Inception weights into ``host/send/inception`` (44 MB more to send: the GPU
    machine then scores the samples it makes), else none there."""
    found = provenance.commit()
    if found.dirty or found.sha == provenance.UNCOMMITTED:
        raise ConfigError(
            f"the tree differs from commit {found.sha[:12]} (or no commit is known); commit "
            "first: the GPU machine runs the tree that is sent, and its results name the commit"
        )
    state = host / "send" / "state"
    planned = next_run(results, state if state.is_dir() else None)
    if planned is None:
        return {"run": None, "commit": found.sha}
    data_dir = host / "send" / "data"
    for old in data_dir.glob("*.tar.xz"):
        if old.name != f"{planned.dataset}.tar.xz":
            old.unlink()
    if not (data_dir / f"{planned.dataset}.tar.xz").exists():
        pack_data(planned.dataset, data_dir)
    weights = host / "send" / INCEPTION_DIR
    if inception:
        try:
            found_weights = metrics.f16_weights_path()
        except (FileNotFoundError, ValueError) as err:  # the message says how to make them
            raise ConfigError(str(err)) from None
        io.write_bytes(weights / metrics.F16_FILE, found_weights.read_bytes())
    elif weights.is_dir():
        shutil.rmtree(weights)
    send = sum(p.stat().st_size for p in (host / "send").rglob("*") if p.is_file())
    tree = tree_bytes()
    check_carry(tree, send)
    return {"run": run_name(planned), "commit": found.sha, "send_bytes": send, "tree_bytes": tree}


def collect(back: Path, host: Path, results: Path) -> dict[str, Any]:
    """After a slot: file the files that came back (``back``) under ``host`` and, when the run is
    complete, write it into ``results/<run>/`` (run.json, logs, samples, grids)."""
    bench = [p for p in back.iterdir() if p.name.startswith(BENCH_PREFIX)]
    for path in bench:  # the slot's benchmarks name their commit: results/, ready to commit
        io.write_bytes(results.parent / path.name, path.read_bytes())
    if not (back / RUN_FILE).is_file():  # a slot that had no time left for the campaign
        return {"run": None, "bench": sorted(p.name for p in bench)}
    record = io.read_json(back / RUN_FILE)
    name = record["campaign"]["run"]
    state, keep = host / "send" / "state", host / "back" / name
    for old in state.glob(f"{STATE_PREFIX}*"):
        old.unlink()
    for path in back.iterdir():
        if path.name.startswith(BENCH_PREFIX):
            continue
        if path.name.startswith("samples_epoch") or path.name == LOG_NAME:
            target = keep / path.name
            text = path.read_bytes()
            if path.name == LOG_NAME and target.exists():
                text = target.read_bytes() + text
            io.write_bytes(target, text)
        else:
            io.write_bytes(state / path.name, path.read_bytes())
    if record.get("status") != "complete":
        return {"run": name, "status": record.get("status"), "published": None}
    dest = _publish(record, state, keep, results / name)
    for path in state.iterdir():
        if path.name != CACHE_FILE:
            path.unlink()
    return {"run": name, "status": "complete", "published": str(dest)}


def _publish(record: dict[str, Any], state: Path, keep: Path, dest: Path) -> Path:
    """A complete run's record, training logs, samples and grids into ``dest``."""
    from qhd_lib.experiments.samples import save_grid

    with tarfile.open(fileobj=pyio.BytesIO(_joined_parts(state))) as tar:
        logs = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    io.write_bytes(dest / LOG_FILE, logs[f"{TRAIN_DIR}/{LOG_FILE}"])
    if f"{SOURCE_DIR}/{LOG_FILE}" in logs:
        io.write_bytes(dest / SOURCE_LOG, logs[f"{SOURCE_DIR}/{LOG_FILE}"])
    if (keep / LOG_NAME).is_file():
        io.write_bytes(dest / LOG_NAME, (keep / LOG_NAME).read_bytes())
    for entry in record["evaluations"]:
        images = io.load_images(keep / entry["samples_file"])
        io.write_bytes(dest / entry["samples_file"], (keep / entry["samples_file"]).read_bytes())
        title = f"{record['config']['model']['name']}, {record['config']['data']['dataset']}"
        png = save_grid(
            dest / entry["samples_file"].replace(".npz", ".png"),
            images,
            f"{title}, epoch {entry['epoch']:g}",
        )
        entry["grid_png"] = png.name
        entry.pop("grid_skipped", None)
        if entry.get("metrics") is None:
            entry["metrics_skipped"] = METRICS_NOTE
    record["collected"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    io.write_json(dest / RUN_FILE, record)
    return dest


def device_command(commit: str, deadline_s: float, command: str = "run") -> str:
    """The command the GPU machine runs (in the root of the tree that was sent): ``run`` (the
    campaign) or ``slot`` (the benchmarks first, then the campaign), with the float16 Inception
    weights when `prepare` put them there."""
    send = HOST_DIR / "send"
    weights = send / INCEPTION_DIR
    extra = f" --inception {weights}" if (weights / metrics.F16_FILE).is_file() else ""
    return json.dumps(
        {
            "command": f"python3 scripts/device_campaign.py {command} --deadline-s "
            f"{deadline_s:g} --commit {commit} --state {send / 'state'} --data {send / 'data'}"
            f"{extra} --out $OUT",
            "carry": [str(send)],
        }
    )
