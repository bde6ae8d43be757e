"""Paired experiments: comparisons fixed before the first run, tested seed by seed.

Two CPU-sized experiments test the paper's claims: ``epoch1`` (after one epoch the hybrids beat the
classical U-Net, sec. 4.2–4.3) and ``transfer`` (classical → hybrid transfer learning beats
training the classical network on, sec. 4.4). Each is an `Experiment`: its arms (a model and how it
is trained), the seeds (fixed; none added after looking), the epoch it is measured at, and its
`PairedComparison` list — what is compared, in which direction the paper's story predicts the
difference, and the role (primary, control, exploratory). :func:`analyse` reads whatever runs of an
experiment exist under ``results/``, checks each was made with the experiment's settings, and tests
every comparison on the seeds both sides have (`qhd_lib.experiments.statistics.paired`); FID is
primary, KID secondary. Missing runs are listed, never guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qhd_lib import io, paper, provenance
from qhd_lib.errors import ConfigError, RunStateError
from qhd_lib.experiments.config import RunConfig
from qhd_lib.experiments.overrides import config_from_dict
from qhd_lib.experiments.plans import (
    EPOCH1_MODELS,
    EPOCH1_SEEDS,
    TRANSFER_ARMS,
    epoch1_config,
    epoch1_dir,
    transfer_config,
    transfer_dir,
)
from qhd_lib.experiments.protocols import deviations
from qhd_lib.experiments.records import commit_label, read_run
from qhd_lib.experiments.statistics import paired

METRICS = {"fid": "fid", "kid": "kid_mean"}  # name in the comparison -> key in run.json
FLOOR_DIR = "results/real_vs_real"
PaperKey = tuple[str, int]  # (column of the paper, epoch) whose printed value an arm is set beside


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``arm − baseline`` on ``dataset``, paired by seed.

    ``expected`` is the sign of the difference the paper's story predicts (−1: the arm's FID is
    lower); a verdict is "supported" when the interval excludes 0 on that side. ``paper`` names
    the paper's printed values for the arm and the baseline, where it prints both.
    """

    id: str
    dataset: str
    arm: str
    baseline: str
    question: str
    role: str  # "primary", "control" or "exploratory"
    expected: int = -1
    paper: tuple[PaperKey, PaperKey] | None = None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A paired experiment: arms per dataset, where each run lives, the settings it must have."""

    name: str
    arms: dict[str, tuple[str, ...]]  # dataset -> arm names
    titles: dict[str, str]
    seeds: tuple[int, ...]
    epoch: float  # the evaluation epoch compared
    run_dir: Callable[[str, str, int], str]
    config: Callable[[str, str, int], RunConfig]
    comparisons: tuple[PairedComparison, ...]

    def comparison_file(self, dataset: str) -> str:
        """Where ``experiments paired`` writes this experiment's comparison of ``dataset``."""
        return f"results/{self.name}/{dataset}_comparison.json"

    def command(self, dataset: str) -> str:
        """The command that writes :meth:`comparison_file`."""
        return (
            f"python -m qhd_lib.experiments paired {self.name} --dataset {dataset} "
            f"--out {self.comparison_file(dataset)}"
        )


def _epoch1_comparisons() -> tuple[PairedComparison, ...]:
    return (
        PairedComparison(
            "a",
            "mnist",
            "fullhqconv",
            "classical",
            "Does FullHQConv beat the classical U-Net after one epoch on MNIST?",
            "primary",
            paper=(("fullhqconv", 1), ("classical", 1)),
        ),
        PairedComparison(
            "b",
            "fashion_mnist",
            "quanvunet",
            "classical",
            "Does QuanvU-Net beat the classical U-Net after one epoch on Fashion-MNIST?",
            "primary",
            paper=(("quanvunet", 1), ("classical", 1)),
        ),
        PairedComparison(
            "c",
            "mnist",
            "fullhqconv-frozen",
            "fullhqconv",
            "Does training the circuits matter? (frozen at their initial values − trained)",
            "control",
            expected=+1,
        ),
        PairedComparison(
            "d",
            "mnist",
            "fullhqconv-classical",
            "fullhqconv",
            "Is it the circuits or the smaller grouped vertex? (classical layers of the same "
            "size − circuits)",
            "control",
            expected=+1,
        ),
        PairedComparison(
            "e",
            "mnist",
            "7hqconv",
            "classical",
            "Does 7HQConv beat the classical U-Net after one epoch on MNIST?",
            "exploratory",
        ),
    )


def _transfer_comparisons() -> tuple[PairedComparison, ...]:
    return (
        PairedComparison(
            "t1",
            "mnist",
            "1fqconv",
            "continue",
            "Does classical → 1FQConv transfer beat one more epoch of the classical U-Net?",
            "primary",
            paper=(("transfer", 20), ("classical", 20)),
        ),
        PairedComparison(
            "t2",
            "mnist",
            "1fqconv",
            "classical-fresh-vertex",
            "Is it the circuits, or the fresh vertex? (1FQConv − classical → classical)",
            "control",
        ),
        PairedComparison(
            "t3",
            "mnist",
            "classical-fresh-vertex",
            "continue",
            "Does re-initialising the vertex alone help? (classical → classical − continue)",
            "control",
        ),
        PairedComparison(
            "t4",
            "mnist",
            "7hqconv",
            "1fqconv",
            "Does the paper's best end-to-end hybrid transfer better than its transfer target?",
            "exploratory",
        ),
    )


EPOCH1 = Experiment(
    "epoch1",
    EPOCH1_MODELS,
    {
        "classical": "Classical",
        "fullhqconv": "FullHQConv",
        "fullhqconv-frozen": "FullHQConv, circuits frozen",
        "fullhqconv-classical": "FullHQConv, classical vertex",
        "7hqconv": "7HQConv",
        "quanvunet": "QuanvU-Net",
    },
    EPOCH1_SEEDS,
    1.0,
    epoch1_dir,
    epoch1_config,
    _epoch1_comparisons(),
)
TRANSFER = Experiment(
    "transfer",
    {"mnist": tuple(TRANSFER_ARMS)},
    {
        "continue": "Classical, one more epoch",
        "classical-fresh-vertex": "Classical → classical (fresh vertex)",
        "1fqconv": "Classical → 1FQConv",
        "7hqconv": "Classical → 7HQConv",
    },
    EPOCH1_SEEDS,
    11.0,
    transfer_dir,
    transfer_config,
    _transfer_comparisons(),
)
EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (EPOCH1, TRANSFER)}


def experiment(name: str) -> Experiment:
    """The paired experiment ``name`` (`EXPERIMENTS`)."""
    if name not in EXPERIMENTS:
        raise ConfigError(f"unknown experiment {name!r}; use one of {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without what may differ between runs of one experiment: how long it
    trained past the compared epoch and where else it was evaluated (the pretrained runs go on
    to epoch 10)."""
    tree = config_from_dict(config).identity()
    tree["train"] = {k: v for k, v in tree["train"].items() if k != "epochs"}
    tree["evaluation"] = {k: v for k, v in tree["evaluation"].items() if k != "epochs"}
    return tree


def measured(
    exp: Experiment, root: Path, dataset: str, arm: str, seed: int
) -> dict[str, Any] | None:
    """One run's measurement at the experiment's epoch (None when the run is not there or is
    unfinished). A run made with other settings is an error, not a data point."""
    run_dir = root / exp.run_dir(dataset, arm, seed)
    record = read_run(run_dir)
    if record is None or record.get("status") != "complete":
        return None
    if _comparable(record["config"]) != _comparable(exp.config(dataset, arm, seed).to_dict()):
        raise RunStateError(
            f"{run_dir} was not made with the {exp.name} experiment's settings; remake it with "
            f"`python -m qhd_lib.experiments plan {exp.name}`'s command for it"
        )
    entry = next(e for e in record["evaluations"] if float(e["epoch"]) == exp.epoch)
    return {
        **{name: entry["metrics"][key] for name, key in METRICS.items()},
        "run_dir": str(run_dir.relative_to(root)),
        "samples_file": str((run_dir / entry["samples_file"]).relative_to(root)),
        "commit": commit_label(record),
        "train_wall_s": record["train"]["wall_s"],
        "params": record["params"],
        "trainable_params": record.get("trainable_params", record["params"]),
    }


def paper_value(dataset: str, column: str, epoch: int, metric: str) -> float | None:
    """A value the paper prints: Tables 1–2 at epoch 20, the text and figures at 1 and 10."""
    entry = (
        paper.TABLES[dataset].get(column)
        if epoch == 20
        else paper.IN_TEXT.get((dataset, column, epoch))
    )
    value = (entry or {}).get(metric)
    return None if value is None else paper.mean_of(value)


def paper_difference(comparison: PairedComparison) -> dict[str, float] | None:
    """The paper's single-run (seed 42) difference, for the metrics it prints for both sides."""
    if comparison.paper is None:
        return None
    (arm, arm_epoch), (base, base_epoch) = comparison.paper
    out: dict[str, float] = {}
    for metric in METRICS:
        ours = paper_value(comparison.dataset, arm, arm_epoch, metric)
        theirs = paper_value(comparison.dataset, base, base_epoch, metric)
        if ours is not None and theirs is not None:
            out.update({metric: ours - theirs, f"{metric}_arm": ours, f"{metric}_baseline": theirs})
    return out or None


def floor(root: Path, dataset: str, n: int) -> dict[str, Any] | None:
    """The real-vs-real FID/KID at ``n`` images per set (``scripts/real_vs_real.py``)."""
    name = f"{FLOOR_DIR}/{dataset}_n{n}.json"
    if not (root / name).is_file():
        return None
    record = io.read_json(root / name)
    return {"fid": record["fid"], "kid": record["kid_mean"], "file": name}


def analyse(exp: Experiment, dataset: str, root: str | Path = provenance.ROOT) -> dict[str, Any]:
    """Every run of ``exp`` on ``dataset`` that exists, its comparisons tested on the seeds both
    sides have, and the runs still missing."""
    root = Path(root)
    if dataset not in exp.arms:
        raise ConfigError(f"{exp.name} has no runs on {dataset!r}; use {', '.join(exp.arms)}")
    runs: dict[str, dict[str, Any]] = {}
    missing = []
    for arm in exp.arms[dataset]:
        for seed in exp.seeds:
            value = measured(exp, root, dataset, arm, seed)
            if value is None:
                missing.append(exp.run_dir(dataset, arm, seed))
            else:
                runs.setdefault(arm, {})[str(seed)] = value
    comparisons = []
    for c in exp.comparisons:
        if c.dataset != dataset:
            continue
        ours, base = runs.get(c.arm, {}), runs.get(c.baseline, {})
        tests = {
            name: paired(
                {int(s): v[name] for s, v in ours.items()},
                {int(s): v[name] for s, v in base.items()},
                lower_is_better=c.expected < 0,
            )
            for name in METRICS
        }
        comparisons.append(
            {**dataclasses.asdict(c), "paper_difference": paper_difference(c), **tests}
        )
    config = exp.config(dataset, exp.arms[dataset][0], exp.seeds[0])
    ev = config.evaluation
    return {
        "experiment": exp.name,
        "dataset": dataset,
        "epoch": exp.epoch,
        "seeds": list(exp.seeds),
        "protocol": {
            "deviations": deviations(config),
            "samples": ev.samples,
            "n_real": ev.n_real,
            "real_split": ev.real_split,
            "sampling": f"{config.sampling.sampler.upper()}, {config.sampling.steps} steps, "
            "EMA parameters",
        },
        "floor": floor(root, dataset, ev.n_real),
        "runs": runs,
        "missing": missing,
        "comparisons": comparisons,
        "paper_source": paper.SOURCE,
    }


def current(
    exp: Experiment, dataset: str, root: str | Path = provenance.ROOT
) -> tuple[dict[str, Any], str]:
    """The comparison of ``dataset`` and a note on where it came from: the committed file when it
    matches the runs that exist, else the analysis of those runs, saying the file is missing or
    stale (and the command that rewrites it)."""
    root = Path(root)
    live = analyse(exp, dataset, root)
    name = exp.comparison_file(dataset)
    if not (root / name).is_file():
        return live, f"`{name}` does not exist yet; `{exp.command(dataset)}` writes it."
    saved = io.read_json(root / name)
    if all(
        saved.get(k) == io.as_json(live[k]) for k in ("runs", "missing", "comparisons", "floor")
    ):
        made = saved["provenance"]
        return saved, f"`{name}`, commit `{made['git_commit'][:12]}`, {made['date']}."
    return live, f"`{name}` is older than the runs; `{exp.command(dataset)}` rewrites it."


def _interval(test: dict[str, Any], digits: int) -> str:
    if test["n"] == 0:
        return "no pairs yet"
    if test["interval"] is None:
        return f"{test['mean_difference']:+.{digits}f} (n = {test['n']}, no interval)"
    lo, hi = test["interval"]
    return f"{test['mean_difference']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def claim_rows(exp: Experiment, result: dict[str, Any]) -> list[str]:
    """The comparisons of one dataset as Markdown table rows (header first): the paper's
    single-run difference beside our paired mean, 95 % interval, p-value, detectable effect
    and verdict, FID then KID."""
    rows = [
        "| | comparison | role | paper (seed 42) | ours: FID difference [95 % CI] | p | "
        "detectable (80 %) | verdict (FID) | KID difference [95 % CI] | verdict (KID) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        fid, kid, published = c["fid"], c["kid"], c["paper_difference"]
        paper_text = "–" if not published else f"FID {published['fid']:+.2f}"
        if published and "kid" in published:
            paper_text += f", KID {published['kid']:+.4f}"
        p = "–" if fid.get("p_value") is None else f"{fid['p_value']:.3f}"
        effect = "–" if fid.get("detectable_effect") is None else f"{fid['detectable_effect']:.1f}"
        title = f"{exp.titles[c['arm']]} − {exp.titles[c['baseline']]}"
        rows.append(
            f"| ({c['id']}) | {title} | {c['role']} | {paper_text} | {_interval(fid, 1)} | {p} | "
            f"{effect} | {fid['verdict']} | {_interval(kid, 4)} | {kid['verdict']} |"
        )
    return rows
