"""One U-Net for every column of the paper's tables; a `ModelConfig` says which block goes where.

The wiring follows denoising-diffusion-flax (dim 10, multipliers 1, 2, 3, 4, GroupNorm with 10
groups); parameter names show the architecture (``down_1.resblock_0.conv_0.theta``). The hybrids
are this same network with the vertex ResNet blocks (QVU-Net, Sect. 3.1) or the level-1 encoder
blocks (QuanvU-Net, Sect. 3.2) swapped for quantum ones by `ModelConfig.resnet_block`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from qhd_lib import paper
from qhd_lib.circuits import ANSATZ_NAMES
from qhd_lib.errors import ConfigError
from qhd_lib.models.controls import GroupedVertexBlock
from qhd_lib.models.layers import AttnBlock, Downsample, ResnetBlock, TimeEmbedding, Upsample
from qhd_lib.models.quantum import (
    GROUP,
    PATCH,
    PATCH_STRIDES,
    QUANTUM_BLOCKS,
    check_executor,
    patch_count,
    valid_patch_strides,
)
from qhd_lib.models.released import RELEASED_BLOCKS

VERTEX_KINDS = ("classical", "partial", "full", "grouped")
PAPER_ANSATZE = ("hqconv", "fqconv")
IMAGE_SIZE = 28  # MNIST and Fashion-MNIST; the downsample kernels are chosen for it (28→14→7→2)


def downsample_kernel(level: int, levels: int) -> int:
    """Kernel of the stride-2 downsample after encoder ``level``: 4×4, except 7×7 for the last
    one, which takes 7×7 to the 2×2 vertex."""
    return 7 if level == levels - 2 else 4


def downsample_size(size: int, kernel: int) -> int:
    """Side of a stride-2 conv's output with padding 1, as in `Downsample`."""
    return (size + 2 - kernel) // 2 + 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which blocks the U-Net uses where, plus its classical sizes (images are always 28×28).

    - ``vertex``: "classical", "partial" (``q`` circuits per layer + a conv, 1/7HQConv),
      "full" (circuits only, FullHQConv) for both vertex ResNet blocks, or "grouped" (the Full
      vertex with every circuit replaced by a classical layer of the same size, a control:
      `qhd_lib.models.controls`).
    - ``quanv_level``: encoder level (0-based, as in the parameter names) whose two ResNet blocks
      become QuanResNet blocks; the paper's QuanvU-Net uses level 1 (14×14).
    - ``ansatz``/``layers``: the 12-qubit circuit (HQConv or FQConv, 3 layers in the paper).
    - ``patch_stride``: how far the quanvolutional filter moves, 2 (the paper) or 1; 2 needs
      an even-sized level (not level 2's 7×7).
    - ``released_code``: build the released code's blocks (`qhd_lib.models.released`) and its
      HQConv for the audit: dropped second-layer circuit outputs, the second quanvolution
      reading the block input, a shared 4-qubit circuit, pixel-major qubits.
    - ``executor``: "jax" (fast, jit/grad), "pennylane" (cross-check, forward only), or finite
      shots and/or exact noise written ``"shots=S,seed=N,depolarizing=p,readout=ε"`` (any
      subset; `qhd_lib.models.quantum.configured_executor`).
    """

    name: str = "classical"
    vertex: str = "classical"
    q: int = 0
    ansatz: str = "hqconv"
    layers: int = 3
    quanv_level: int | None = None
    patch_stride: int = 2
    released_code: bool = False
    executor: str = "jax"
    dim: int = 10
    dim_mults: tuple[int, ...] = (1, 2, 3, 4)
    groups: int = 10
    channels: int = 1
    heads: int = 4
    dim_head: int = 32

    def __post_init__(self) -> None:
        if self.vertex not in VERTEX_KINDS:
            raise ConfigError(
                f"unknown vertex {self.vertex!r}; use one of {', '.join(VERTEX_KINDS)}"
            )
        max_q = self.vertex_width // GROUP
        if self.vertex == "partial" and not 1 <= self.q <= max_q:
            raise ConfigError(
                f"q={self.q} is outside 1..{max_q}: a {self.vertex_width}-channel vertex holds "
                f"at most {max_q} groups of 3 channels (use vertex='full' for all of them)"
            )
        if self.vertex != "partial" and self.q:
            raise ConfigError(f"q={self.q} only applies to vertex='partial'; leave q=0")
        if self.vertex != "classical" and self.level_sizes[-1] != PATCH:
            size = self.level_sizes[-1]
            raise ConfigError(
                f"a quantum vertex needs the 2×2 vertex of four encoder levels; dim_mults="
                f"{self.dim_mults} gives {size}×{size}; use vertex='classical' or 4 multipliers"
            )
        if self.ansatz not in PAPER_ANSATZE:
            raise ConfigError(
                f"unknown ansatz {self.ansatz!r}; use one of {', '.join(PAPER_ANSATZE)} "
                "(released_code=True selects the released HQConv)"
            )
        if self.released_code and self.vertex == "grouped":
            raise ConfigError("the grouped (classical) vertex has no released-code variant")
        if self.released_code and self.ansatz != "hqconv":
            raise ConfigError(
                "released_code=True reproduces the released HQConv circuits only; "
                "use an hqconv configuration (the paper's tables report HQConv)"
            )
        if not isinstance(self.layers, int) or self.layers < 1:
            raise ConfigError(f"layers must be a positive integer, got {self.layers!r}")
        self._check_quanv_level()
        check_executor(self.executor)

    def _check_quanv_level(self) -> None:
        """The quanvolutional level exists and its patch stride covers every pixel there."""
        if self.patch_stride not in PATCH_STRIDES:
            raise ConfigError(
                f"patch stride {self.patch_stride!r} is not supported; use 1 (overlapping "
                "patches, outputs averaged) or 2 (disjoint patches, the paper)"
            )
        if self.quanv_level is None:
            return
        sizes = self.level_sizes
        if not 0 <= self.quanv_level < len(sizes):
            raise ConfigError(
                f"quanv_level {self.quanv_level} is not an encoder level 0..{len(sizes) - 1}"
            )
        size = sizes[self.quanv_level]
        valid = valid_patch_strides((size, size))
        if self.patch_stride not in valid:
            even = [level for level, s in enumerate(sizes) if s % 2 == 0]
            raise ConfigError(
                f"patch stride {self.patch_stride} leaves pixels of encoder level "
                f"{self.quanv_level} ({size}×{size}) outside every 2×2 patch; use patch_stride="
                f"{valid[0]} there, or quanv_level in {even} for patch stride 2"
            )

    @property
    def level_sizes(self) -> tuple[int, ...]:
        """Side of the feature map at each encoder level: (28, 14, 7, 2); the last is the
        vertex."""
        levels = len(self.dim_mults)
        sizes = [IMAGE_SIZE]
        for level in range(levels - 1):
            sizes.append(downsample_size(sizes[-1], downsample_kernel(level, levels)))
        return tuple(sizes)

    @property
    def vertex_width(self) -> int:
        """Channels at the vertex: dim · last multiplier (40)."""
        return self.dim * self.dim_mults[-1]

    @property
    def circuit(self) -> str:
        """The ansatz name the circuits are built from (the released HQConv when auditing)."""
        return "released_hqconv" if self.released_code else self.ansatz

    def circuit_runs(self) -> dict[int, int]:
        """Circuit executions per image and network evaluation, keyed by qubits per circuit.

        Two blocks of two spatial layers each: at the vertex one circuit per 3-channel group on
        the single 2×2 patch (plus the Full vertex's 4-qubit circuit), in the quanvolutional
        level one circuit per patch position. A quantum processor would run each separately.
        """
        runs: dict[int, int] = {}
        layers = 2 * 2  # blocks × spatial layers
        if self.vertex in ("partial", "full"):
            groups, leftover = divmod(self.vertex_width, GROUP)
            runs[12] = layers * (self.q if self.vertex == "partial" else groups)
            if self.vertex == "full" and leftover:
                runs[PATCH * PATCH] = layers
        if self.quanv_level is not None:
            side = patch_count(self.level_sizes[self.quanv_level], self.patch_stride)
            runs[12] = runs.get(12, 0) + layers * side * side
        return runs

    def resnet_block(self, position: str, features: int) -> ResnetBlock:
        """The ResNet block (classical or quantum) at ``position``, e.g. "mid.resblock_0";
        quantum blocks come from `qhd_lib.models.released` when ``released_code`` is set."""
        common = dict(features=features, groups=self.groups, name=position)
        quantum = dict(ansatz=self.circuit, layers=self.layers, executor=self.executor)
        blocks = RELEASED_BLOCKS if self.released_code else QUANTUM_BLOCKS
        if position.startswith("mid.") and self.vertex == "partial":
            return blocks["partial"](q=self.q, **quantum, **common)
        if position.startswith("mid.") and self.vertex == "full":
            return blocks["full"](**quantum, **common)
        if position.startswith("mid.") and self.vertex == "grouped":
            return GroupedVertexBlock(**common)
        if self.quanv_level is not None and position.startswith(f"down_{self.quanv_level}."):
            return blocks["quanv"](patch_stride=self.patch_stride, **quantum, **common)
        return ResnetBlock(**common)


def check_inputs(x: jax.Array, t: jax.Array, config: ModelConfig) -> None:
    """Images (B, 28, 28, channels) and integer time steps (B,)."""
    s, c = IMAGE_SIZE, config.channels
    if x.ndim != 4 or x.shape[1:] != (s, s, c):
        raise ValueError(
            f"the U-Net takes images of shape (B, {s}, {s}, {c}), got {tuple(x.shape)}; "
            f"add a channel axis with x[..., None] or resize to {s}×{s}"
        )
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"t must have shape ({x.shape[0]},) (one time step per image), got {t.shape}"
        )


class UNet(nn.Module):
    """The noise-prediction U-Net ε_θ(x_t, t) of the paper (Fig. 3 and 7), built from a config.

    Encoder: 7×7 conv to ``dim``; per level ResNet, ResNet, linear attention, downsample
    (28×28×10 → 14×14×10 → 7×7×20 → 2×2×30), then a 3×3 conv to the vertex width (2×2×40).
    Vertex: ResNet, full attention, ResNet. Decoder: the mirror image with skip
    concatenations; a final ResNet and 1×1 conv give ε̂ with the input's shape.
    """

    config: ModelConfig = ModelConfig()

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        cfg = self.config
        check_inputs(x, t, cfg)
        levels = len(cfg.dim_mults)
        temb = TimeEmbedding(cfg.dim, name="time_mlp")(t)
        h = nn.Conv(cfg.dim, (7, 7), padding=3, name="init_conv")(x)
        skips, sizes = [h], []
        for level in range(levels):
            width = h.shape[-1]
            sizes.append(h.shape[1])
            for i in range(2):
                h = cfg.resnet_block(f"down_{level}.resblock_{i}", width)(h, temb)
                if i == 1:
                    h = AttnBlock(True, cfg.heads, cfg.dim_head, name=f"down_{level}.attnblock")(h)
                skips.append(h)
            if level < levels - 1:
                h = Downsample(
                    cfg.dim * cfg.dim_mults[level],
                    downsample_kernel(level, levels),
                    name=f"down_{level}.downsample",
                )(h)
        h = nn.Conv(cfg.vertex_width, (3, 3), padding=1, name="down_to_mid.conv")(h)

        h = cfg.resnet_block("mid.resblock_0", cfg.vertex_width)(h, temb)
        h = AttnBlock(False, cfg.heads, cfg.dim_head, name="mid.attnblock")(h)
        h = cfg.resnet_block("mid.resblock_1", cfg.vertex_width)(h, temb)

        for level in reversed(range(levels)):
            width = cfg.dim * cfg.dim_mults[level]
            for i in range(2):
                h = jnp.concatenate([h, skips.pop()], axis=-1)
                h = cfg.resnet_block(f"up_{level}.resblock_{i}", width)(h, temb)
            h = AttnBlock(True, cfg.heads, cfg.dim_head, name=f"up_{level}.attnblock")(h)
            if level > 0:
                out = cfg.dim * cfg.dim_mults[level - 1]
                h = Upsample(out, sizes[level - 1], name=f"up_{level}.upsample")(h)
        h = nn.Conv(cfg.dim, (3, 3), padding=1, name="up_0.conv")(h)
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = cfg.resnet_block("final.resblock", cfg.dim)(h, temb)
        return nn.Conv(cfg.channels, (1, 1), name="final.conv")(h)


def _preset(name: str, **kwargs: Any) -> ModelConfig:
    return ModelConfig(name=name, **kwargs)


PRESETS: dict[str, ModelConfig] = {
    "classical": _preset("classical"),
    "1hqconv": _preset("1hqconv", vertex="partial", q=1),
    "7hqconv": _preset("7hqconv", vertex="partial", q=7),
    "fullhqconv": _preset("fullhqconv", vertex="full"),
    "1fqconv": _preset("1fqconv", vertex="partial", q=1, ansatz="fqconv"),
    "7fqconv": _preset("7fqconv", vertex="partial", q=7, ansatz="fqconv"),
    "fullfqconv": _preset("fullfqconv", vertex="full", ansatz="fqconv"),
    "quanvunet": _preset("quanvunet", vertex="partial", q=1, quanv_level=1),
}
MODEL_NAMES: tuple[str, ...] = tuple(PRESETS)
# Controls: not columns of the paper, built to test what its columns' results come from.
CONTROLS: dict[str, ModelConfig] = {
    "fullhqconv-classical": _preset("fullhqconv-classical", vertex="grouped"),
}
CONTROL_NAMES: tuple[str, ...] = tuple(CONTROLS)

# Parameter counts printed in the paper (Tables 1 and 2); QuanvU-Net's is discussed in chapter 6.
PAPER_PARAM_COUNTS: dict[str, int] = {
    name: n for name, n in paper.PARAMS.items() if name in PRESETS
}


def model_config(name: str, *, released_code: bool = False, **overrides: Any) -> ModelConfig:
    """The named paper configuration, optionally with the released code's behaviour or changes
    (e.g. ``model_config("1hqconv", layers=2)``, ``model_config("quanvunet", patch_stride=1)``);
    ``name`` may also be a control (`CONTROLS`)."""
    known = {**PRESETS, **CONTROLS}
    if name not in known:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(known)}")
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ConfigError(
            f"unknown ModelConfig field(s) {sorted(unknown)}; choose from {', '.join(fields)}"
        )
    return dataclasses.replace(known[name], released_code=released_code, **overrides)


def make_model(name: str, *, released_code: bool = False, **overrides: Any) -> UNet:
    """The U-Net for a paper column: ``make_model("7hqconv")``; see `model_config`."""
    return UNet(model_config(name, released_code=released_code, **overrides))


def dummy_inputs(config: ModelConfig, batch: int = 1) -> tuple[jax.Array, jax.Array]:
    """Zero images and time steps of the right shapes for ``model.init``."""
    s = IMAGE_SIZE
    return jnp.zeros((batch, s, s, config.channels), jnp.float32), jnp.zeros((batch,), jnp.int32)


def init_params(model: UNet, key: jax.Array, batch: int = 1) -> Any:
    """``model.init`` on dummy inputs; returns the ``params`` collection."""
    return model.init(key, *dummy_inputs(model.config, batch))["params"]


def param_shapes(model: UNet) -> Any:
    """The parameter tree as shapes only (no compute, no memory): ``jax.eval_shape`` of init."""
    return jax.eval_shape(lambda k: init_params(model, k), jax.random.key(0))


def count_params(params: Any) -> int:
    """Total number of scalar parameters in a tree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(p.shape) for p in jax.tree_util.tree_leaves(params)))


def count_by_module(params: Mapping[str, Any]) -> dict[str, int]:
    """Parameters per top-level module (``time_mlp``, ``down_0.resblock_0``, ...), in order."""
    return {name: count_params(sub) for name, sub in params.items()}


def quantum_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The circuit parameters only (leaves named ``theta`` / ``tail_theta``), flattened by path."""
    flat = {
        "/".join(str(getattr(k, "key", k)) for k in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
    }
    return {k: v for k, v in flat.items() if k.split("/")[-1] in ("theta", "tail_theta")}


def circuit_gradients(
    module: nn.Module, *inputs: jax.Array, seed: int = 0
) -> dict[str, np.ndarray]:
    """Gradients of a generic scalar of ``module``'s output w.r.t. its circuit parameters.

    The scalar, Σ sin(3·output), depends on every output value non-linearly, so a parameter whose
    gradient is exactly 0 never influences the output: it is dead, however long one trains.
    """
    params = jax.jit(module.init)(jax.random.key(seed), *inputs)["params"]

    def loss(p: Any) -> jax.Array:
        return jnp.sum(jnp.sin(3.0 * module.apply({"params": p}, *inputs)))

    return {k: np.asarray(v) for k, v in quantum_params(jax.jit(jax.grad(loss))(params)).items()}


def activation_shapes(model: UNet, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """Output shape of every top-level block, in call order (no compute: ``jax.eval_shape``)."""
    x, t = dummy_inputs(model.config, batch)
    shapes: dict[str, tuple[int, ...]] = {}

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and isinstance(module.parent, UNet):
            shapes.setdefault(module.name, tuple(out.shape))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda k: model.init(k, x, t), jax.random.key(0))
    return shapes


__all__ = [
    "ANSATZ_NAMES",
    "CONTROLS",
    "CONTROL_NAMES",
    "MODEL_NAMES",
    "PAPER_PARAM_COUNTS",
    "PRESETS",
    "ModelConfig",
    "UNet",
    "activation_shapes",
    "check_inputs",
    "circuit_gradients",
    "count_by_module",
    "count_params",
    "dummy_inputs",
    "init_params",
    "make_model",
    "model_config",
    "param_shapes",
    "quantum_params",
]
