"""`python -m qhd_lib.experiments compare`: seeds pooled, verdicts with error bars, the paper beside.

Runs are written as run.json records directly (what `run` writes), so nothing trains here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qhd_lib import experiments as ex
from qhd_lib import paper

REDUCED = ["trained on the first 3200 training images instead of all 60 000"]


def write_run(root: Path, model: str, seed: int, fids: dict[float, float], *, deviations=REDUCED,
              status: str = "complete", released: bool = False, dataset: str = "mnist") -> Path:
    out = root / f"{dataset}_{model}{'_released' if released else ''}_seed{seed}"
    out.mkdir(parents=True)
    record = {
        "config": {"dataset": dataset, "model": model, "released_code": released, "transfer_from": None,
                   "transfer_epochs": None},
        "paper_protocol": not deviations and not released,
        "deviations": list(deviations) + ([ex.RELEASED_DEVIATION] if released else []), "seed": seed,
        "commit": "abc", "device": {"cpu": "test"}, "status": status, "params": 483_321,
        "train": {"median_step_s": 1.5},
        "evaluations": [{"epoch": e, "grid_png": f"samples_epoch{e:g}.png",
                         "metrics": {"fid": f, "kid_mean": f / 1000, "is_mean": None}}
                        for e, f in fids.items()],
    }
    (out / ex.RUN_FILE).write_text(json.dumps(record))
    return out


def group(result: dict, model: str, released: bool = False) -> dict:
    return next(g for g in result["groups"] if g["model"] == model and g["released_code"] == released)


def test_seeds_are_pooled_into_mean_and_sample_std(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: f}) for s, f in ((1, 100.0), (2, 110.0), (3, 120.0))]
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
    assert group(ex.compare_runs(runs), "1hqconv")["vs_classical"]["1"]["verdict"] == \
        "lower FID than classical"


def test_a_single_seed_gives_no_verdict(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {1.0: 100.0}), write_run(tmp_path, "1hqconv", 1, {1.0: 50.0})]
    verdict = group(ex.compare_runs(runs), "1hqconv")["vs_classical"]["1"]
    assert verdict["se"] is None and "no verdict" in verdict["verdict"]


def test_reduced_runs_show_the_paper_value_but_no_difference(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {20.0: 60.0})]
    row = group(ex.compare_runs(runs), "classical")["epochs"]["20"]
    assert row["paper"] == paper.TABLES["mnist"]["classical"]
    assert row["paper_fid_diff"] is None


def test_paper_protocol_runs_get_the_difference_to_the_paper(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", s, {1.0: 300.0, 20.0: f}, deviations=[])
            for s, f in ((1, 44.0), (2, 46.0))]
    result = group(ex.compare_runs(runs), "classical")
    assert result["epochs"]["20"]["paper_fid_diff"] == pytest.approx(45.0 - 45.2762)
    assert result["epochs"]["1"]["paper_fid_diff"] == pytest.approx(300.0 - 311.0582)  # quoted in the text


def test_released_code_runs_are_their_own_group_and_compare_with_our_classical(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {1.0: 100.0}),
            write_run(tmp_path, "1hqconv", 1, {1.0: 90.0}),
            write_run(tmp_path, "1hqconv", 1, {1.0: 95.0}, released=True)]
    result = ex.compare_runs(runs)
    assert len(result["groups"]) == 3
    assert group(result, "1hqconv", released=True)["vs_classical"]["1"]["fid_diff"] == pytest.approx(-5.0)


def test_unfinished_run_is_refused_with_the_fix(tmp_path) -> None:
    runs = [write_run(tmp_path, "classical", 1, {1.0: 100.0}, status="training")]
    with pytest.raises(SystemExit, match="rerun its command"):
        ex.compare_runs(runs)


def test_two_runs_with_one_seed_are_refused(tmp_path) -> None:
    runs = [write_run(tmp_path / "a", "classical", 1, {1.0: 100.0}),
            write_run(tmp_path / "b", "classical", 1, {1.0: 101.0})]
    with pytest.raises(SystemExit, match="share a seed"):
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

    for script in ("reduced_protocol.sh", "paper_protocol.sh"):
        subprocess.run(["bash", "-n", str(Path(__file__).resolve().parents[1] / "scripts" / script)],
                       check=True)


def test_reduced_protocol_flags_are_accepted_by_the_runner_and_listed_as_deviations() -> None:
    import re
    import shlex

    script = (Path(__file__).resolve().parents[1] / "scripts" / "reduced_protocol.sh").read_text()
    common = shlex.split(re.search(r"COMMON=\((.*?)\)", script, flags=re.S).group(1))
    args = ex.build_parser().parse_args(["run", "--model", "classical", "--out", "x", *common])
    config = ex._run_config_from_args(args)
    assert len(config.deviations()) == 6  # images, epochs, batch, samples, real images, sampler
