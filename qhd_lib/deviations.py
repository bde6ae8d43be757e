"""The paper, its released code and this book: every difference in one table.

`DEVIATIONS` is the data; ``python -m qhd_lib.deviations`` writes it as the book's page
``book/deviations.md`` (a test keeps the two equal). Each row names who deviates from the paper's
text — ``released code`` (what the paper's released code does instead), ``paper`` (a setting the
paper leaves out or states two ways), ``book`` (a choice of this book's CPU experiments) — what
the paper says, what happens instead, and where the book shows its effect (a chapter and section,
or "stated, no cell").
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "book" / "deviations.md"


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One difference between the paper's text and what is run or reported."""

    who: str  # "released code", "paper" or "book"
    topic: str
    paper: str
    instead: str
    shown_in: str  # MyST: a {doc} link to the chapter and the section's name, or "stated, no cell"


def _chapter(name: str, section: str) -> str:
    return f"{{doc}}`../notebooks/{name}`, *{section}*"


CH3, CH4, CH5, CH6 = (
    "03_quantum_conv_ansatze",
    "04_unet",
    "05_qvunet",
    "06_quanvunet",
)
CH7, CH8 = "07_training_sampling_metrics", "08_reproducing_the_paper"

DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "released code",
        "HQConv's A blocks",
        "each layer applies three A blocks (one per channel) and two B blocks: 28 parameters",
        "a loop bound of `n_qubits % 4` (0 for 12 qubits) skips every A block; only the two B "
        "blocks act, so 4 of the 28 parameters of a layer are used",
        _chapter(CH3, "The released HQConv"),
    ),
    Deviation(
        "released code",
        "qubit order of a patch",
        "a channel's 2×2 values sit on its own 4 qubits",
        "the 2×2×3 patch is flattened pixel-major (channel fastest), so the ansatz's 'channels' "
        "mix channels",
        _chapter(CH3, "The released HQConv"),
    ),
    Deviation(
        "released code",
        "direction of the controlled gates",
        "control $q_p$, target $q_{p+s}$",
        "reversed in both ansätze; the book follows the text for direction and the released "
        "code for the order of the pairs, which the text leaves open",
        _chapter(CH3, "HQConv and FQConv as gate lists"),
    ),
    Deviation(
        "released code",
        "second circuit layer of a partial QResNet",
        "both spatial layers of the block go through circuits",
        "the second layer's circuit outputs are computed and dropped (the first layer's are "
        "concatenated in their place), so those parameters get no gradient",
        _chapter(CH5, "What the released code does differently"),
    ),
    Deviation(
        "released code",
        "the Full vertex's 4-qubit circuit",
        "each spatial layer has its own circuits",
        "both layers use the first layer's 4-qubit parameters; the second set never trains",
        _chapter(CH5, "What the released code does differently"),
    ),
    Deviation(
        "released code",
        "input of QuanResNet's second quanvolution",
        "the second spatial layer reads the intermediate activations",
        "it reads patches of the block's input again, so the first quanvolution's outputs are "
        "never read and its 84 circuit parameters get no gradient",
        _chapter(CH6, "What the released code does differently"),
    ),
    Deviation(
        "released code",
        "P2 weighting's k",
        "γ = 1, k = 1",
        "k is read from the γ setting (both are 1, so the reported runs are unaffected)",
        "stated, no cell",
    ),
    Deviation(
        "released code",
        "length of transfer learning's second phase",
        "19 + 1 epochs (MNIST), 18 + 2 (Fashion-MNIST)",
        "1 000 fine-tuning steps in the released configuration (2.1 epochs)",
        _chapter(CH7, "Transfer learning"),
    ),
    Deviation(
        "paper",
        "attention at the vertex",
        "not described",
        "full attention with L2-normalised queries and keys and a fixed scale of 10 (the released "
        "code's, from denoising-diffusion-flax), linear attention elsewhere",
        _chapter(CH4, "Linear and full attention"),
    ),
    Deviation(
        "paper",
        "QuanvU-Net's parameter count",
        "474 293",
        "the architecture it describes has 473 817; no variant searched reproduces 474 293",
        _chapter(CH6, "The parameter count: 474 293 or 473 817?"),
    ),
    Deviation(
        "paper",
        "real images for FID and KID",
        "not stated",
        "the first N images of the training split in every run of the book (each run.json "
        "records evaluation.real_split)",
        _chapter(CH7, "Measuring: FID, KID and IS"),
    ),
    Deviation(
        "paper",
        "seeds and error bars",
        "one run per configuration (seed 42); the ± are spreads over subsets of one sample set",
        "three seeds fixed in advance (42, 43, 44), comparisons paired by seed with t-intervals",
        _chapter(CH8, "Comparisons, written down before any run"),
    ),
    Deviation(
        "book",
        "sampler of the CPU experiments",
        "1 000-step ancestral DDPM",
        "100-step DDIM (η = 0) from the same EMA parameters, so that 1 000 samples per model fit a "
        "2-core CPU",
        _chapter(CH8, "The protocol, fixed before the first run"),
    ),
    Deviation(
        "book",
        "number of samples and real images in the CPU experiments",
        "7 000 generated images",
        "1 000 generated images against 1 000 real ones; FID is biased upwards at small N, so only "
        "differences between models measured alike are set beside the paper's",
        _chapter(CH8, "The protocol, fixed before the first run"),
    ),
    Deviation(
        "book",
        "length of the pretrained models' training",
        "20 epochs (9 375 steps)",
        "10 epochs (4 688 steps) for the shipped MNIST classical and FullHQConv U-Nets",
        _chapter(CH8, "The pretrained models, ten epochs on"),
    ),
    Deviation(
        "book",
        "transfer learning at CPU scale",
        "19 + 1 epochs (MNIST)",
        "10 + 1 epochs from the pretrained classical U-Net, with a fresh Adam state and EMA, and "
        "a 'continue' baseline under the same procedure",
        _chapter(CH8, "Transfer learning, at CPU scale"),
    ),
)


def markdown() -> str:
    """The book's deviations page (``book/deviations.md``) as Markdown."""
    lines = [
        "# The paper, its released code and this book",
        "",
        "Every place where what runs differs from what the paper's text says, in one table. "
        "*Released code* rows describe the code the paper points to, read by this book's "
        "authors; the book's models follow the paper's text and offer the released behaviour as "
        "an option (`released_code=True`) so both can be compared. *Paper* rows are settings the "
        "paper leaves out or states two ways. *Book* rows are this book's own choices for "
        "experiments that fit a 2-core CPU. The table is written from `qhd_lib.deviations` by "
        "`python -m qhd_lib.deviations`.",
        "",
        "| who | what | the paper | instead | shown in |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {d.who} | {d.topic} | {d.paper} | {d.instead} | {d.shown_in} |" for d in DEVIATIONS
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write the page (``--check``: only report whether it is current)."""
    if "--check" in sys.argv[1:]:
        current = PAGE.is_file() and PAGE.read_text() == markdown()
        print(f"{PAGE} is {'current' if current else 'stale: run python -m qhd_lib.deviations'}")
        return 0 if current else 1
    PAGE.write_text(markdown())
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
