"""Figures in the book's one style. Every chapter draws through these helpers.

Helpers are added here as chapters need them; keep one function per kind of figure.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def sample_mosaic(images: np.ndarray, side: int = 6) -> np.ndarray:
    """The first ``side``² uint8 samples (N, H, W) tiled into one image, each in a 1-pixel grey
    frame (value 128) so that neighbouring samples stay apart; ready for ``ax.imshow``."""
    framed = np.pad(
        np.asarray(images)[: side * side], ((0, 0), (1, 1), (1, 1)), constant_values=128
    )
    if len(framed) < side * side:
        raise ValueError(f"a {side}×{side} mosaic needs {side * side} samples, got {len(framed)}")
    h, w = framed.shape[1:]
    return framed.reshape(side, side, h, w).transpose(0, 2, 1, 3).reshape(side * h, side * w)


def curves(
    x: np.ndarray,
    ys: dict[str, np.ndarray],
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    title: str | None = None,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Line plot of several named curves over a shared x (e.g. alpha_bar_t of two schedules
    over t)."""
    if ax is None:
        _, ax = plt.subplots()
    for label, y in ys.items():
        ax.plot(x, np.asarray(y), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    if len(ys) > 1:
        ax.legend()
    return ax.figure


def qubit_connectivity(ansatz, ax: plt.Axes | None = None, title: str | None = None) -> plt.Axes:
    """Qubits of an ansatz on the image grid (channels side by side, 2×2 pixels each) with an
    arrow control → target for every coupled pair; the label counts the gates on that pair."""
    import matplotlib.patches as mpatches

    ax = ax if ax is not None else plt.subplots(figsize=(1.9 * ansatz.channels + 0.6, 2.4))[1]
    side = int(round(np.sqrt(ansatz.pixels)))
    width = max(side, ansatz.pixels // side)

    def position(q: int) -> tuple[float, float]:
        c, p = divmod(q, ansatz.pixels)
        return c * (width + 1.2) + p % width, -(p // width)

    pairs: dict[tuple[int, int], int] = {}
    for gate in ansatz.gates:
        if gate.control is not None:
            pairs[(gate.control, gate.target)] = pairs.get((gate.control, gate.target), 0) + 1
    for c in range(ansatz.channels):
        x0, _ = position(c * ansatz.pixels)
        ax.add_patch(
            mpatches.FancyBboxPatch(
                (x0 - 0.4, -(ansatz.pixels // width) + 0.6),
                width - 0.2,
                ansatz.pixels // width - 0.2,
                boxstyle="round,pad=0.05",
                alpha=0.08,
                color=PALETTE["classical"],
            )
        )
        ax.text(x0 + (width - 1) / 2, 0.75, f"channel {c}", ha="center", fontsize=9)
    for (control, target), _count in pairs.items():
        (x1, y1), (x2, y2) = position(control), position(target)
        same = control // ansatz.pixels == target // ansatz.pixels
        ax.annotate(
            "",
            xy=(x2, y2),
            xytext=(x1, y1),
            arrowprops=dict(
                arrowstyle="-|>",
                color=PALETTE["quantum" if same else "hybrid"],
                shrinkA=9,
                shrinkB=9,
                lw=1.2,
                connectionstyle="arc3,rad=0.25" if not same else "arc3,rad=0.15",
            ),
        )
    for q in range(ansatz.n_qubits):
        x, y = position(q)
        ax.scatter([x], [y], s=330, color="white", edgecolor=PALETTE["neutral"], zorder=3)
        ax.text(x, y, str(q), ha="center", va="center", fontsize=8, zorder=4)
    ax.set_xlim(-0.8, ansatz.channels * (width + 1.2) - 1.0)
    ax.set_ylim(-(ansatz.pixels // width) + 0.3, 1.1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title or f"{ansatz.name}, stride {ansatz.stride}")
    return ax


def sensitivity_map(
    jacobian: np.ndarray, ax: plt.Axes | None = None, pixels: int = 4, title: str = ""
) -> plt.Axes:
    """|∂⟨Z_q⟩/∂x_j| as a heat map: rows are outputs q, columns inputs j (channel blocks marked)."""
    ax = ax if ax is not None else plt.subplots(figsize=(3.6, 3.2))[1]
    image = ax.imshow(np.abs(jacobian), cmap="magma", vmin=0)
    n_out, n_in = jacobian.shape
    for k in range(pixels, n_in, pixels):
        ax.axvline(k - 0.5, color="white", lw=0.8)
    for k in range(pixels, n_out, pixels):
        ax.axhline(k - 0.5, color="white", lw=0.8)
    ax.set_xlabel("input qubit j")
    ax.set_ylabel("output ⟨Z_q⟩")
    ax.grid(False)
    ax.set_title(title)
    plt.colorbar(image, ax=ax, fraction=0.046)
    return ax


def speed_bars(cases: list[dict], ax: plt.Axes | None = None) -> plt.Axes:
    """Seconds per call of the fast simulator vs PennyLane's fastest finished mode (log scale),
    one group per case of ``results/bench_circuits.json``; cases no PennyLane mode finished are
    left out (the table beside the figure says why)."""
    cases = [c for c in cases if c.get("speedup")]
    ax = ax if ax is not None else plt.subplots(figsize=(7.5, 3.4))[1]
    labels = [
        f"{c['ansatz']}\n{c['batch']} {'fwd' if c['mode'] == 'forward' else 'fwd+bwd'}"
        for c in cases
    ]
    x = np.arange(len(cases))
    fast = [c["fast"]["seconds"] for c in cases]
    slow = [c["peers"][c["fastest_peer"]]["seconds"] for c in cases]
    ax.bar(x - 0.2, slow, 0.4, label="PennyLane, fastest mode", color=PALETTE["neutral"])
    ax.bar(x + 0.2, fast, 0.4, label="qhd_lib simulator", color=PALETTE["quantum"])
    for xi, c, s_ in zip(x, cases, slow):
        ax.text(xi, s_ * 1.3, f"{c['speedup']:.0f}×", ha="center", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=max(slow) * 15)  # room for the ratios and the legend above the bars
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("seconds per call")
    ax.legend(loc="upper left", ncols=2, fontsize=8, frameon=False)
    return ax


def paired_seeds(
    runs: dict[str, dict[str, dict]],
    models: Sequence[str],
    titles: dict[str, str],
    metric: str = "fid",
    ax: plt.Axes | None = None,
) -> plt.Axes:
    """One line per seed across ``models`` (``runs[model][seed][metric]``, as the epoch-1
    comparison stores them): models of one seed share data order, initialisation outside the
    changed blocks and sampling noise, so the slope of a line is that seed's paired difference.
    A model with no run of a seed leaves a gap in that seed's line."""
    ax = ax if ax is not None else plt.subplots(figsize=(7.5, 3.4))[1]
    seeds = sorted({s for m in models for s in runs.get(m, {})}, key=int)
    markers = "osD^v"
    for k, seed in enumerate(seeds):
        y = [runs.get(m, {}).get(seed, {}).get(metric, np.nan) for m in models]
        ax.plot(range(len(models)), y, marker=markers[k % len(markers)], label=f"seed {seed}")
    ax.set_xticks(range(len(models)), [titles[m].replace(", ", ",\n") for m in models], fontsize=8)
    ax.set_xlim(-0.4, len(models) - 0.6)
    ax.set_ylabel(metric.upper())
    if seeds:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no runs yet", transform=ax.transAxes, ha="center", va="center")
    return ax


def paired_intervals(
    comparisons: list[dict], metric: str = "fid", ax: plt.Axes | None = None
) -> plt.Axes:
    """Each comparison's per-seed differences (dots), their mean and 95 % interval (bar), and the
    paper's single-run difference (a green diamond) where it printed one; 0 marked."""
    ax = ax if ax is not None else plt.subplots(figsize=(7.5, 3.0))[1]
    label = "paper (one run)"  # on the first diamond only
    for row, c in enumerate(comparisons):
        test = c[metric]
        ax.scatter(
            test["differences"],
            [row] * len(test["differences"]),
            color=PALETTE["quantum"],
            zorder=3,
        )
        if test.get("interval"):
            lo, hi = test["interval"]
            ax.plot([lo, hi], [row, row], color=PALETTE["quantum"], lw=2, alpha=0.5)
            ax.plot([test["mean_difference"]] * 2, [row - 0.2, row + 0.2], color=PALETTE["quantum"])
        published = (c.get("paper_difference") or {}).get(metric)
        if published is not None:
            ax.scatter(
                [published],
                [row],
                marker="D",
                color=PALETTE["paper"],
                zorder=4,
                label=label,
            )
            label = None
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(comparisons)), [f"({c['id']})" for c in comparisons])
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} difference (model − baseline), per seed and 95 % interval")
    if label is None:
        ax.legend(fontsize=8, loc="best")
    return ax


def unet_shapes(shapes: dict[str, tuple[int, ...]], title: str | None = None) -> plt.Figure:
    """Draw a U-Net's activation shapes in call order: height = resolution, label = H×W×C.

    ``shapes`` maps block names to output shapes (B, H, W, C), e.g. from
    `qhd_lib.models.activation_shapes`; quantum blocks can be highlighted by the caller.
    """
    names = [n for n, s in shapes.items() if len(s) == 4]
    res = np.array([shapes[n][1] for n in names])
    ch = np.array([shapes[n][3] for n in names])
    fig, ax = plt.subplots(figsize=(10, 3.8))
    x = np.arange(len(names))
    ax.plot(x, res, color=PALETTE["neutral"], lw=1, zorder=1)
    colors = [PALETTE["quantum"] if n.startswith("mid.") else PALETTE["classical"] for n in names]
    ax.scatter(x, res, s=8 * ch, c=colors, zorder=2)
    last = None
    for i, _name in enumerate(names):
        label = f"{res[i]}×{res[i]}×{ch[i]}"
        if label != last:
            ax.annotate(
                label,
                (i, res[i]),
                textcoords="offset points",
                xytext=(0, 9),
                ha="center",
                fontsize=7,
            )
        last = label
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_yticks([2, 7, 14, 28], ["2", "7", "14", "28"])
    ax.set_ylabel("resolution (pixels)")
    ax.set_ylim(1.3, 45)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def transfer_map(
    counts: dict[str, dict[str, tuple[int, int]]], ax: plt.Axes | None = None
) -> plt.Axes:
    """Which parameters a transfer copies and which it re-initialises, module by module.

    ``counts[arm][module] = (copied, fresh)`` parameter counts (e.g. from
    `qhd_lib.train.transfer_params` on the parameter trees); one row of bars per arm, modules in
    network order along x, copied in the classical colour, fresh in the quantum one.
    """
    arms = list(counts)
    modules = list(next(iter(counts.values())))
    ax = ax if ax is not None else plt.subplots(figsize=(11, 0.8 + 0.9 * len(arms)))[1]
    width = 0.8
    for row, arm in enumerate(arms):
        copied = np.array([counts[arm].get(m, (0, 0))[0] for m in modules], float)
        fresh = np.array([counts[arm].get(m, (0, 0))[1] for m in modules], float)
        scale = max((copied + fresh).max(), 1.0)
        x = np.arange(len(modules))
        ax.bar(
            x,
            copied / scale * width,
            0.8,
            bottom=row,
            color=PALETTE["classical"],
            label="copied from the source" if row == 0 else None,
        )
        ax.bar(
            x,
            fresh / scale * width,
            0.8,
            bottom=row + copied / scale * width,
            color=PALETTE["quantum"],
            label="initialised afresh" if row == 0 else None,
        )
    ax.set_yticks(np.arange(len(arms)) + width / 2, arms)
    ax.set_xticks(range(len(modules)), modules, rotation=90, fontsize=7)
    ax.set_ylim(-0.1, len(arms))
    ax.grid(False)
    ax.legend(fontsize=8, loc="upper right", ncols=2)
    return ax
