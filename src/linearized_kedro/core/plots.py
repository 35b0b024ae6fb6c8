"""Figures of the paper's results from stored arrays and tables (matplotlib only).

Pure functions: they take arrays / ``pandas.DataFrame`` tables and return a
``matplotlib.figure.Figure`` (drawing on ``ax`` when one is given, so a summary figure
can put several results side by side). Used by the ``cifar2`` and ``reporting``
pipelines and by ``notebooks/analysis.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

# One colour/marker per model kind, the same in every figure.
KIND_STYLES: dict[str, tuple[str, str, str]] = {
    "network": ("C0", "o", "network"),
    "linear": ("C1", "s", "linearised (NTK at θ0)"),
    "linear_init": ("C1", "s", "linear, NTK at θ0"),
    "linear_diff": ("C1", "s", "linear, NTK at θ0"),
    "init_kernel": ("C1", "s", "linear, NTK at θ0"),
    "linear_pretrained": ("C2", "^", "linear, NTK at θ_end"),
    "pretrained_kernel": ("C2", "^", "linear, NTK at θ_end"),
}


def _axes(ax, figsize=(6.5, 4.2)):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def kind_style(kind: str, position: int = 0) -> tuple[str, str, str]:
    """(colour, marker, legend label) of a model kind; unknown kinds get the next colour."""
    return KIND_STYLES.get(str(kind), (f"C{(position + 3) % 10}", "^", str(kind)))


def plot_eigenvalues(
    eigenvalues: np.ndarray,
    *,
    title: str | None = None,
    ylabel: str = "eigenvalue λ_j",
    ax=None,
):
    """Eigenvalues (k,) in descending order against index j + 1, log-log.

    Non-positive values (round-off in the tail) cannot be drawn on a log axis; they are
    dropped and their count is given in the legend.
    """
    fig, ax = _axes(ax)
    values = np.asarray(eigenvalues, np.float64).reshape(-1)
    index = np.arange(1, values.size + 1)
    keep = values > 0
    label = f"{values.size} eigenvalues"
    if not keep.all():
        label += f" ({int((~keep).sum())} ≤ 0 not shown)"
    ax.loglog(index[keep], values[keep], marker=".", lw=1, label=label)
    ax.set_xlabel("index j + 1 (log scale)")
    ax.set_ylabel(f"{ylabel} (log scale)")
    ax.set_title(title or "Spectrum")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_accuracy_curves(
    table,
    x: str,
    *,
    kind_column: str = "kind",
    x_offset: float = 0.0,
    xscale: str = "log",
    xlabel: str | None = None,
    title: str | None = None,
    baseline: float | Sequence[float] | str | None = None,
    show_train: bool = True,
    ax=None,
):
    """Test (solid) and train (dotted) accuracy against ``x``, one curve per model kind.

    Args:
        table: DataFrame with columns ``x``, ``kind_column``, ``test_accuracy`` and
            optionally ``train_accuracy`` and ``diverged`` (diverged rows are drawn as
            crosses at 0.5, never as results).
        x: column for the x axis (e.g. ``num_train``, ``label_idx``).
        x_offset: added to x (``1`` puts index 0 on a log axis as j + 1).
        xscale: ``log``, ``symlog`` or ``linear``.
        baseline: majority-class accuracy: a number (horizontal line) or the name of a
            per-x column (drawn as a dashed curve).
        show_train: also draw train accuracy.

    Returns:
        The figure.
    """
    fig, ax = _axes(ax)
    for position, (kind, group) in enumerate(table.groupby(kind_column, sort=True)):
        color, marker, label = kind_style(kind, position)
        group = group.sort_values(x)
        xs = group[x].to_numpy(np.float64) + x_offset
        ax.plot(xs, group["test_accuracy"], marker=marker, color=color, label=f"{label} (test)")
        if show_train and "train_accuracy" in group:
            ax.plot(
                xs,
                group["train_accuracy"],
                marker=marker,
                color=color,
                ls=":",
                alpha=0.6,
                label=f"{label} (train)",
            )
        if "diverged" in group:
            failed = group["diverged"].astype(str).str.lower().isin(["true", "1"])
            if failed.any():
                ax.plot(
                    xs[failed.to_numpy()],
                    np.full(int(failed.sum()), 0.5),
                    "x",
                    color=color,
                    ms=10,
                    label=f"{label}: diverged",
                )
    if isinstance(baseline, str) and baseline in table:
        base = table.drop_duplicates(x).sort_values(x)
        ax.plot(
            base[x].to_numpy(np.float64) + x_offset,
            base[baseline],
            color="gray",
            ls="--",
            label="majority class (test)",
        )
    elif baseline is not None and not isinstance(baseline, str):
        ax.axhline(float(np.mean(baseline)), color="gray", ls="--", label="majority class (test)")
    ax.set_xscale(xscale)
    scale = {"log": " (log scale)", "symlog": " (symlog scale)"}.get(xscale, "")
    ax.set_xlabel((xlabel or x) + scale)
    ax.set_ylabel("accuracy")
    # Chance is 0.5; show below-0.4 values (e.g. anti-correlated tasks) rather than clip.
    ax.set_ylim(min(0.4, ax.get_ylim()[0]), 1.02)
    ax.set_title(title or f"Accuracy vs {x}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_grouped_bars(
    table,
    group_column: str,
    *,
    kind_column: str = "model",
    value: str = "test_accuracy",
    baseline: str | None = "majority_baseline_test",
    title: str | None = None,
    ax=None,
):
    """Bars of ``value`` per group (e.g. eigenfunction index) and model kind.

    Args:
        table: DataFrame with ``group_column``, ``kind_column``, ``value`` (and optionally
            the per-group ``baseline`` column, drawn as a dashed tick).
    """
    fig, ax = _axes(ax)
    groups = sorted(table[group_column].unique())
    kinds = list(dict.fromkeys(table[kind_column]))
    width = 0.8 / max(len(kinds), 1)
    for position, kind in enumerate(kinds):
        color, _, label = kind_style(kind, position)
        rows = table[table[kind_column] == kind].set_index(group_column)
        heights = [float(rows[value].get(g, np.nan)) for g in groups]
        ax.bar(
            np.arange(len(groups)) + (position - (len(kinds) - 1) / 2) * width,
            heights,
            width,
            color=color,
            label=label,
        )
    if baseline and baseline in table:
        base = table.drop_duplicates(group_column).set_index(group_column)[baseline]
        for i, g in enumerate(groups):
            ax.hlines(
                float(base.get(g, np.nan)),
                i - 0.45,
                i + 0.45,
                colors="gray",
                linestyles="--",
                label="majority class (test)" if i == 0 else None,
            )
    ax.set_xticks(np.arange(len(groups)), [str(g) for g in groups])
    ax.set_xlabel(group_column)
    ax.set_ylabel(value.replace("_", " ") + " (linear scale)")
    ax.set_ylim(0.0, 1.02)  # bars start at zero
    ax.set_title(title or f"{value} by {group_column}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_alignment(runs: dict[str, dict[str, Any]], *, normalized: bool = True):
    """End-kernel energy on the initial eigenvectors, one panel per target index j.

    Args:
        runs: ``{str(j): {"train"|"test"|"train_normalized"|...: (k,) values}}``, as
            stored by ``eigen_training`` (``core.alignment.kernel_alignment``).
        normalized: use the trace-normalised values (separates rotation from growth).

    Returns:
        The figure (train vs test curves, dashed line at the target index).
    """
    items = sorted(runs.items(), key=lambda item: int(item[0]))
    fig, axes = plt.subplots(
        1, max(len(items), 1), figsize=(4.2 * max(len(items), 1), 3.6), squeeze=False
    )
    for ax, (j, arrays) in zip(axes[0], items, strict=False):
        for split, color in (("train", "C0"), ("test", "C3")):
            key = f"{split}_normalized" if normalized and f"{split}_normalized" in arrays else split
            values = np.asarray(arrays[key], np.float64)
            ax.semilogy(np.arange(values.size), values, color=color, lw=1, label=split)
        ax.axvline(int(j), color="k", ls="--", lw=1, label=f"target j={j}")
        ax.set_xlabel("initial eigenvector index i")
        ax.set_ylabel("u_iᵀ Θ_end u_i" + (" / (tr Θ_end / N)" if normalized else "") + " (log)")
        ax.set_title(f"Kernel alignment after training on j={j}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if not items:
        plot_missing("no alignment runs stored", ax=axes[0, 0])
    fig.tight_layout()
    return fig


def plot_image_grid(
    images: np.ndarray, *, count: int = 16, fourier: bool = False, title: str | None = None
):
    """The first ``count`` images (n, H, W, C) (channel 0), or their centred |FFT2|.

    Each image is scaled to its own symmetric range, so patterns of unit-norm vectors
    (NADs, eigenvectors) are visible.
    """
    images = np.asarray(images, np.float64)[:count, ..., 0]
    cols = min(8, max(len(images), 1))
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(images):
            ax.remove()
            continue
        image = images[i]
        if fourier:
            image = np.abs(np.fft.fftshift(np.fft.fft2(image)))
            ax.imshow(image, cmap="magma")
        else:
            bound = float(np.max(np.abs(image))) or 1.0
            ax.imshow(image, cmap="RdBu_r", vmin=-bound, vmax=bound)
        ax.set_title(str(i), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or ("|FFT2| of the first images" if fourier else "First images"))
    fig.tight_layout()
    return fig


def plot_missing(message: str, *, title: str | None = None, ax=None):
    """An empty panel that says which result is missing and how to produce it."""
    fig, ax = _axes(ax)
    ax.text(
        0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes
    )
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return fig


def figure_has_data(fig: Any) -> bool:
    """True if every visible axes of ``fig`` draws something (finite lines, bars, images).

    Text-only panels (``plot_missing``) are axis-off and do not count as empty.
    """
    for ax in fig.axes:
        if not ax.axison:
            continue
        drawn = [
            line
            for line in ax.get_lines()
            if np.isfinite(np.asarray(line.get_ydata(), np.float64)).any()
        ]
        if not (drawn or ax.patches or ax.images or ax.collections):
            return False
    return bool(fig.axes)
