"""Ship a finished run's EMA parameters as a pretrained model of the library.

Copies the EMA snapshot of the run's last evaluation epoch from where the run was made (its state
directory: the snapshots are not published into ``results/``) to
``qhd_lib/pretrained/<dataset>_<model>.msgpack`` and prints the `PRETRAINED` entry to paste into
``qhd_lib/pretrained/__init__.py``. The published run in ``results/`` must be the same run: its
run.json is compared with the state directory's.

    python scripts/ship_pretrained.py \\
        --state ~/.cache/qhd-book/runs/epoch1/mnist_classical_seed42 \\
        --published results/epoch1/mnist_classical_seed42
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qhd_lib import io, models, pretrained, train
from qhd_lib.errors import RunStateError
from qhd_lib.experiments import TRAIN_DIR, read_run
from qhd_lib.experiments.overrides import config_from_dict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state", required=True, type=Path, help="the run's state directory")
    parser.add_argument("--published", required=True, type=Path, help="its results/ directory")
    args = parser.parse_args()

    state, published = read_run(args.state), read_run(args.published)
    if state is None or published is None or state != published:
        raise RunStateError(
            f"{args.state} and {args.published} do not hold the same finished run; publish it "
            "with `python -m qhd_lib.experiments publish` first"
        )
    config = config_from_dict(state["config"])
    last = max(state["evaluations"], key=lambda e: e["epoch"])
    snapshot = train.snapshot_path(args.state / TRAIN_DIR, last["step"])
    expected = models.param_shapes(models.make_model(config.model.architecture))
    params = train.load_params(snapshot, expected)  # refuses another model's file
    name = f"{config.data.dataset}_{config.model.name}.msgpack"
    target = pretrained.DIRECTORY / name
    train.save_params(target, params)
    print(
        f"    ({config.data.dataset!r}, {config.model.name!r}): Pretrained(\n"
        f"        {config.data.dataset!r},\n        {config.model.name!r},\n"
        f"        {last['epoch']:g},\n        {name!r},\n        {io.sha256(target)!r},\n"
        f"        {str(args.published)!r},\n    ),"
    )


if __name__ == "__main__":
    main()
