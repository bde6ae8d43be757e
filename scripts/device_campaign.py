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
last is packed either way. ``--inception DIR`` (what ``prepare --inception`` packs) scores each
evaluation there with the float16 Inception weights; ``--sample-batch auto`` (the default) draws
a new run's samples in as few batches as device memory allows.

``slot`` is what a GPU slot runs first: the GPU forms of ``scripts/bench_models.py`` and
``scripts/bench_circuits.py`` (``--device-form``, each in a child process with its own share of
``--bench-s``), their JSON into ``$OUT``, then ``run`` with the time left::

    python3 scripts/device_campaign.py slot --deadline-s 420 --commit SHA \\
        --state .campaign/send/state --data .campaign/send/data --out $OUT
"""

from __future__ import annotations

import argparse
import functools
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


def _child(run_dir: Path, config: RunConfig, hard_s: float, sample_batch: str | None) -> None:
    """Make the run in a child process (``work``), killed ``hard_s`` from now if still going."""
    argv = [sys.executable, __file__, "work", str(run_dir), json.dumps(config.to_dict())]
    argv += ["--sample-batch", sample_batch] if sample_batch else []
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
            work=functools.partial(_child, sample_batch=args.sample_batch),
            state=args.state,
            data_dir=args.data,
            results=args.results,
            protocol=args.protocol,
            name=args.run,
            scratch=Path(scratch),
            inception=args.inception,
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

    config = campaign.sampling_batch(
        config_from_dict(json.loads(args.config)), args.run_dir, args.sample_batch
    )
    record = run_experiment(
        config, args.run_dir, progress=False, command=provenance.python_command()
    )
    print(f"run {record['status']}: {record.get('stopped', '')}", flush=True)
    return 0


BENCH_SHARES = {"bench_models": 0.6, "bench_circuits": 0.4}  # of --bench-s
CHILD_START_S = 10.0  # a benchmark's imports and device start before its own deadline counts
MIN_CAMPAIGN_S = 60.0  # below this, a slot leaves the campaign for the next call


def slot(args: argparse.Namespace) -> int:
    """On the GPU machine, first in a slot: the GPU benchmarks (each to its share of
    ``--bench-s``, killed past it), then ``run`` with what is left of ``--deadline-s``."""
    started = time.monotonic()
    if args.commit:
        os.environ[provenance.COMMIT_ENV] = args.commit
    provenance.commit()  # a malformed --commit fails here, before any work
    bench_s = min(args.bench_s, 0.5 * args.deadline_s)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}  # "": any
    done = {}
    for name, share in BENCH_SHARES.items():
        out = args.out / f"{campaign.BENCH_PREFIX}{name.removeprefix('bench_')}_gpu.json"
        budget = share * bench_s
        argv = [
            sys.executable,
            str(ROOT / "scripts" / f"{name}.py"),
            "--device-form",
            "--deadline-s",
            f"{max(budget - CHILD_START_S, 1.0):.0f}",
            "--out",
            str(out),
        ]
        argv += ["--tiny"] if args.tiny else []  # fmt: skip
        t0 = time.monotonic()
        try:
            code = subprocess.run(argv, env=env, timeout=budget, check=False).returncode
        except subprocess.TimeoutExpired:
            code = "killed at its share of --bench-s"
            for torn in args.out.glob(f".{out.name}.*.tmp"):  # a write the kill cut short
                torn.unlink()
        done[name] = {"exit": code, "wall_s": round(time.monotonic() - t0, 1)}
        print(json.dumps({name: done[name]}), flush=True)
    left = args.deadline_s - (time.monotonic() - started)
    if left < MIN_CAMPAIGN_S:
        print(json.dumps({"campaign": f"skipped: {left:.0f} s left, under {MIN_CAMPAIGN_S:g}"}))
        return 0
    args.deadline_s = left
    return run(args)


def prepare(args: argparse.Namespace) -> int:
    """On the host: the next run, its dataset packed to send, the device command."""
    found = campaign.prepare(campaign.HOST_DIR, args.results, inception=args.inception)
    print(json.dumps(found))
    if found["run"] is not None:
        command = "slot" if args.slot else "run"
        print(campaign.device_command(found["commit"], args.deadline_s, command))
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
    s = sub.add_parser("slot", help="on the GPU machine, first in a slot: benchmarks, then run")
    for q in (r, s):
        q.add_argument("--deadline-s", type=float, required=True, help="seconds this may take")
        q.add_argument("--commit", help="the host's commit of the tree that was sent")
        q.add_argument("--out", type=Path, required=True, help="where the files to send back go")
        q.add_argument("--state", type=Path, help="the files the last invocation sent back")
        q.add_argument("--data", type=Path, help="folder of compressed training data (prepare)")
        q.add_argument("--results", type=Path, default=RESULTS, help="finished runs (paper)")
        q.add_argument("--protocol", default="paper", help="another protocol rehearses the plan")
        q.add_argument("--run", help="this run of the plan instead of the next missing one")
        q.add_argument("--inception", type=Path, help="folder of the float16 Inception weights")
        q.add_argument(
            "--sample-batch",
            default="auto",
            help="images sampled at once in a new run: a number, or auto (device memory)",
        )
    s.add_argument("--bench-s", type=float, default=180.0, help="seconds for the benchmarks")
    s.add_argument("--tiny", action="store_true", help="tiny benchmarks (CPU tests)")
    w = sub.add_parser("work", help="(the child process of run)")
    w.add_argument("run_dir", type=Path)
    w.add_argument("config")
    w.add_argument("--sample-batch")
    p = sub.add_parser("prepare", help="on the host: pack the next run's data, print the command")
    p.add_argument("--deadline-s", type=float, default=480.0)
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--inception", action="store_true", help="send the float16 Inception weights")
    p.add_argument("--slot", action="store_true", help="print the slot command (benchmarks first)")
    c = sub.add_parser("collect", help="on the host: file the files the GPU machine sent back")
    c.add_argument("back", type=Path)
    c.add_argument("--results", type=Path, default=RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; errors print one line and exit with the library's codes."""
    args = build_parser().parse_args(argv)
    try:
        commands = {"run": run, "slot": slot, "work": work, "prepare": prepare, "collect": collect}
        return commands[args.command](args)
    except errors.QHDError as err:
        print(f"error: {err}", file=sys.stderr)
        return errors.exit_code(err)


if __name__ == "__main__":
    sys.exit(main())
