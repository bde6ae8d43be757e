"""The experiment runner: one run is train (or resume) → sample → measure → record in results/.

``python -m qhd_lib.experiments run --dataset mnist --model 7hqconv --protocol paper --out
results/x`` runs one column of the paper's Table 1/2 and writes ``results/x/run.json``: the whole
resolved configuration, parameter count, metrics at each evaluation epoch (1/10/20 as in figs.
10–12), sample grids, wall times and provenance. Rerunning the same command resumes. Chapters
make the same run with ``run(configure("demo", {...}), out)``.

Modules, one job each:

- `config`     the typed config tree (`RunConfig`) and the named model variants
- `overrides`  `override`, the one way to change a config (command line and chapters alike)
- `protocols`  the named protocols smoke, demo, epoch1, paper (``QHD_SCALE`` picks the default),
               `configure`, and `deviations` from the paper's protocol
- `plans`      the runs each protocol needs, in order (``experiments plan paper``)
- `records`    run.json: reading it back, older layouts included
- `samples`    drawing samples (resumable in chunks), PNG grids, `sample_from_run`
- `scoring`    FID/KID/IS of an evaluation, `evaluate_samples` of a file drawn elsewhere
- `runner`     `run`: train → sample → measure → record, resumable
- `compare`    seeds pooled, models against classical, the paper beside (`compare_runs`)
- `robustness` a trained hybrid under finite shots and noise (`study`, chapter 9)
- `campaign`   the paper plan on a GPU lent in slots: resumable pieces, files to bring back
- `cli`        argparse; the only module that turns errors into exit codes
"""

from qhd_lib.experiments.cli import main
from qhd_lib.experiments.compare import compare_runs
from qhd_lib.experiments.config import VARIANTS, VERTEX_SCOPES, RunConfig
from qhd_lib.experiments.overrides import override
from qhd_lib.experiments.plans import PLANS, plan
from qhd_lib.experiments.protocols import (
    PROTOCOLS,
    RELEASED_DEVIATION,
    configure,
    default_protocol,
    deviations,
)
from qhd_lib.experiments.records import RUN_FILE, TRAIN_DIR, read_run
from qhd_lib.experiments.runner import run
from qhd_lib.experiments.samples import sample_from_run
from qhd_lib.experiments.scoring import evaluate_samples

__all__ = [
    "PLANS",
    "PROTOCOLS",
    "RELEASED_DEVIATION",
    "RUN_FILE",
    "TRAIN_DIR",
    "VARIANTS",
    "VERTEX_SCOPES",
    "RunConfig",
    "compare_runs",
    "configure",
    "default_protocol",
    "deviations",
    "evaluate_samples",
    "main",
    "override",
    "plan",
    "read_run",
    "run",
    "sample_from_run",
]
