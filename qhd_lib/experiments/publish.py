"""Publishing a finished run: its artefacts copied from where it ran into ``results/``.

Long runs keep their in-progress state (checkpoints, EMA snapshots, sample chunks) outside the
repository, so that a run made from a worktree at a tagged commit cannot be disturbed by other
edits and the repository never holds checkpoints. :func:`publish` copies what a reader needs —
``run.json``, the samples (uint8 ``.npz``) and grids of every evaluation, the training log — and
nothing else. Only a complete run made from a clean tree is published.
"""

from __future__ import annotations

from pathlib import Path

from qhd_lib import io
from qhd_lib.errors import ProvenanceError, RunStateError
from qhd_lib.experiments.records import RUN_FILE, SOURCE_DIR, TRAIN_DIR, read_run
from qhd_lib.train import LOG_FILE

SOURCE_LOG = "transfer_source_log.jsonl"


def artefacts(run_dir: str | Path) -> dict[str, Path]:
    """The files of a finished run worth keeping, by the name they get in ``results/``."""
    run_dir = Path(run_dir)
    record = read_run(run_dir)
    if record is None or record.get("status") != "complete":
        raise RunStateError(
            f"{run_dir} holds no finished run ({RUN_FILE} missing or status not 'complete'); "
            "finish it by rerunning its `run` command first"
        )
    files = {RUN_FILE: run_dir / RUN_FILE, LOG_FILE: run_dir / TRAIN_DIR / LOG_FILE}
    if (run_dir / SOURCE_DIR / LOG_FILE).exists():
        files[SOURCE_LOG] = run_dir / SOURCE_DIR / LOG_FILE
    for entry in record["evaluations"]:
        for key in ("samples_file", "grid_png"):
            files[entry[key]] = run_dir / entry[key]
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise RunStateError(f"{run_dir} lacks {', '.join(missing)}; rerun its `run` command")
    return files


def publish(run_dir: str | Path, dest: str | Path, *, allow_dirty: bool = False) -> list[Path]:
    """Copy a finished run's artefacts (:func:`artefacts`) into ``dest``; returns the files.

    A run whose provenance says its tree was dirty is refused unless ``allow_dirty``: a number
    in ``results/`` must name a commit that really produced it.
    """
    record = read_run(run_dir)
    if record is not None and record["provenance"]["dirty"] and not allow_dirty:
        raise ProvenanceError(
            f"{run_dir} was made from a tree with uncommitted changes; rerun it from a clean "
            "checkout (a worktree at a tagged commit), or pass allow_dirty"
        )
    files = artefacts(run_dir)
    dest = Path(dest)
    written = []
    for name, source in sorted(files.items()):
        written.append(io.write_bytes(dest / name, source.read_bytes()))
    return written
