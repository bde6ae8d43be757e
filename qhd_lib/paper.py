"""The paper's published numbers, transcribed once (De Falco et al. 2024, CC BY 4.0).

Tables 1 (Fashion-MNIST) and 2 (MNIST) after 20 epochs, and the epoch-1/10/20 values the text
quotes for figs. 10–12. Everything the book compares against comes from here; nothing here is
measured. A value is ``(mean, std)`` where the paper prints ``mean ± std``, a float otherwise.

Column keys are the model names of `qhd_lib.models` plus ``transfer``: classical for 19 epochs
then 1FQConv QVU-Net for 1 (MNIST), 18 + 2 on Fashion-MNIST. The paper prints the classical
U-Net's parameter count (483 321) for that column, although the network it evaluates has a
1FQConv vertex (`qhd_lib.models.make_model("1fqconv")` has fewer); the book keeps the printed value.
"""

from __future__ import annotations

Value = float | tuple[float, float]

SOURCE = (
    "De Falco, Ceschini, Sebastianelli, Le Saux, Panella: Quantum Hybrid Diffusion Models for "
    "Image Synthesis (2024), Tables 1 and 2 and Sect. 4.2"
)
DATASET_NAMES: dict[str, str] = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
COLUMNS: tuple[str, ...] = (
    "classical",
    "1hqconv",
    "7hqconv",
    "fullhqconv",
    "quanvunet",
    "transfer",
)
COLUMN_TITLES: dict[str, str] = {
    "classical": "Classical",
    "1hqconv": "1HQConv QVU-Net",
    "7hqconv": "7HQConv QVU-Net",
    "fullhqconv": "FullHQConv QVU-Net",
    "quanvunet": "QuanvU-Net",
    "transfer": "Transf. learning",
}
TRANSFER_EPOCHS: dict[str, tuple[int, int]] = {"mnist": (19, 1), "fashion_mnist": (18, 2)}

PARAMS: dict[str, int] = {
    "classical": 483_321,
    "1hqconv": 475_329,
    "7hqconv": 440_985,
    "fullhqconv": 429_993,
    "quanvunet": 474_293,
    "transfer": 483_321,
}

# Tables 1 and 2: metrics after 20 epochs, 7 000 generated images.
TABLES: dict[str, dict[str, dict[str, Value]]] = {
    "fashion_mnist": {
        "classical": {"fid": 39.4563, "kid": (0.0275, 0.0008), "is": (3.9783, 0.0777)},
        "1hqconv": {"fid": 39.9935, "kid": (0.0278, 0.0008), "is": (3.9787, 0.0550)},
        "7hqconv": {"fid": 40.3685, "kid": (0.0281, 0.0009), "is": (3.8158, 0.1360)},
        "fullhqconv": {"fid": 41.3882, "kid": (0.0294, 0.0009), "is": (3.8019, 0.0744)},
        "quanvunet": {"fid": 38.8, "kid": (0.0269, 0.0007), "is": (3.9087, 0.1485)},
        "transfer": {"fid": 38.6835, "kid": (0.0261, 0.0007), "is": (4.0527, 0.0890)},
    },
    "mnist": {
        "classical": {"fid": 45.2762, "kid": (0.0558, 0.0014), "is": (1.9152, 0.0355)},
        "1hqconv": {"fid": 45.3710, "kid": (0.0556, 0.0015), "is": (1.9090, 0.0325)},
        "7hqconv": {"fid": 43.0731, "kid": (0.0523, 0.0015), "is": (1.9256, 0.0205)},
        "fullhqconv": {"fid": 45.6503, "kid": (0.0559, 0.0015), "is": (1.9053, 0.0283)},
        "quanvunet": {"fid": 44.5144, "kid": (0.0545, 0.0015), "is": (1.9284, 0.0425)},
        "transfer": {"fid": 41.6646, "kid": (0.0493, 0.0013), "is": (1.9556, 0.0335)},
    },
}

# Values the text of Sect. 4.2 quotes at epochs 1 and 10 (figs. 10–12): (dataset, model, epoch).
IN_TEXT: dict[tuple[str, str, int], dict[str, Value]] = {
    ("fashion_mnist", "classical", 1): {"fid": 296.869, "is": (1.4164, 0.0122)},
    ("fashion_mnist", "fullhqconv", 1): {"fid": 295.7863, "is": (1.4454, 0.0057)},
    ("fashion_mnist", "quanvunet", 1): {"fid": 285.1551},
    ("fashion_mnist", "classical", 10): {"fid": 60.1476},
    ("fashion_mnist", "1hqconv", 10): {"fid": 52.5332},
    ("mnist", "classical", 1): {"fid": 311.0582, "kid": (0.4144, 0.0029), "is": (1.4936, 0.0142)},
    ("mnist", "fullhqconv", 1): {"fid": 299.7292, "kid": (0.3974, 0.0028), "is": (1.5930, 0.0239)},
}

# The paper's claims that a reproduction can check, in its own words (Sect. 1 and 4.2).
CLAIMS: tuple[dict[str, str], ...] = (
    {"id": "fewer-params", "claim": "up to about 11 % fewer parameters (FullHQConv QVU-Net)"},
    {
        "id": "epoch1",
        "claim": "hybrid networks beat the classical one after one epoch "
        "(faster learning with few epochs)",
    },
    {
        "id": "mnist-7hqconv",
        "claim": "MNIST: 7HQConv QVU-Net is best, about 2 FID points below "
        "the classical U-Net at epoch 20",
    },
    {
        "id": "fashion-quanvunet",
        "claim": "Fashion-MNIST: QuanvU-Net beats the classical U-Net at epoch 20",
    },
    {
        "id": "transfer",
        "claim": "transfer learning (classical → 1FQConv QVU-Net) improves on the "
        "classical U-Net: about 8 % FID on MNIST, 2 % on Fashion-MNIST",
    },
)


def mean_of(value: Value) -> float:
    """The printed mean of a table entry (the value itself when no ± is printed)."""
    return value[0] if isinstance(value, tuple) else float(value)


def table_rows(dataset: str) -> list[dict[str, object]]:
    """Table 1 (``fashion_mnist``) or 2 (``mnist``) as rows: column, params, FID, KID, IS."""
    if dataset not in TABLES:
        raise ValueError(f"the paper has tables for {', '.join(TABLES)}, not {dataset!r}")
    return [
        {"column": c, "title": COLUMN_TITLES[c], "params": PARAMS[c], **TABLES[dataset][c]}
        for c in COLUMNS
    ]
