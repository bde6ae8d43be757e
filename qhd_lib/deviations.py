"""Where this book does something other than the paper says, as data for the book's deviations page.

Each row names who deviates (``book``: a choice of this book's experiments; ``released code``: the
paper's released code; ``paper``: the paper's own text disagreeing with itself or leaving a
setting out), what the paper says, what is done instead, and where the book shows it (a chapter,
or "stated, no cell").
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One difference between the paper and what is run or reported."""

    who: str  # "book", "released code" or "paper"
    topic: str
    paper: str
    instead: str
    shown_in: str


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "book",
        "sampler in the epoch-1 experiment",
        "1 000-step ancestral DDPM",
        "100-step DDIM (η = 0) from the same EMA parameters, so that 1 000 samples per model fit a "
        "2-core CPU",
        "chapter 8, The protocol",
    ),
    Deviation(
        "book",
        "number of samples and real images in the epoch-1 experiment",
        "7 000 generated images",
        "1 000 generated images against 1 000 real ones; FID is biased upwards at small N, so only "
        "differences between models measured alike are compared with the paper's",
        "chapter 8, The protocol; chapter 7 (FID's bias at small N)",
    ),
    Deviation(
        "paper",
        "real images for FID and KID",
        "not stated",
        "the first N images of the training split, in every run of the book (recorded in each "
        "run.json as evaluation.real_split)",
        "chapter 7, The metrics",
    ),
    Deviation(
        "book",
        "seeds",
        "one run per configuration, seed 42",
        "three seeds fixed in advance (42, 43, 44), comparisons paired by seed with t-intervals",
        "chapter 8, Comparisons",
    ),
    Deviation(
        "book",
        "length of the pretrained models' training",
        "20 epochs (9 375 steps)",
        "10 epochs (4 688 steps) for the shipped MNIST classical and FullHQConv models",
        "chapter 8, The pretrained models",
    ),
    Deviation(
        "book",
        "transfer learning at CPU scale",
        "19 + 1 epochs (MNIST), 18 + 2 (Fashion-MNIST)",
        "10 + 1 epochs from the pretrained classical U-Net (planned)",
        "stated, no cell yet",
    ),
)
