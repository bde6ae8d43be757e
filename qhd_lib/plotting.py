"""Figures in the book's one style. Every chapter draws through these helpers.

Helpers are added here as chapters need them; keep one function per kind of figure.
"""

from __future__ import annotations

from typing import Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

PALETTE: dict[str, str] = {
    "classical": "#4C72B0",
    "quantum": "#C44E52",
    "hybrid": "#8172B2",
    "paper": "#55A868",
    "neutral": "#7f7f7f",
}


def use_book_style() -> None:
    """Apply the book's matplotlib style (sizes, grid, colour cycle)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 120,
            "savefig.bbox": "tight",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.frameon": False,
            "image.cmap": "gray",
            "axes.prop_cycle": mpl.cycler(color=list(PALETTE.values())),
        }
    )


def image_grid(
    images: np.ndarray,
    ncols: int = 8,
    titles: Sequence[str] | None = None,
    scale: float = 1.2,
    value_range: tuple[float, float] = (-1.0, 1.0),
    suptitle: str | None = None,
) -> plt.Figure:
    """Show grayscale images (N, H, W) or (N, H, W, 1) in a grid; values in ``value_range``."""
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[..., 0]
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    ncols = min(ncols, n) if n else 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i], vmin=value_range[0], vmax=value_range[1], cmap="gray")
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
