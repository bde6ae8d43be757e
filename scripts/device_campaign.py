"""The paper-protocol campaign on a GPU lent in slots (issue 19): `qhd_lib.experiments.campaign`.

On the host, from a clean checkout (the results name its commit)::

    python scripts/device_campaign.py prepare            # next run, its data packed, the command
    # run the printed command on the GPU machine, carrying .campaign/send; then, with the files
    # that came back in BACK:
    python scripts/device_campaign.py collect BACK       # files them; a complete run lands in
                                                         # results/paper/<run>/, ready to commit

On the GPU machine (no .git, no network; nothing needed beyond its JAX, flax and optax)::

    python3 scripts/device_campaign.py run --deadline-s 480 --commit SHA \\
        --state .campaign/send/state --data .campaign/send/data --out $OUT

``run`` never passes ``--deadline-s`` (counted from its start): the work runs in a child process
with its own, earlier deadline, and is killed if a first compile overruns it; the state it saved
last is packed either way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qhd_lib import errors, provenance  # noqa: E402
from qhd_lib.experiments import campaign  # noqa: E402
from qhd_lib.experiments.config import RunConfig  # noqa: E402
from qhd_lib.experiments.overrides import config_from_dict  # noqa: E402

RESULTS = ROOT / "results" / "paper"


def _child(run_dir: Path, config: RunConfig, hard_s: float) -> None:
    """Make the run in a child process (``work``), killed ``hard_s`` from now if still going."""
    argv = [sys.executable, __file__, "work", str(run_dir), json.dumps(config.to_dict())]
    try:
        subprocess.run(argv, timeout=max(hard_s, 1.0), check=False)
    except subprocess.TimeoutExpired:
        print(f"the work passed its hard deadline ({hard_s:.0f} s) and was stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    """On the GPU machine: one invocation of the campaign (see the module doc)."""
    started, wall_clock = time.monotonic(), time.time()
    if args.commit:
        os.environ[provenance.COMMIT_ENV] = args.commit
    provenance.commit()  # a malformed --commit fails here, before any work
    with tempfile.TemporaryDirectory(prefix="qhd-campaign-") as scratch:
        cache = Path(scratch) / "jax_cache"
        entries = campaign.load_cache(args.state, cache)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        print(f"JAX cache: {entries} entries from the last invocation", flush=True)
        record = campaign.device_run(
            args.out,
            deadline_s=args.deadline_s - (time.monotonic() - started),
            work=_child,
            state=args.state,
            data_dir=args.data,
            results=args.results,
            protocol=args.protocol,
            name=args.run,
            scratch=Path(scratch),
        )
        if cache.is_dir():
            campaign.save_cache(cache, args.out, args.out / campaign.LOG_NAME, wall_clock)
    summary = {"run": None} if record is None else record["campaign"] | {
        "status": record.get("status"), "stopped": record.get("stopped")}  # fmt: skip
    print(json.dumps(summary | {"wall_s": round(time.monotonic() - started, 1)}))
    return 0


def work(args: argparse.Namespace) -> int:
    """The child of ``run``: the experiment runner on one run directory, to its deadline."""
    from qhd_lib.experiments import run as run_experiment

    config = config_from_dict(json.loads(args.config))
    record = run_experiment(
        config, args.run_dir, progress=False, command=provenance.python_command()
    )
    print(f"run {record['status']}: {record.get('stopped', '')}", flush=True)
    return 0


def prepare(args: argparse.Namespace) -> int:
    """On the host: the next run, its dataset packed to send, the device command."""
    found = campaign.prepare(campaign.HOST_DIR, args.results)
    print(json.dumps(found))
    if found["run"] is not None:
        print(campaign.device_command(found["commit"], args.deadline_s))
    return 0


def collect(args: argparse.Namespace) -> int:
    """On the host: file what the GPU machine sent back."""
    print(json.dumps(campaign.collect(args.back, campaign.HOST_DIR, args.results)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``prepare`` and ``collect`` on the host, ``run`` on the GPU machine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="on the GPU machine: continue or start the next run")
    r.add_argument("--deadline-s", type=float, required=True, help="seconds this may take")
    r.add_argument("--commit", help="the host's commit of the tree that was sent")
    r.add_argument("--out", type=Path, required=True, help="where the files to send back go")
    r.add_argument("--state", type=Path, help="the files the last invocation sent back")
    r.add_argument("--data", type=Path, help="folder of compressed training data (prepare)")
    r.add_argument("--results", type=Path, default=RESULTS, help="finished runs (default: paper)")
    r.add_argument("--protocol", default="paper", help="another protocol rehearses the plan")
    r.add_argument("--run", help="this run of the plan instead of the next missing one")
    w = sub.add_parser("work", help="(the child process of run)")
    w.add_argument("run_dir", type=Path)
    w.add_argument("config")
    p = sub.add_parser("prepare", help="on the host: pack the next run's data, print the command")
    p.add_argument("--deadline-s", type=float, default=480.0)
    p.add_argument("--results", type=Path, default=RESULTS)
    c = sub.add_parser("collect", help="on the host: file the files the GPU machine sent back")
    c.add_argument("back", type=Path)
    c.add_argument("--results", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one line and exit with the library's codes."""
    args = build_parser().parse_args(argv)
    try:
        return {"run": run, "work": work, "prepare": prepare, "collect": collect}[args.command](
            args
        )
    except errors.QHDError as err:
        print(f"error: {err}", file=sys.stderr)
        return errors.exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
