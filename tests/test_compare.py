"""`experiments compare` and plans: seeds pooled, verdicts with error bars, the paper beside.

Runs are written as run.json records directly (what `run` writes), so nothing trains here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qhd_lib import experiments as ex
from qhd_lib import paper
from qhd_lib.errors import RunStateError

REDUCED = ["trained on the first 3200 training images instead of all 60 000"]


def write_run(
    root: Path,
    model: str,
    seed: int,
    fids: dict[float, float | None],
    *,
    deviations=REDUCED,
    status: str = "complete",
    released: bool = False,
    dataset: str = "mnist",
    name: str | None = None,
) -> Path:
    """A finished run's record as `run` writes it; a FID of None is an evaluation without
    metrics."""
    out = root / (name or f"{dataset}_{model}{'_released' if released else ''}_seed{seed}")
    out.mkdir(parents=True)
    config = ex.configure(
        "paper",
        {
            "data.dataset": dataset,
            "model.name": model,
            "seed": seed,
            "model.released_code": released,
        },
    )
    record = {
        "config": config.to_dict(),
        "paper_protocol": not deviations and not released,
        "deviations": list(deviations) + ([ex.RELEASED_DEVIATION] if released else []),
        "seed": seed,
        "status": status,
        "params": 483_321,
        "train": {"median_step_s": 1.5},
        "provenance": {"git_commit": "abc", "dirty": False, "device": {"cpu": "test"}},
        "evaluations": [
            {
                "epoch": e,
                "grid_png": f"samples_epoch{e:g}.png",
                "metrics": None if f is None else {"fid": f, "kid_mean": f / 1000, "is_mean": None},
            }
            for e, f in fids.items()
        ],
    }
    (out / ex.RUN_FILE).write_text(json.dumps(record))
    return out


def group(result: dict, model: str, released: bool = False) -> dict:
    return next(
        g for g in result["groups"] if g["model"] == model and g["released_code"] == released
    )


def test_seeds_are_pooled_into_mean_and_sample_std(tmp_path) -> None:
    runs = [
        write_run(tmp_path, "classical", s, {1.0: f})
        for s, f in ((1, 100.0), (2, 110.0), (3, 120.0))
    ]
    fid = group(ex.compare_runs(runs), "classical")["epochs"]["1"]["fid"]
    assert fid["mean"] == pytest.approx(110.0)
    assert fid["std"] == pytest.approx(10.0)  # n − 1 in the denominator
    assert fid["n"] == 3


def test_a_difference_inside_the_seed_spread_gets_no_winner(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: f}) for s, f in ((1, 100.0), (2, 120.0))]
    runs += [write_run(tmp_path, "1hqconv", s, {1.0: f}) for s, f in ((1, 98.0), (2, 118.0))]
    verdict = group(ex.compare_runs(runs), "1hqconv")["vs_classical"]["1"]
    assert verdict["fid_diff"] == pytest.approx(-2.0)
    assert verdict["verdict"].startswith("within seed-to-seed spread")


def test_a_difference_beyond_two_standard_errors_is_called(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: f}) for s, f in ((1, 100.0), (2, 101.0))]
    runs += [write_run(tmp_path, "1hqconv", s, {1.0: f}) for s, f in ((1, 90.0), (2, 91.0))]
    assert (
        group(ex.compare_runs(runs), "1hqconv")["vs_classical"]["1"]["verdict"]
        == "lower FID than classical"
    )


def test_a_single_seed_gives_no_verdict(tmp_path) -> None:
    runs = [
        write_run(tmp_path, "classical", 1, {1.0: 100.0}),
        write_run(tmp_path, "1hqconv", 1, {1.0: 50.0}),
    ]
    verdict = group(ex.compare_runs(runs), "1hqconv")["vs_classical"]["1"]
    assert verdict["se"] is None and "no verdict" in verdict["verdict"]


def test_runs_off_the_paper_protocol_show_the_paper_value_but_no_difference(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {20.0: 60.0})]
    row = group(ex.compare_runs(runs), "classical")["epochs"]["20"]
    assert row["paper"] == paper.TABLES["mnist"]["classical"]
    assert row["paper_fid_diff"] is None


def test_paper_protocol_runs_get_the_difference_to_the_paper(tmp_path) -> None:
    runs = [
        write_run(tmp_path, "classical", s, {1.0: 300.0, 20.0: f}, deviations=[])
        for s, f in ((1, 44.0), (2, 46.0))
    ]
    result = group(ex.compare_runs(runs), "classical")
    assert result["epochs"]["20"]["paper_fid_diff"] == pytest.approx(45.0 - 45.2762)
    assert result["epochs"]["1"]["paper_fid_diff"] == pytest.approx(
        300.0 - 311.0582
    )  # quoted in the text


def test_released_code_runs_are_their_own_group_and_compare_with_our_classical(tmp_path) -> None:
    runs = [
        write_run(tmp_path, "classical", 1, {1.0: 100.0}),
        write_run(tmp_path, "1hqconv", 1, {1.0: 90.0}),
        write_run(tmp_path, "1hqconv", 1, {1.0: 95.0}, released=True),
    ]
    result = ex.compare_runs(runs)
    assert len(result["groups"]) == 3
    assert group(result, "1hqconv", released=True)["vs_classical"]["1"][
        "fid_diff"
    ] == pytest.approx(-5.0)


def test_unfinished_run_is_refused_with_the_fix(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {1.0: 100.0}, status="training")]
    with pytest.raises(RunStateError, match="rerun its command"):
        ex.compare_runs(runs)


def test_two_runs_with_one_seed_are_refused(tmp_path) -> None:
    runs = [
        write_run(tmp_path / "a", "classical", 1, {1.0: 100.0}),
        write_run(tmp_path / "b", "classical", 1, {1.0: 101.0}),
    ]
    with pytest.raises(RunStateError, match="share a seed"):
        ex.compare_runs(runs)


def test_compare_command_writes_the_json_with_its_command(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: 100.0 + s}) for s in (1, 2)]
    out = tmp_path / "comparison.json"
    assert ex.main(["compare", *map(str, runs), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m qhd_lib.experiments compare")
    assert result["groups"][0]["seeds"] == [1, 2]


def test_protocol_scripts_are_valid_bash() -> None:
    import subprocess

    for script in ("plan_runs.sh", "paper_protocol.sh"):
        subprocess.run(
            ["bash", "-n", str(Path(__file__).resolve().parents[1] / "scripts" / script)],
            check=True,
        )


def test_grids_and_values_belong_to_their_runs_when_a_run_lacks_metrics(tmp_path) -> None:
    runs = [
        write_run(tmp_path, "classical", 3, {1.0: 130.0, 2.0: 230.0}),
        write_run(tmp_path, "classical", 1, {1.0: None, 2.0: 210.0}),
        write_run(tmp_path, "classical", 2, {2.0: 220.0}),
    ]
    result = group(ex.compare_runs(runs), "classical")
    assert result["seeds"] == [1, 2, 3]
    assert result["run_dirs"] == [str(runs[1]), str(runs[2]), str(runs[0])]
    epoch1, epoch2 = result["epochs"]["1"], result["epochs"]["2"]
    assert epoch1["seeds"] == [3] and epoch1["grids"] == [str(runs[0] / "samples_epoch1.png")]
    assert epoch2["seeds"] == [1, 2, 3] and epoch2["fid"]["values"] == [210.0, 220.0, 230.0]
    assert epoch2["grids"] == [str(r / "samples_epoch2.png") for r in (runs[1], runs[2], runs[0])]


def test_seed_order_does_not_depend_on_the_order_runs_are_given(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: 100.0 + s}) for s in (44, 42, 43)]
    forward, backward = ex.compare_runs(runs), ex.compare_runs(runs[::-1])
    assert group(forward, "classical") == group(backward, "classical")
    row = group(forward, "classical")
    assert row["run_dirs"][row["seeds"].index(42)] == str(runs[1])


def test_paper_plan_lists_every_table_column_and_control() -> None:
    planned = ex.plan("paper", "mnist")
    names = [Path(r.out).name for r in planned.runs]
    assert len(names) == len(set(names)) == 15
    assert names[:5] == [f"mnist_{m}_seed42" for m in paper.COLUMNS[:-1]]
    assert {
        "mnist_1fqconv_transfer_seed42",
        "mnist_classical_transfer_seed42",
        "mnist_7hqconv_seed44",
        "mnist_quanvunet_released_seed42",
    } <= set(names)
    transfer = next(r for r in planned.runs if r.out.endswith("1fqconv_transfer_seed42"))
    assert transfer.config().train.transfer.source_epochs == 19
    assert all(ex.deviations(r.config()) in ([], [ex.RELEASED_DEVIATION]) for r in planned.runs)
    assert planned.comparisons[0].runs == tuple(r.out for r in planned.runs)


def test_plan_command_prints_runs_the_runner_accepts(capsys) -> None:
    import shlex

    from qhd_lib.experiments import cli

    assert ex.main(["plan", "epoch1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    runs = ex.plan("epoch1").runs
    assert len(lines) == len(runs) + 2 and lines[-1].startswith(
        "paired epoch1 --dataset fashion_mnist"
    )
    for line, planned in zip(lines, runs):
        args = cli.build_parser().parse_args(shlex.split(line))
        config = ex.configure(args.protocol, cli.changes_from_args(args))
        assert config == planned.config() and str(args.out) == planned.out
        assert len(ex.deviations(config)) == 4  # epochs, samples, real images, DDIM-100
    for line in lines[len(runs) :]:
        assert cli.build_parser().parse_args(shlex.split(line)).command == "paired"
