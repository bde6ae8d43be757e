"""The named protocols (smoke, demo, epoch1, paper) as data, the default one, and deviations.

``QHD_SCALE`` (see `qhd_lib.scale`) names the protocol a run starts from when none is given, in
the command line and the chapters alike. Only ``paper`` is the paper's protocol; run.json lists
every difference from it under ``deviations``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from qhd_lib.errors import ConfigError
from qhd_lib.experiments.config import (
    DataSection,
    DiffusionSection,
    EvaluationSection,
    RunConfig,
    SamplingSection,
    TrainSection,
)
from qhd_lib.experiments.overrides import override
from qhd_lib.paper import TRANSFER_EPOCHS
from qhd_lib.scale import get_scale

RELEASED_DEVIATION = "released-code model variant (see the book's chapter on the released code)"

PROTOCOLS: dict[str, RunConfig] = {
    # Seconds (CI): 10 diffusion steps, so **not** the paper's protocol.
    "smoke": RunConfig(
        protocol="smoke",
        data=DataSection(train_images=64),
        diffusion=DiffusionSection(timesteps=10),
        train=TrainSection(epochs=1, batch_size=16, checkpoint_every=2, log_every=1),
        sampling=SamplingSection(batch=8),
        evaluation=EvaluationSection(epochs=(1,), samples=8, n_real=64),
    ),
    # Minutes on a 2-core CPU: a subset of the data, few samples, DDIM-50.
    "demo": RunConfig(
        protocol="demo",
        data=DataSection(train_images=2_048),
        train=TrainSection(epochs=1, batch_size=32, checkpoint_every=16, log_every=2),
        sampling=SamplingSection(sampler="ddim", steps=50, batch=64),
        evaluation=EvaluationSection(epochs=(0.5, 1), samples=64, n_real=500),
    ),
    # The epoch-1 experiment (chapter 8): the paper's training for one epoch (469 steps), the EMA
    # parameters measured by 1 000 DDIM-100 samples against the first 1 000 training images.
    # Fixed before its first run; every run of the experiment uses it unchanged.
    "epoch1": RunConfig(
        protocol="epoch1",
        train=TrainSection(epochs=1, checkpoint_every=100),
        sampling=SamplingSection(sampler="ddim", steps=100, batch=250, chunk=250),
        evaluation=EvaluationSection(epochs=(1,), samples=1_000, n_real=1_000, real_split="train"),
    ),
    # Sec. 4.1: all 60 000 images, 20 epochs at batch 128, 7 000 DDPM-1000 samples at 1, 10, 20.
    "paper": RunConfig(protocol="paper"),
}


def default_protocol() -> str:
    """The protocol named by ``$QHD_SCALE`` (default ``demo``)."""
    return get_scale()


def configure(protocol: str | None = None, changes: Mapping[str, Any] | None = None) -> RunConfig:
    """The named protocol (default: ``$QHD_SCALE``) with ``changes`` applied by `override`.

    ``configure("demo", {"data.dataset": "mnist", "model.name": "classical"})`` is chapter 7's
    run; the command line builds the same call from its flags.
    """
    name = default_protocol() if protocol is None else protocol
    if name not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    return override(PROTOCOLS[name], changes or {})


def deviations(config: RunConfig) -> list[str]:
    """How ``config`` differs from the paper's protocol (empty for a paper-protocol run).

    The model variant (its name, mask and transfer source) is what a run compares, not a
    deviation; the released code's variant is listed so that it is never mistaken for ours.
    """
    paper, out = PROTOCOLS["paper"], []
    if config.diffusion.timesteps != paper.diffusion.timesteps:
        out.append(
            f"{config.diffusion.timesteps} diffusion steps instead of "
            f"{paper.diffusion.timesteps} (training and sampling)"
        )
    if config.data.train_images is not None:
        out.append(
            f"trained on the first {config.data.train_images} training images instead of all 60 000"
        )
    epochs, transfer = config.train.epochs, config.train.transfer
    published = TRANSFER_EPOCHS.get(config.data.dataset)
    if transfer is not None and published is not None:
        ours = (transfer.source_epochs, epochs - transfer.source_epochs)
        if ours != published:
            out.append(
                f"transfer after {ours[0]:g} source epochs, {ours[1]:g} more, instead of the "
                f"paper's {published[0]} + {published[1]}"
            )
    elif epochs != paper.train.epochs:
        out.append(
            f"{epochs:g} epoch{'' if epochs == 1 else 's'} instead of {paper.train.epochs:g}"
        )
    if config.train.batch_size != paper.train.batch_size:
        out.append(f"batch {config.train.batch_size} instead of {paper.train.batch_size}")
    if config.evaluation.samples != paper.evaluation.samples:
        out.append(
            f"{config.evaluation.samples} generated images instead of {paper.evaluation.samples}"
        )
    if config.evaluation.n_real != paper.evaluation.n_real:
        out.append(
            f"{config.evaluation.n_real} real images for the metrics instead of "
            f"{paper.evaluation.n_real}"
        )
    if config.sampling.sampler != paper.sampling.sampler:
        out.append(
            f"{config.sampling.sampler.upper()} sampling with {config.sampling.steps} "
            f"steps instead of ancestral DDPM with {paper.diffusion.timesteps}"
        )
    for section in ("diffusion", "train", "ema"):
        ours, theirs = getattr(config, section), getattr(paper, section)
        for field in dataclasses.fields(ours):
            if field.name in _WORDED[section]:
                continue
            value, published = getattr(ours, field.name), getattr(theirs, field.name)
            if value != published:
                out.append(f"{section}.{field.name} = {value} instead of the paper's {published}")
    if config.matmul_precision != paper.matmul_precision:
        out.append(
            f"matmul precision {config.matmul_precision!r} instead of float32 "
            f"{paper.matmul_precision!r}"
        )
    if config.model.released_code:
        out.append(RELEASED_DEVIATION)
    return out


# Fields worded above, or part of the model variant, or bookkeeping that changes no number.
_WORDED: dict[str, set[str]] = {
    "diffusion": {"timesteps"},
    "train": {"epochs", "batch_size", "checkpoint_every", "log_every", "frozen", "transfer"},
    "ema": set(),
}
