"""The U-Net and its hybrids (Sect. 3.1 QVU-Net, Sect. 3.2 QuanvU-Net) for every paper column.

``make_model("7hqconv")`` returns a Flax module; ``model.init(key, x, t)`` and
``model.apply({"params": p}, x, t)`` take images x (B, 28, 28, 1) float32 and time steps t (B,)
int32 and return the noise estimate ε̂ with x's shape.
"""

from qhd_lib.models.layers import (
    Attention,
    AttnBlock,
    Downsample,
    LinearAttention,
    ResnetBlock,
    TimeEmbedding,
    Upsample,
    WeightStandardizedConv,
    sinusoidal_embedding,
    standardize_kernel,
)
from qhd_lib.models.quantum import (
    FullQResNetBlock,
    QResNetBlock,
    QuanResNetBlock,
    assemble_patches,
    extract_patches,
    patch_to_qubits,
    quanvolution,
    qubits_to_patch,
)
from qhd_lib.models.unet import (
    MODEL_NAMES,
    PAPER_PARAM_COUNTS,
    PRESETS,
    ModelConfig,
    UNet,
    activation_shapes,
    circuit_gradients,
    count_by_module,
    count_params,
    dummy_inputs,
    init_params,
    make_model,
    model_config,
    param_shapes,
    quantum_params,
)

__all__ = [
    "MODEL_NAMES",
    "PAPER_PARAM_COUNTS",
    "PRESETS",
    "Attention",
    "AttnBlock",
    "Downsample",
    "FullQResNetBlock",
    "LinearAttention",
    "ModelConfig",
    "QResNetBlock",
    "QuanResNetBlock",
    "ResnetBlock",
    "TimeEmbedding",
    "UNet",
    "Upsample",
    "WeightStandardizedConv",
    "activation_shapes",
    "assemble_patches",
    "circuit_gradients",
    "count_by_module",
    "count_params",
    "dummy_inputs",
    "extract_patches",
    "init_params",
    "make_model",
    "model_config",
    "param_shapes",
    "patch_to_qubits",
    "quanvolution",
    "qubits_to_patch",
    "quantum_params",
    "sinusoidal_embedding",
    "standardize_kernel",
]
