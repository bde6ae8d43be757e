"""``python -m qhd_lib.experiments``: the command line, and the only place in the runner that exits.

Flags become the dotted changes of `config.override` (`FLAGS`), so a command and a chapter that
name the same settings make the same run. Library errors (`qhd_lib.errors.QHDError`) print as one
``error: ...`` line and return their exit code; argparse's own usage errors exit with 2.
Most of its ~360 lines are flag declarations, one flag to a statement, which read best together.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qhd_lib import data, io, provenance, train
from qhd_lib.errors import QHDError, exit_code
from qhd_lib.experiments.compare import compare_runs
from qhd_lib.experiments.config import SAMPLERS, VARIANTS, VERTEX_SCOPES
from qhd_lib.experiments.paired import EXPERIMENTS, analyse, experiment
from qhd_lib.experiments.plans import PLANS, PlannedRun, plan
from qhd_lib.experiments.protocols import PROTOCOLS, configure
from qhd_lib.experiments.publish import publish
from qhd_lib.experiments.robustness import StudyConfig, study
from qhd_lib.experiments.runner import run
from qhd_lib.experiments.samples import sample_from_run
from qhd_lib.experiments.scoring import evaluate_samples
from qhd_lib.models import CONTROL_NAMES, MODEL_NAMES

PROG = "python -m qhd_lib.experiments"
# `run` flag (argparse dest) -> the config path it sets.
FLAGS: dict[str, str] = {
    "dataset": "data.dataset",
    "model": "model.name",
    "seed": "seed",
    "train_images": "data.train_images",
    "timesteps": "diffusion.timesteps",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "checkpoint_every": "train.checkpoint_every",
    "eval_epochs": "evaluation.epochs",
    "samples": "evaluation.samples",
    "n_real": "evaluation.n_real",
    "real_split": "evaluation.real_split",
    "sampler": "sampling.sampler",
    "sampling_steps": "sampling.steps",
    "sample_batch": "sampling.batch",
    "sample_chunk": "sampling.chunk",
    "transfer_from": "train.transfer.source",
    "transfer_epochs": "train.transfer.source_epochs",
    "transfer_fresh": "train.transfer.fresh",
    "transfer_file": "train.transfer.source_file",
    "transfer_seed": "train.transfer.seed",
}


def _number(kind: Callable[[str], Any], minimum: float, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind`` of the text, refused below ``minimum`` (never replaced)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _number(int, 1, "a positive integer")
_positive_float = _number(float, 1e-300, "a positive number")
_count = _number(int, 0, "an integer of 0 or more")


def _epoch_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated epochs like 1,10,20, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"give positive epochs, e.g. 1,10,20; got {text!r}")
    return values


def _setting(text: str) -> tuple[str, str]:
    path, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE like train.epochs=2, got {text!r}")
    return path.strip(), value.strip()


def _add_run(sub: Any) -> None:
    r = sub.add_parser(
        "run", help="train (or resume), sample with EMA parameters, measure, write run.json"
    )
    r.add_argument("--dataset", required=True, choices=data.DATASETS)
    r.add_argument("--model", required=True, choices=(*MODEL_NAMES, *CONTROL_NAMES, *VARIANTS))
    r.add_argument(
        "--out", required=True, type=Path, help="run directory (rerun the command to resume)"
    )
    r.add_argument(
        "--protocol",
        "--scale",
        dest="protocol",
        choices=tuple(PROTOCOLS),
        help="smoke (seconds, fewer diffusion steps), demo (minutes), epoch1 (the epoch-1 "
        "experiment), paper; "
        "default: $QHD_SCALE, else demo",
    )
    r.add_argument("--epochs", type=_positive_float, help="training epochs (paper: 20)")
    r.add_argument(
        "--eval-epochs", type=_epoch_list, help="epochs to sample and measure at, e.g. 1,10,20"
    )
    r.add_argument("--seed", type=_count)
    r.add_argument(
        "--samples", type=_positive_int, help="generated images per evaluation (paper: 7000)"
    )
    r.add_argument("--timesteps", type=_positive_int, help="diffusion steps T (paper: 1000)")
    r.add_argument("--train-images", type=_count, help="use the first N training images (0 = all)")
    r.add_argument("--batch-size", type=_positive_int, help="batch size (paper: 128)")
    r.add_argument(
        "--n-real", type=_positive_int, help="real images the metrics compare against (paper: 7000)"
    )
    r.add_argument("--real-split", choices=data.SPLITS, help="split of the real images")
    r.add_argument("--sample-batch", type=_positive_int, help="images sampled at once")
    r.add_argument(
        "--sample-chunk",
        type=_positive_int,
        help="save samples every N images (a multiple of --sample-batch) to resume",
    )
    r.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="ddpm: ancestral, all T steps (the paper); ddim: --sampling-steps",
    )
    r.add_argument("--sampling-steps", type=_positive_int, help="DDIM steps (default 50)")
    r.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints")
    r.add_argument("--released-code", action="store_true", help="the released code's model variant")
    r.add_argument("--no-metrics", action="store_true", help="sample but do not compute metrics")
    r.add_argument(
        "--transfer-from",
        choices=MODEL_NAMES,
        help="transfer learning: train this model first, then copy all but the vertex",
    )
    r.add_argument(
        "--transfer-epochs",
        type=_positive_float,
        help="epochs of the source model (paper: 19 MNIST, 18 Fashion-MNIST)",
    )
    r.add_argument(
        "--transfer-fresh",
        choices=tuple(VERTEX_SCOPES),
        help="what counts as the vertex that is re-initialised (default: resblocks)",
    )
    r.add_argument("--transfer-file", help="the source's parameters, instead of training it")
    r.add_argument("--transfer-seed", type=_count, help="seed of the second phase")
    r.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other setting, e.g. --set ema.max_decay=0.999",
    )
    r.add_argument(
        "--allow-dirty",
        action="store_true",
        help="write into results/ from a tree with uncommitted changes (recorded)",
    )
    r.add_argument(
        "--commit",
        help=f"the commit of this tree where there is no .git (sets ${provenance.COMMIT_ENV})",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m qhd_lib.experiments`` command line."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Train, sample and measure the paper's models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)

    s = sub.add_parser("sample", help="draw samples from a run's EMA parameters into a .npz")
    s.add_argument("--run", required=True, type=Path, help="run directory written by `run`")
    s.add_argument("--out", required=True, type=Path, help="output .npz")
    s.add_argument(
        "--epoch", type=_positive_float, help="evaluation epoch to sample from (default: the last)"
    )
    s.add_argument("--samples", type=_positive_int, help="number of images (default: the run's)")
    s.add_argument("--seed", type=_count, help="sampling seed (default: the run's)")
    s.add_argument("--batch", type=_positive_int, help="images sampled at once")
    s.add_argument("--quiet", action="store_true")

    e = sub.add_parser("evaluate", help="FID/KID/IS of a .npz of samples")
    e.add_argument("--samples", required=True, type=Path)
    e.add_argument("--dataset", required=True, choices=data.DATASETS)
    e.add_argument("--n-real", type=_positive_int, default=7_000)
    e.add_argument("--real-split", choices=data.SPLITS, default="train")
    e.add_argument("--seed", type=_count, default=42)
    e.add_argument("--out", type=Path, help="metrics JSON (default: <samples>_metrics.json)")
    e.add_argument("--quiet", action="store_true")

    c = sub.add_parser("compare", help="pool runs over seeds, compare with classical and the paper")
    c.add_argument("runs", nargs="+", type=Path, help="run directories written by `run`")
    c.add_argument("--out", required=True, type=Path, help="comparison JSON")

    u = sub.add_parser(
        "publish", help="copy a finished run's artefacts (no checkpoints) into results/"
    )
    u.add_argument("--run", required=True, type=Path, help="run directory written by `run`")
    u.add_argument("--to", required=True, type=Path, help="destination, e.g. results/epoch1/x")
    u.add_argument(
        "--allow-dirty", action="store_true", help="publish a run made from a dirty tree"
    )

    a = sub.add_parser(
        "paired", help="a paired experiment's pre-registered comparisons of one dataset"
    )
    a.add_argument("experiment", choices=tuple(EXPERIMENTS))
    a.add_argument("--dataset", required=True, choices=data.DATASETS)
    a.add_argument("--out", required=True, type=Path, help="comparison JSON")
    a.add_argument("--allow-dirty", action="store_true", help="write from a dirty tree (recorded)")

    r = sub.add_parser(
        "robustness", help="a pretrained hybrid under finite shots and noise: loss, FID/KID"
    )
    r.add_argument("--dataset", required=True, choices=data.DATASETS)
    r.add_argument("--model", required=True, choices=MODEL_NAMES)
    r.add_argument("--out", required=True, type=Path, help="folder for study.json and samples")
    r.add_argument("--work-dir", type=Path, help="resumable state (default: the user cache)")
    r.add_argument("--n-test", type=_positive_int, default=500, help="test images for the loss")
    r.add_argument(
        "--n-test-noisy",
        type=_positive_int,
        help="of those, the first N for the noise settings (default: all; exact density "
        "matrices, slow on a CPU)",
    )
    r.add_argument("--n-samples", type=_positive_int, default=500, help="samples per setting")
    r.add_argument("--no-metrics", action="store_true", help="draw samples, skip FID/KID")
    r.add_argument("--allow-dirty", action="store_true", help="write from a dirty tree (recorded)")
    r.add_argument("--quiet", action="store_true")

    p = sub.add_parser("plan", help="print a plan's runs and comparisons as commands, in order")
    p.add_argument("name", choices=tuple(PLANS))
    p.add_argument("--dataset", choices=data.DATASETS, help="only this dataset's runs")
    return parser


def changes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config changes that ``run``'s flags name (unset flags change nothing)."""
    changes: dict[str, Any] = {
        path: getattr(args, dest) for dest, path in FLAGS.items() if getattr(args, dest) is not None
    }
    if changes.get("data.train_images") == 0:
        changes["data.train_images"] = None
    if args.released_code:
        changes["model.released_code"] = True
    if args.no_metrics:
        changes["evaluation.metrics"] = False
    changes.update(args.set)
    return changes


def run_argv(planned: PlannedRun) -> list[str]:
    """The ``run`` command line of a planned run (flags where there are, ``--set`` elsewhere)."""
    flag_of = {path: "--" + dest.replace("_", "-") for dest, path in FLAGS.items()}
    argv = ["run", "--protocol", planned.protocol]
    for path, value in planned.changes.items():
        if path == "model.released_code" and value is True:
            argv.append("--released-code")
        elif path == "evaluation.metrics" and value is False:
            argv.append("--no-metrics")
        elif path in flag_of:
            argv += [flag_of[path], _text(value)]
        else:
            argv += ["--set", f"{path}={_text(value)}"]
    return [*argv, "--out", planned.out]


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "0" if value is None else str(value)


def _run(args: argparse.Namespace, command: str) -> None:
    config = configure(args.protocol, changes_from_args(args))
    record = run(
        config, args.out, progress=not args.quiet, command=command, allow_dirty=args.allow_dirty
    )
    rows = [
        {
            "epoch": e["epoch"],
            **{
                k: (e["metrics"] or {}).get(m)
                for k, m in (("fid", "fid"), ("kid", "kid_mean"), ("is", "is_mean"))
            },
        }
        for e in record["evaluations"]
    ]
    print(
        json.dumps(
            {
                "model": config.model.name,
                "dataset": config.data.dataset,
                "params": record["params"],
                "evaluations": rows,
            },
            indent=1,
        )
    )


def _sample(args: argparse.Namespace, command: str) -> None:
    info = sample_from_run(
        args.run,
        args.out,
        epoch=args.epoch,
        samples=args.samples,
        seed=args.seed,
        batch=args.batch,
        progress=not args.quiet,
        command=command,
    )
    print(json.dumps({k: info[k] for k in ("samples_file", "epoch", "n_samples")}))


def _evaluate(args: argparse.Namespace, command: str) -> None:
    result = evaluate_samples(
        args.samples,
        args.dataset,
        n_real=args.n_real,
        seed=args.seed,
        real_split=args.real_split,
        out=args.out,
        progress=not args.quiet,
        command=command,
    )
    print(json.dumps(result["metrics"], indent=1))


def _compare(args: argparse.Namespace, command: str) -> None:
    result = compare_runs(args.runs)
    result["command"] = command
    io.write_json(args.out, result)
    print(
        json.dumps(
            [
                {
                    "column": g["column"],
                    "dataset": g["dataset"],
                    "seeds": g["seeds"],
                    "paper_protocol": g["paper_protocol"],
                }
                for g in result["groups"]
            ]
        )
    )


def _publish(args: argparse.Namespace, command: str) -> None:
    for path in publish(args.run, args.to, allow_dirty=args.allow_dirty):
        print(path)


def _paired(args: argparse.Namespace, command: str) -> None:
    provenance.check_clean_for(args.out, args.allow_dirty)
    result = analyse(experiment(args.experiment), args.dataset)
    result["provenance"] = provenance.record(command, allow_dirty=args.allow_dirty)
    io.write_json(args.out, result)
    for c in result["comparisons"]:
        fid = c["fid"]
        print(f"({c['id']}) {c['arm']} − {c['baseline']}: n = {fid['n']}, {fid['verdict']}")
    print(f"missing runs: {len(result['missing'])}")


def _robustness(args: argparse.Namespace, command: str) -> None:
    config = StudyConfig(
        dataset=args.dataset,
        model=args.model,
        n_test=args.n_test,
        n_test_noisy=args.n_test_noisy,
        n_samples=args.n_samples,
        metrics=not args.no_metrics,
    )
    result = study(
        config,
        args.out,
        args.work_dir,
        progress=not args.quiet,
        command=command,
        allow_dirty=args.allow_dirty,
    )
    for row in result["settings"]:
        loss = row["loss"]["p2"]
        metrics = (row.get("samples") or {}).get("metrics") or {}
        print(
            f"{row['label']}: loss {loss['mean']:.5f} (Δ {loss['minus_exact']['mean']:+.5f})"
            + (f", FID {metrics['fid']:.1f}" if metrics else "")
        )


def _plan(args: argparse.Namespace, command: str) -> None:
    found = plan(args.name, args.dataset)
    for planned in found.runs:
        planned.config()  # every planned run must resolve before any starts
        print(shlex.join(run_argv(planned)))
    for comparison in found.comparisons:
        print(shlex.join(["compare", *comparison.runs, "--out", comparison.out]))
    for argv in found.analyses:
        print(shlex.join(argv))


COMMANDS: dict[str, Callable[[argparse.Namespace, str], None]] = {
    "run": _run,
    "sample": _sample,
    "evaluate": _evaluate,
    "compare": _compare,
    "publish": _publish,
    "paired": _paired,
    "robustness": _robustness,
    "plan": _plan,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m qhd_lib.experiments``; returns the exit code."""
    args = build_parser().parse_args(argv)
    command = f"{PROG} " + shlex.join(list(sys.argv[1:] if argv is None else argv))
    before = os.environ.get(provenance.COMMIT_ENV)
    if getattr(args, "commit", None):  # for this command only, not for the calling process
        os.environ[provenance.COMMIT_ENV] = args.commit
    try:
        COMMANDS[args.command](args, command)
    except QHDError as err:
        print(f"error: {err}", file=sys.stderr)
        return exit_code(err)
    except train.TrainingDiverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if before is None:
            os.environ.pop(provenance.COMMIT_ENV, None)
        else:
            os.environ[provenance.COMMIT_ENV] = before
    return 0
