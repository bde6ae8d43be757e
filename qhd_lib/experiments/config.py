"""What a run is: one typed tree of settings, each section validated as it is made.

A `RunConfig` has a section per stage — ``data``, ``model``, ``diffusion``, ``train`` (with an
optional ``transfer``), ``ema``, ``sampling``, ``evaluation`` — plus the run's ``seed`` and the
name of the ``protocol`` it started from. Every run.json stores the whole resolved tree.
`qhd_lib.experiments.overrides.override` is the only way to change one: the command line turns
its flags into the same dotted paths the chapters pass (``{"train.epochs": 2}``). The module is
longer than most (~350 lines) so that every setting a run has can be read in one place.

Which configuration mechanism does what:

- `RunConfig` (here): everything one run computes with; `Transfer` and the sections inside.
- `qhd_lib.experiments.protocols.PROTOCOLS`: named RunConfigs (smoke, demo, epoch1, paper);
  ``QHD_SCALE`` names the default one.
- `qhd_lib.models.PRESETS` / `ModelConfig`: the architectures that ``model.name`` refers to; the
  tree names one and does not repeat its fields. `VARIANTS` (here) are named models built on one
  architecture with a training mask (e.g. ``fullhqconv-frozen``).
- `qhd_lib.train.TrainConfig`: the training loop's flat view of ``diffusion``, ``train`` and
  ``ema``, made by :meth:`RunConfig.train_config`; its defaults are the paper's numbers, which the
  sections below reuse.
- `qhd_lib.scale.by_scale`: sizes inside a chapter (figures, widget ranges), keyed by the same
  names as the protocols; not a run configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qhd_lib import data, train
from qhd_lib.errors import ConfigError
from qhd_lib.models import CONTROL_NAMES, MODEL_NAMES, model_config

_PAPER_TRAINING = train.TrainConfig()
SAMPLERS: tuple[str, ...] = ("ddpm", "ddim")
# JAX's precision of float32 matrix products and convolutions (`jax.default_matmul_precision`):
# "highest" is float32 throughout; "high" (bfloat16 x 3) and "default" (a GPU's TF32) are faster.
MATMUL_PRECISIONS: tuple[str, ...] = ("highest", "high", "default")
PRETRAINED_PREFIX = "pretrained:"
DEFAULT_DDIM_STEPS = 50
FREEZABLE: tuple[str, ...] = tuple(train.FROZEN_GROUPS)
# What counts as the vertex that transfer learning re-initialises.
VERTEX_SCOPES: dict[str, tuple[str, ...]] = {
    "nothing": (),  # nothing re-initialised: the source trains on (the "continue" baseline)
    "resblocks": ("mid.resblock_0", "mid.resblock_1"),
    "mid": ("mid.resblock_0", "mid.attnblock", "mid.resblock_1"),
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """A named model built on an architecture of `qhd_lib.models`, trained with a mask."""

    architecture: str
    frozen: tuple[str, ...] = ()
    what: str = ""


VARIANTS: dict[str, Variant] = {
    "fullhqconv-frozen": Variant(
        "fullhqconv",
        frozen=("circuits",),
        what="FullHQConv with every circuit parameter kept at its "
        "initial value: does training the quantum part matter?",
    ),
}


def require(ok: bool, message: str) -> None:
    """Raise :class:`~qhd_lib.errors.ConfigError` with ``message`` (the fix) unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def _positive(path: str, value: float | None, optional: bool = False) -> None:
    require(
        (optional and value is None) or (value is not None and value > 0),
        f"{path} must be positive, got {value}",
    )


@dataclasses.dataclass(frozen=True)
class DataSection:
    """The training images: the first ``train_images`` of the training split (None: all)."""

    dataset: str = "mnist"
    train_images: int | None = None

    def __post_init__(self) -> None:
        require(
            self.dataset in data.DATASETS,
            f"unknown dataset {self.dataset!r}; use one of {', '.join(data.DATASETS)}",
        )
        _positive("data.train_images", self.train_images, optional=True)


@dataclasses.dataclass(frozen=True)
class ModelSection:
    """The network: an architecture of `qhd_lib.models` (a paper column or a control such as
    ``fullhqconv-classical``) or a `VARIANTS` name, and whether it is the released code's variant
    of that architecture."""

    name: str = "classical"
    released_code: bool = False

    def __post_init__(self) -> None:
        names = (*MODEL_NAMES, *CONTROL_NAMES, *VARIANTS)
        require(self.name in names, f"unknown model {self.name!r}; use one of {', '.join(names)}")
        try:  # the architecture's own checks, e.g. released code exists for HQConv only
            model_config(self.architecture, released_code=self.released_code)
        except ValueError as err:
            raise ConfigError(f"model {self.name}: {err}") from None

    @property
    def architecture(self) -> str:
        """The `qhd_lib.models` preset this model builds (a variant's base architecture)."""
        return VARIANTS[self.name].architecture if self.name in VARIANTS else self.name


@dataclasses.dataclass(frozen=True)
class DiffusionSection:
    """The forward process and the loss (sec. 4.1: cosine schedule, T = 1000, P2 γ = k = 1)."""

    timesteps: int = _PAPER_TRAINING.timesteps
    beta_schedule: str = _PAPER_TRAINING.beta_schedule
    p2_gamma: float = _PAPER_TRAINING.p2_gamma
    p2_k: float = _PAPER_TRAINING.p2_k

    def __post_init__(self) -> None:
        require(
            self.timesteps >= 2, f"diffusion.timesteps must be at least 2, got {self.timesteps}"
        )
        require(
            self.beta_schedule in ("cosine", "linear"),
            f"unknown beta schedule {self.beta_schedule!r}; use 'cosine' or 'linear'",
        )


@dataclasses.dataclass(frozen=True)
class Transfer:
    """Transfer learning (sec. 3.3): start from a source network's parameters, re-initialise the
    vertex (``fresh``, a `VERTEX_SCOPES` key) and train the rest of ``train.epochs``.

    The source is trained inside the run for ``source_epochs`` (the paper's 19 + 1), or read from
    ``source_file``, trained for ``source_epochs``: a parameter file of
    `qhd_lib.train.save_params`, or ``pretrained:<dataset>/<model>`` for the library's shipped
    EMA parameters (`qhd_lib.pretrained`, checksum-verified). ``seed`` is the second phase's
    seed (data order, the fresh blocks' initialisation, sampling noise); None uses the run's
    seed. ``fresh="nothing"`` re-initialises nothing: the source simply trains on.
    """

    source: str
    source_epochs: float
    fresh: str = "resblocks"
    source_file: str | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        require(
            self.source in MODEL_NAMES,
            f"unknown transfer source {self.source!r}; use one of {', '.join(MODEL_NAMES)}",
        )
        require(
            self.fresh in VERTEX_SCOPES,
            f"unknown vertex scope {self.fresh!r}; use one of {', '.join(VERTEX_SCOPES)}",
        )
        require(
            self.seed is None or self.seed >= 0,
            f"train.transfer.seed must be 0 or more, got {self.seed}",
        )
        if self.source_file is not None and self.source_file.startswith(PRETRAINED_PREFIX):
            _, sep, model = self.source_file.removeprefix(PRETRAINED_PREFIX).partition("/")
            require(
                bool(sep) and model == self.source,
                f"train.transfer.source_file {self.source_file!r} must read "
                f"{PRETRAINED_PREFIX}<dataset>/{self.source} (the source model)",
            )

    @property
    def pretrained(self) -> tuple[str, str] | None:
        """(dataset, model) of a ``pretrained:`` source, else None."""
        if self.source_file is None or not self.source_file.startswith(PRETRAINED_PREFIX):
            return None
        dataset, _, model = self.source_file.removeprefix(PRETRAINED_PREFIX).partition("/")
        return dataset, model


@dataclasses.dataclass(frozen=True)
class TrainSection:
    """Adam on the P2 loss for ``epochs`` passes (may be fractional); ``frozen`` lists parameter
    groups (`FREEZABLE`) kept at their initial values."""

    epochs: float = _PAPER_TRAINING.epochs
    batch_size: int = _PAPER_TRAINING.batch_size
    learning_rate: float = _PAPER_TRAINING.learning_rate
    beta1: float = _PAPER_TRAINING.beta1
    beta2: float = _PAPER_TRAINING.beta2
    eps: float = _PAPER_TRAINING.eps
    checkpoint_every: int = 469
    log_every: int = _PAPER_TRAINING.log_every
    frozen: tuple[str, ...] = ()
    transfer: Transfer | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "learning_rate", "checkpoint_every", "log_every"):
            _positive(f"train.{name}", getattr(self, name))
        unknown = set(self.frozen) - set(FREEZABLE)
        require(
            not unknown,
            f"train.frozen: unknown parameter group(s) {sorted(unknown)}; "
            f"use {', '.join(FREEZABLE)}",
        )


@dataclasses.dataclass(frozen=True)
class EmaSection:
    """The released code's EMA schedule (see `qhd_lib.train.ema_decay`)."""

    update_after_step: int = _PAPER_TRAINING.ema_update_after_step
    update_every: int = _PAPER_TRAINING.ema_update_every
    inv_gamma: float = _PAPER_TRAINING.ema_inv_gamma
    power: float = _PAPER_TRAINING.ema_power
    max_decay: float = _PAPER_TRAINING.ema_max_decay

    def __post_init__(self) -> None:
        _positive("ema.update_every", self.update_every)
        require(0 <= self.max_decay < 1, f"ema.max_decay must lie in [0, 1), got {self.max_decay}")


@dataclasses.dataclass(frozen=True)
class SamplingSection:
    """How images are drawn: ancestral DDPM over all T steps (the paper) or DDIM over ``steps``;
    ``batch`` images at once (one noise key each); with ``chunk`` set, every ``chunk`` images are
    saved as they are finished, so a killed evaluation resumes at its next chunk."""

    sampler: str = "ddpm"
    steps: int | None = None
    batch: int = 500
    chunk: int | None = None

    def __post_init__(self) -> None:
        require(
            self.sampler in SAMPLERS,
            f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}",
        )
        if self.sampler == "ddpm":
            require(
                self.steps is None,
                "DDPM runs all diffusion.timesteps steps; leave "
                "sampling.steps unset or use sampling.sampler=ddim",
            )
        else:
            _positive("sampling.steps", self.steps)
        _positive("sampling.batch", self.batch)
        _positive("sampling.chunk", self.chunk, optional=True)
        require(
            self.chunk is None or self.chunk % self.batch == 0,
            f"sampling.chunk {self.chunk} must be a multiple of sampling.batch {self.batch}",
        )


@dataclasses.dataclass(frozen=True)
class EvaluationSection:
    """When and how the EMA parameters are measured: ``samples`` images at each of ``epochs``,
    FID/KID/IS against the first ``n_real`` images of ``real_split``."""

    epochs: tuple[float, ...] = (1.0, 10.0, 20.0)
    samples: int = 7_000
    n_real: int = 7_000
    real_split: str = "train"
    metrics: bool = True

    def __post_init__(self) -> None:
        require(bool(self.epochs), "evaluation.epochs is empty; give at least one, e.g. 1,10,20")
        object.__setattr__(self, "epochs", tuple(sorted({float(e) for e in self.epochs})))
        _positive("evaluation.samples", self.samples)
        _positive("evaluation.n_real", self.n_real)
        require(
            self.real_split in data.SPLITS,
            f"unknown split {self.real_split!r}; use one of {', '.join(data.SPLITS)}",
        )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run: a column of Table 1/2 (or a control) at some protocol, with one seed.

    ``deadline_s`` bounds one invocation (seconds), not what the run computes: a resume may
    change it, and it is left out of :meth:`identity`. ``matmul_precision`` (`MATMUL_PRECISIONS`)
    is float32 "highest" for the paper's protocol: on a GPU, JAX's default would use TF32.
    """

    protocol: str = "paper"
    seed: int = 42
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    diffusion: DiffusionSection = DiffusionSection()
    train: TrainSection = TrainSection()
    ema: EmaSection = EmaSection()
    sampling: SamplingSection = SamplingSection()
    evaluation: EvaluationSection = EvaluationSection()
    matmul_precision: str = "highest"
    deadline_s: float | None = None

    def __post_init__(self) -> None:
        require(self.seed >= 0, f"seed must be 0 or more, got {self.seed}")
        require(
            self.matmul_precision in MATMUL_PRECISIONS,
            f"unknown matmul_precision {self.matmul_precision!r}; use one of "
            f"{', '.join(MATMUL_PRECISIONS)} (highest: float32, the paper's protocol)",
        )
        _positive("deadline_s", self.deadline_s, optional=True)
        epochs = self.train.epochs
        bad = [e for e in self.evaluation.epochs if not 0 < e <= epochs]
        require(
            not bad,
            f"evaluation epochs {bad} lie outside (0, {epochs:g}] (--eval-epochs, "
            "--epochs); evaluate within the run",
        )
        transfer = self.train.transfer
        if transfer is not None:
            require(
                0 < transfer.source_epochs < epochs,
                f"train.transfer.source_epochs (--transfer-epochs) must lie between 0 and "
                f"train.epochs (--epochs) = {epochs:g}, e.g. --epochs 20 --transfer-epochs 19 "
                "for the paper's 19+1",
            )
            if transfer.pretrained is not None:
                require(
                    transfer.pretrained[0] == self.data.dataset,
                    f"the pretrained source {transfer.source_file!r} was trained on "
                    f"{transfer.pretrained[0]}, not on {self.data.dataset}",
                )
            early = [e for e in self.evaluation.epochs if e <= transfer.source_epochs]
            require(
                not early,
                f"evaluation epochs {early} fall in the transfer source's training; "
                f"evaluate after epoch {transfer.source_epochs:g}",
            )
        if self.sampling.steps is not None:
            require(
                self.sampling.steps <= self.diffusion.timesteps,
                f"sampling.steps {self.sampling.steps} exceeds diffusion.timesteps "
                f"{self.diffusion.timesteps}",
            )
        variant = VARIANTS.get(self.model.name)
        if variant is not None:
            require(
                set(variant.frozen) <= set(self.train.frozen),
                f"model {self.model.name} trains with train.frozen={list(variant.frozen)}",
            )

    @property
    def sampling_seed(self) -> int:
        """The seed of the sampling noise: the second phase's seed for a transfer run."""
        transfer = self.train.transfer
        return transfer.seed if transfer is not None and transfer.seed is not None else self.seed

    def train_config(
        self, epochs: float, *, seed: int | None = None, stream: int = 0
    ) -> train.TrainConfig:
        """The training loop's settings for one phase of ``epochs`` (default seed: the run's)."""
        t, e = self.train, self.ema
        return train.TrainConfig(
            epochs=epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            beta1=t.beta1,
            beta2=t.beta2,
            eps=t.eps,
            seed=self.seed if seed is None else seed,
            timesteps=self.diffusion.timesteps,
            beta_schedule=self.diffusion.beta_schedule,
            p2_gamma=self.diffusion.p2_gamma,
            p2_k=self.diffusion.p2_k,
            ema_update_after_step=e.update_after_step,
            ema_update_every=e.update_every,
            ema_inv_gamma=e.inv_gamma,
            ema_power=e.power,
            ema_max_decay=e.max_decay,
            checkpoint_every=t.checkpoint_every,
            log_every=t.log_every,
            stream=stream,
            frozen=t.frozen,
        )

    def to_dict(self) -> dict[str, Any]:
        """The whole tree as JSON-ready nested dicts (what run.json stores)."""
        return _jsonable(dataclasses.asdict(self))

    def identity(self) -> dict[str, Any]:
        """:meth:`to_dict` without the per-invocation ``deadline_s``: equal for one run."""
        return {k: v for k, v in self.to_dict().items() if k != "deadline_s"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value
