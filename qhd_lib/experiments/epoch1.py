"""The epoch-1 experiment's analysis: comparisons fixed before the first run, paired by seed.

The paper's one CPU-sized claim is that after one epoch the hybrids beat the classical U-Net
(sec. 4.2–4.3). `PRE_REGISTERED` lists what is tested, in which direction the paper's story
predicts the difference, and the seeds (`EPOCH1_SEEDS`, no more added after looking); `analyse`
reads whatever runs exist under ``results/epoch1/`` and tests each comparison on the seeds both
sides have (`qhd_lib.experiments.statistics.paired`), FID primary, KID secondary. Missing runs are
listed, never guessed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from qhd_lib import io, paper, provenance
from qhd_lib.errors import RunStateError
from qhd_lib.experiments.overrides import config_from_dict
from qhd_lib.experiments.plans import EPOCH1_MODELS, EPOCH1_SEEDS, epoch1_dir
from qhd_lib.experiments.protocols import configure, deviations
from qhd_lib.experiments.records import commit_label, read_run
from qhd_lib.experiments.statistics import paired

EPOCH = 1.0
METRICS = {"fid": "fid", "kid": "kid_mean"}  # name in the comparison -> key in run.json
FLOOR_DIR = "results/real_vs_real"


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """``model − baseline`` on ``dataset`` at epoch 1, paired by seed.

    ``expected`` is the sign of the difference the paper's story predicts (−1: the model's FID is
    lower); a verdict is "supported" when the interval excludes 0 on that side.
    """

    id: str
    dataset: str
    model: str
    baseline: str
    question: str
    role: str  # "primary", "control" or "exploratory"
    expected: int = -1


PRE_REGISTERED: tuple[PairedComparison, ...] = (
    PairedComparison(
        "a",
        "mnist",
        "fullhqconv",
        "classical",
        "Does FullHQConv beat the classical U-Net after one epoch on MNIST?",
        "primary",
    ),
    PairedComparison(
        "b",
        "fashion_mnist",
        "quanvunet",
        "classical",
        "Does QuanvU-Net beat the classical U-Net after one epoch on Fashion-MNIST?",
        "primary",
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
        "Is it the circuits or the smaller grouped vertex? (classical layers of the same size "
        "− circuits)",
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


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    """A run's config without what may differ between runs of the experiment: how long it
    trained past epoch 1 and where else it was evaluated (the pretrained runs go to 10)."""
    tree = config_from_dict(config).identity()
    tree["train"] = {k: v for k, v in tree["train"].items() if k != "epochs"}
    tree["evaluation"] = {k: v for k, v in tree["evaluation"].items() if k != "epochs"}
    return tree


def epoch1_value(root: Path, dataset: str, model: str, seed: int) -> dict[str, Any] | None:
    """The epoch-1 measurement of one run (None when the run is not there or unfinished).

    A run whose settings differ from the epoch-1 protocol is an error, not a data point.
    """
    run_dir = root / epoch1_dir(dataset, model, seed)
    record = read_run(run_dir)
    if record is None or record.get("status") != "complete":
        return None
    expected = configure("epoch1", {"data.dataset": dataset, "model.name": model, "seed": seed})
    if _comparable(record["config"]) != _comparable(expected.to_dict()):
        raise RunStateError(
            f"{run_dir} was not made with the epoch-1 protocol; remake it with "
            "`python -m qhd_lib.experiments plan epoch1`'s command for it"
        )
    entry = next(e for e in record["evaluations"] if float(e["epoch"]) == EPOCH)
    values = {name: entry["metrics"][key] for name, key in METRICS.items()}
    return {
        **values,
        "run_dir": str(run_dir.relative_to(root)),
        "grid_png": str((run_dir / entry["grid_png"]).relative_to(root)),
        "commit": commit_label(record),
        "train_wall_s": record["train"]["wall_s"],
        "params": record["params"],
        "trainable_params": record.get("trainable_params", record["params"]),
    }


def paper_difference(comparison: PairedComparison) -> dict[str, float] | None:
    """The paper's single-run (seed 42) epoch-1 difference, where it prints both values."""
    ours = paper.IN_TEXT.get((comparison.dataset, comparison.model, 1))
    base = paper.IN_TEXT.get((comparison.dataset, comparison.baseline, 1))
    if ours is None or base is None:
        return None
    out = {}
    for name in METRICS:
        if name in ours and name in base:
            out[name] = paper.mean_of(ours[name]) - paper.mean_of(base[name])
            out[f"{name}_model"] = paper.mean_of(ours[name])
            out[f"{name}_baseline"] = paper.mean_of(base[name])
    return out


def floor(root: Path, dataset: str, n: int) -> dict[str, Any] | None:
    """The real-vs-real FID/KID at ``n`` images per set (``scripts/real_vs_real.py``)."""
    name = f"{FLOOR_DIR}/{dataset}_n{n}.json"
    if not (root / name).is_file():
        return None
    record = io.read_json(root / name)
    return {"fid": record["fid"], "kid": record["kid_mean"], "file": name}


def analyse(dataset: str, root: str | Path = provenance.ROOT) -> dict[str, Any]:
    """Every run of the experiment on ``dataset`` that exists, the pre-registered comparisons
    on the seeds both sides have, and the runs still missing."""
    root = Path(root)
    protocol = configure("epoch1", {"data.dataset": dataset})
    runs: dict[str, dict[str, Any]] = {}
    missing = []
    for model in EPOCH1_MODELS[dataset]:
        for seed in EPOCH1_SEEDS:
            value = epoch1_value(root, dataset, model, seed)
            if value is None:
                missing.append(epoch1_dir(dataset, model, seed))
            else:
                runs.setdefault(model, {})[str(seed)] = value
    comparisons = []
    for c in PRE_REGISTERED:
        if c.dataset != dataset:
            continue
        ours, base = runs.get(c.model, {}), runs.get(c.baseline, {})
        tests = {
            name: paired(
                {int(s): v[name] for s, v in ours.items()},
                {int(s): v[name] for s, v in base.items()},
                lower_is_better=c.expected < 0,
            )
            for name in METRICS
        }
        comparisons.append(
            {
                **dataclasses.asdict(c),
                "paper": paper_difference(c),
                "fid": tests["fid"],
                "kid": tests["kid"],
            }
        )
    return {
        "dataset": dataset,
        "epoch": EPOCH,
        "seeds": list(EPOCH1_SEEDS),
        "protocol": {
            "deviations": deviations(protocol),
            "samples": protocol.evaluation.samples,
            "n_real": protocol.evaluation.n_real,
            "real_split": protocol.evaluation.real_split,
            "sampling": f"DDIM (eta 0), {protocol.sampling.steps} steps, EMA parameters",
        },
        "floor": floor(root, dataset, protocol.evaluation.n_real),
        "runs": runs,
        "missing": missing,
        "comparisons": comparisons,
        "paper_source": paper.SOURCE,
    }


MODEL_TITLES: dict[str, str] = {
    "classical": "Classical",
    "fullhqconv": "FullHQConv",
    "fullhqconv-frozen": "FullHQConv, circuits frozen",
    "fullhqconv-classical": "FullHQConv, classical vertex",
    "7hqconv": "7HQConv",
    "quanvunet": "QuanvU-Net",
}


def comparison_file(dataset: str) -> str:
    """Where ``experiments epoch1`` writes the comparison of ``dataset`` (relative to the root)."""
    return f"results/epoch1/{dataset}_comparison.json"


def current(dataset: str, root: str | Path = provenance.ROOT) -> tuple[dict[str, Any], str]:
    """The comparison of ``dataset`` and a note on where it came from: the committed file when it
    matches the runs that exist, else the analysis of those runs, saying the file is missing or
    stale (and the command that rewrites it)."""
    root = Path(root)
    live = analyse(dataset, root)
    path = root / comparison_file(dataset)
    command = (
        f"python -m qhd_lib.experiments epoch1 --dataset {dataset} --out {comparison_file(dataset)}"
    )
    if not path.is_file():
        return live, f"`{comparison_file(dataset)}` does not exist yet; `{command}` writes it."
    saved = io.read_json(path)
    fields = ("runs", "missing", "comparisons", "floor")
    if all(saved.get(k) == io.as_json(live[k]) for k in fields):
        p = saved["provenance"]
        return saved, f"`{comparison_file(dataset)}`, commit `{p['git_commit'][:12]}`, {p['date']}."
    return live, f"`{comparison_file(dataset)}` is older than the runs; `{command}` rewrites it."


def _interval(test: dict[str, Any], digits: int) -> str:
    if test["n"] == 0:
        return "no pairs yet"
    if test["interval"] is None:
        return f"{test['mean_difference']:+.{digits}f} (n = {test['n']}, no interval)"
    lo, hi = test["interval"]
    return f"{test['mean_difference']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def claim_rows(result: dict[str, Any]) -> list[str]:
    """The comparisons of one dataset as Markdown table rows (header first): the paper's
    single-run difference beside our paired mean, 95 % interval, p-value, detectable effect
    and verdict, FID then KID."""
    rows = [
        "| | comparison | role | paper (seed 42) | ours: FID difference [95 % CI] | p | "
        "detectable (80 %) | verdict (FID) | KID difference [95 % CI] | verdict (KID) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["comparisons"]:
        fid, kid, published = c["fid"], c["kid"], c["paper"]
        paper_text = "–" if not published else f"FID {published['fid']:+.2f}"
        if published and "kid" in published:
            paper_text += f", KID {published['kid']:+.4f}"
        p = "–" if fid.get("p_value") is None else f"{fid['p_value']:.3f}"
        effect = "–" if fid.get("detectable_effect") is None else f"{fid['detectable_effect']:.1f}"
        title = f"{MODEL_TITLES[c['model']]} − {MODEL_TITLES[c['baseline']]}"
        rows.append(
            f"| ({c['id']}) | {title} | {c['role']} | {paper_text} | {_interval(fid, 1)} | {p} | "
            f"{effect} | {fid['verdict']} | {_interval(kid, 4)} | {kid['verdict']} |"
        )
    return rows
