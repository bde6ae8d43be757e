"""qhd_lib: the library behind the book *Quantum Hybrid Diffusion Models, reproduced*.

One module per concept, each importable on its own (importing ``qhd_lib`` loads nothing heavy):

- ``qhd_lib.scale``       the one run-size knob (``QHD_SCALE=smoke|demo|paper``)
- ``qhd_lib.notebook``    the first cell of every chapter
- ``qhd_lib.data``        MNIST / Fashion-MNIST, fetched offline-friendly and checksummed
- ``qhd_lib.diffusion``   DDPM maths: schedules, q_sample (eq. 4), eq. 7, P2 loss, samplers
- ``qhd_lib.circuits``    ansätze as gate lists, a fast exact JAX simulator, the PennyLane reference
- ``qhd_lib.models``      the U-Net and its hybrids (QVU-Net, QuanvU-Net), paper configurations
- ``qhd_lib.train``       Adam + EMA + checkpoints + transfer learning
- ``qhd_lib.sharding``    data parallel over every device JAX sees (nothing changes on one)
- ``qhd_lib.deadline``    stopping long work, saved, before a deadline (GPU slots)
- ``qhd_lib.metrics``     FID / KID / IS with offline Inception weights
- ``qhd_lib.io``          every file written: atomic bytes and JSON, uint8 image archives
- ``qhd_lib.provenance``  command, commit, device and versions beside every result
- ``qhd_lib.exec_times``  each chapter's run time, read from the executed notebooks
- ``qhd_lib.experiments`` runs as config trees: train, sample, measure, record in ``results/``
- ``qhd_lib.plotting``    figures in the book's one style
- ``qhd_lib.widgets``     the interactive cells of the chapters

PennyLane and torch are never needed to build or train a model: PennyLane is the reference the
fast simulator is checked against, torch serves the metrics.
"""

__version__ = "0.1.0"
