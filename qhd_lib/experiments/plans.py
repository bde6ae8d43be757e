"""Plans: the runs a protocol needs, in order, and the comparisons that pool them.

``python -m qhd_lib.experiments plan paper`` prints them as commands (the scripts in ``scripts/``
run what it prints); chapter 8 reads the same list to say which runs exist.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from qhd_lib import paper
from qhd_lib.errors import ConfigError
from qhd_lib.experiments.config import RunConfig
from qhd_lib.experiments.protocols import configure


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: its directory (relative to the repository), what it is, its config."""

    out: str
    what: str
    protocol: str
    changes: Mapping[str, Any]

    @property
    def dataset(self) -> str:
        return self.changes["data.dataset"]

    def config(self) -> RunConfig:
        """The resolved configuration (validated)."""
        return configure(self.protocol, self.changes)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``experiments compare`` over ``runs`` (directories), written to ``out``."""

    out: str
    runs: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    """The runs of a protocol, in the order they should be made, then their comparisons."""

    name: str
    what: str
    runs: tuple[PlannedRun, ...]
    comparisons: tuple[Comparison, ...]
    analyses: tuple[tuple[str, ...], ...] = ()  # further commands (argv) once the runs exist


PAPER_BEST = {"mnist": "7hqconv", "fashion_mnist": "quanvunet"}  # the paper's best hybrid
PAPER_TRANSFER_EPOCHS = {"mnist": 19, "fashion_mnist": 18}  # source epochs of the 20 (sec. 4.4)
HYBRIDS = ("1hqconv", "7hqconv", "fullhqconv", "quanvunet")


def _paper_run(
    dataset: str, model: str, seed: int, what: str, suffix: str = "", **changes: Any
) -> PlannedRun:
    base = {"data.dataset": dataset, "model.name": model, "seed": seed}
    return PlannedRun(
        f"results/paper/{dataset}_{model}{suffix}_seed{seed}", what, "paper", {**base, **changes}
    )


def _paper_plan() -> Plan:
    """Tables 1 and 2: every column with seed 42, the transfer runs and their classical →
    classical control, seeds 43 and 44 of classical and the best hybrid, then the released
    code's twin of each hybrid; per dataset, cheap columns first."""
    runs: list[PlannedRun] = []
    comparisons = []
    for dataset in ("mnist", "fashion_mnist"):
        ours = [
            _paper_run(dataset, m, 42, f"{paper.COLUMN_TITLES[m]}, seed 42")
            for m in ("classical", *HYBRIDS)
        ]
        source = PAPER_TRANSFER_EPOCHS[dataset]
        transfer = {"train.transfer.source": "classical", "train.transfer.source_epochs": source}
        ours += [
            _paper_run(
                dataset, "1fqconv", 42, f"transfer {source}+{20 - source}", "_transfer", **transfer
            ),
            _paper_run(
                dataset,
                "classical",
                42,
                "transfer control, classical → classical",
                "_transfer",
                **transfer,
            ),
        ]
        ours += [
            _paper_run(dataset, m, seed, f"{paper.COLUMN_TITLES[m]}, seed {seed}")
            for seed in (43, 44)
            for m in ("classical", PAPER_BEST[dataset])
        ]
        ours += [
            _paper_run(
                dataset,
                m,
                42,
                f"{paper.COLUMN_TITLES[m]}, released code",
                "_released",
                **{"model.released_code": True},
            )
            for m in HYBRIDS
        ]
        runs += ours
        comparisons.append(
            Comparison(f"results/paper/{dataset}_comparison.json", tuple(r.out for r in ours))
        )
    return Plan(
        "paper", "Tables 1 and 2 at the paper's protocol (a GPU)", tuple(runs), tuple(comparisons)
    )


EPOCH1_SEEDS = (42, 43, 44)  # fixed before the first run; no seeds are added after looking
PRETRAINED_EPOCHS = 10  # the seed-42 runs that make the book's pretrained models
EPOCH1_MODELS: dict[str, tuple[str, ...]] = {
    "mnist": ("classical", "fullhqconv", "fullhqconv-frozen", "fullhqconv-classical", "7hqconv"),
    "fashion_mnist": ("classical", "quanvunet"),
}
PRETRAINED_MODELS = ("classical", "fullhqconv")  # MNIST, trained PRETRAINED_EPOCHS epochs


def epoch1_dir(dataset: str, model: str, seed: int) -> str:
    """Where the epoch-1 run of ``model`` on ``dataset`` with ``seed`` lives."""
    return f"results/epoch1/{dataset}_{model}_seed{seed}"


def epoch1_config(dataset: str, model: str, seed: int) -> RunConfig:
    """The settings of the epoch-1 run of ``model`` on ``dataset`` with ``seed``."""
    return _epoch1_run(dataset, model, seed).config()


def _epoch1_run(dataset: str, model: str, seed: int) -> PlannedRun:
    changes: dict[str, Any] = {"data.dataset": dataset, "model.name": model, "seed": seed}
    what = f"{model}, seed {seed}, epoch 1"
    if dataset == "mnist" and model in PRETRAINED_MODELS and seed == EPOCH1_SEEDS[0]:
        changes.update(
            {
                "train.epochs": PRETRAINED_EPOCHS,
                "evaluation.epochs": (1, PRETRAINED_EPOCHS),
            }
        )
        what += f" and {PRETRAINED_EPOCHS} (the book's pretrained model)"
    return PlannedRun(epoch1_dir(dataset, model, seed), what, "epoch1", changes)


def _epoch1_plan() -> Plan:
    """The epoch-1 experiment in the order the runs are made: the two pretrained models (seed 42,
    10 epochs, evaluated at 1 and 10), MNIST classical and FullHQConv seeds 43–44, the controls,
    7HQConv, then Fashion-MNIST classical and QuanvU-Net."""
    mnist = [(m, s) for m in PRETRAINED_MODELS for s in EPOCH1_SEEDS[:1]]
    mnist += [(m, s) for s in EPOCH1_SEEDS[1:] for m in PRETRAINED_MODELS]
    mnist += [
        (m, s)
        for m in ("fullhqconv-frozen", "fullhqconv-classical", "7hqconv")
        for s in EPOCH1_SEEDS
    ]
    runs = [_epoch1_run("mnist", m, s) for m, s in mnist]
    runs += [
        _epoch1_run("fashion_mnist", m, s)
        for s in EPOCH1_SEEDS
        for m in EPOCH1_MODELS["fashion_mnist"]
    ]
    return Plan(
        "epoch1",
        "the epoch-1 experiment on a 2-core CPU (chapter 8)",
        tuple(runs),
        (),
        tuple(
            ("paired", "epoch1", "--dataset", d, "--out", f"results/epoch1/{d}_comparison.json")
            for d in EPOCH1_MODELS
        ),
    )


# Transfer at CPU scale (sec. 3.3 and 4.4 at 10 + 1 epochs): arm -> (target model, vertex scope
# re-initialised); the source is the pretrained 10-epoch classical MNIST U-Net for every arm.
TRANSFER_ARMS: dict[str, tuple[str, str]] = {
    "continue": ("classical", "nothing"),
    "classical-fresh-vertex": ("classical", "resblocks"),
    "1fqconv": ("1fqconv", "resblocks"),
    "7hqconv": ("7hqconv", "resblocks"),
}
TRANSFER_SOURCE = "pretrained:mnist/classical"


def transfer_dir(dataset: str, arm: str, seed: int) -> str:
    """Where the transfer run of ``arm`` on ``dataset`` with second-phase seed ``seed`` lives."""
    return f"results/transfer/{dataset}_{arm}_seed{seed}"


def _transfer_run(dataset: str, arm: str, seed: int) -> PlannedRun:
    model, fresh = TRANSFER_ARMS[arm]
    total = PRETRAINED_EPOCHS + 1
    changes: dict[str, Any] = {
        "data.dataset": dataset,
        "model.name": model,
        "seed": seed,
        "train.epochs": total,
        "evaluation.epochs": (total,),
        "train.transfer.source": "classical",
        "train.transfer.source_epochs": PRETRAINED_EPOCHS,
        "train.transfer.source_file": TRANSFER_SOURCE,
        "train.transfer.fresh": fresh,
        "train.transfer.seed": seed,
    }
    what = f"{arm}: classical ({PRETRAINED_EPOCHS} epochs) → {model}, +1 epoch, seed {seed}"
    return PlannedRun(transfer_dir(dataset, arm, seed), what, "epoch1", changes)


def transfer_config(dataset: str, arm: str, seed: int) -> RunConfig:
    """The settings of the transfer run of ``arm`` on ``dataset`` with ``seed``."""
    return _transfer_run(dataset, arm, seed).config()


def _transfer_plan() -> Plan:
    """Transfer learning at CPU scale: the four arms for each seed, seed by seed."""
    runs = tuple(
        _transfer_run("mnist", arm, seed) for seed in EPOCH1_SEEDS for arm in TRANSFER_ARMS
    )
    return Plan(
        "transfer",
        "transfer learning from the pretrained classical U-Net on a 2-core CPU (chapter 8)",
        runs,
        (),
        (
            (
                "paired",
                "transfer",
                "--dataset",
                "mnist",
                "--out",
                "results/transfer/mnist_comparison.json",
            ),
        ),
    )


PLANS: dict[str, Plan] = {p.name: p for p in (_paper_plan(), _epoch1_plan(), _transfer_plan())}


def plan(name: str, dataset: str | None = None) -> Plan:
    """The plan ``name`` (`PLANS`), optionally only the runs and comparisons of one dataset."""
    if name not in PLANS:
        raise ConfigError(f"unknown plan {name!r}; use one of {', '.join(PLANS)}")
    found = PLANS[name]
    if dataset is None:
        return found
    runs = tuple(r for r in found.runs if r.dataset == dataset)
    if not runs:
        raise ConfigError(f"plan {name!r} has no runs on {dataset!r}")
    kept = {r.out for r in runs}
    comparisons = tuple(c for c in found.comparisons if set(c.runs) <= kept)
    analyses = tuple(a for a in found.analyses if dataset in a)
    return dataclasses.replace(found, runs=runs, comparisons=comparisons, analyses=analyses)


# The paper plan's seed-42 columns in the order a GPU campaign makes them, cheap ones first.
CAMPAIGN_COLUMNS = (
    "classical",
    "1hqconv",
    "7hqconv",
    "fullhqconv",
    "1fqconv_transfer",
    "classical_transfer",
    "quanvunet",
)


def campaign_runs() -> tuple[PlannedRun, ...]:
    """The paper plan in the order a GPU campaign makes it (`qhd_lib.experiments.campaign`):
    MNIST before Fashion-MNIST; per dataset classical, 1HQConv, 7HQConv, FullHQConv, the
    transfer run and its classical → classical control, QuanvU-Net (the dearest circuits);
    then seeds 43 and 44 of classical and the best hybrid; then the released code's twins."""
    by_name = {r.out.rsplit("/", 1)[1]: r for r in PLANS["paper"].runs}
    names = []
    for dataset in ("mnist", "fashion_mnist"):
        names += [f"{dataset}_{column}_seed42" for column in CAMPAIGN_COLUMNS]
        names += [
            f"{dataset}_{m}_seed{seed}"
            for seed in (43, 44)
            for m in ("classical", PAPER_BEST[dataset])
        ]
        names += [f"{dataset}_{m}_released_seed42" for m in HYBRIDS]
    return tuple(by_name[name] for name in names)
