"""``python -m qhd_lib.experiments ...``: see `qhd_lib.experiments.cli`."""

import sys

from qhd_lib.experiments.cli import main

sys.exit(main())
