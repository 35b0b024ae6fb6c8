"""One summary figure of every experiment that has run; a "not run" panel for the others."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from .accuracy import draw_accuracy
from .alignment import alignment_runs, draw_concentration
from .comparison import comparison_rows, draw_comparison
from .nads import draw_nad_mosaic
from .spectrum import draw_eigenvalues, draw_nad_spectrum, nad_spectrum_values, spectrum_data
from .style import PAGE_WIDTH, missing_panel, new_figure, paper_style
from .tables import accuracy_data

# Panel key → title, in grid order (2 rows × 4 columns).
PANELS: dict[str, str] = {
    "spectrum": "NTK spectrum at θ0",
    "eigen_accuracy": "Eigenfunction tasks: accuracy by index",
    "alignment": "Kernel concentration on the trained task",
    "comparison": "Kernel at θ0 vs after training",
    "nad_spectrum": "NAD spectrum",
    "nad_images": "First NADs",
    "nad_accuracy": "Tasks along NADs: accuracy by index",
    "cifar2_accuracy": "CIFAR-2: accuracy by training-set size",
}


@paper_style
def summary_plot(
    *,
    ntk_eigenvalues: Any = None,
    ntk_report: Mapping[str, Any] | None = None,
    eigen_results: pd.DataFrame | None = None,
    alignment: Mapping[str, Any] | None = None,
    comparison_results: pd.DataFrame | None = None,
    nad_eigenvalues: Any = None,
    nads_report: Mapping[str, Any] | None = None,
    nad_images: Any = None,
    nad_results: pd.DataFrame | None = None,
    cifar2_results: pd.DataFrame | None = None,
    missing: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """A 2 × 4 grid of the paper's results; ``None`` inputs give "not run" panels.

    Args:
        ntk_eigenvalues: (k,) NTK eigenvalues (``ntk_report``: its report, optional).
        eigen_results: the ``eigen_training`` results table.
        alignment: ``eigen_training``'s alignment (concentration ratios θ0 → end).
        comparison_results: the ``pretrained_comparison`` results table.
        nad_eigenvalues: (D,) NAD eigenvalues (``nads_report``: its report, optional).
        nad_images: (n, H, W, C) NADs as images.
        nad_results: the ``nad_training`` results table.
        cifar2_results: the ``cifar2`` results table.
        missing: panel key (:data:`PANELS`) → what to say instead, e.g. the command that
            produces it; panels without data and without an entry say "not run".
        title: the figure title.

    Returns:
        The figure; each panel's axes has ``gid`` = its key in :data:`PANELS`.

    Raises:
        ValueError: an input that is present but malformed (as the single figures do).
    """
    missing = dict(missing or {})
    inputs = {
        "spectrum": ntk_eigenvalues,
        "eigen_accuracy": eigen_results,
        "alignment": alignment,
        "comparison": comparison_results,
        "nad_spectrum": nad_eigenvalues,
        "nad_images": nad_images,
        "nad_accuracy": nad_results,
        "cifar2_accuracy": cifar2_results,
    }
    fig = new_figure(1.6 * PAGE_WIDTH, 0.82 * PAGE_WIDTH)
    axes = fig.subplots(2, 4).ravel()
    for ax, (key, panel_title) in zip(axes, PANELS.items(), strict=True):
        ax.set_gid(key)
        value = inputs[key]
        if value is None:
            note = f"not run yet\n{missing[key]}" if missing.get(key) else "not run yet"
            missing_panel(ax, note, title=panel_title)
            continue
        if key == "spectrum":
            draw_eigenvalues(ax, spectrum_data(value, ntk_report))
        elif key == "eigen_accuracy":
            draw_accuracy(ax, accuracy_data(value, "eigen_index", "summary"), legend=True)
        elif key == "alignment":
            draw_concentration(ax, alignment_runs(value))
        elif key == "comparison":
            draw_comparison(ax, comparison_rows(value), legend=True)
        elif key == "nad_spectrum":
            draw_nad_spectrum(ax, nad_spectrum_values(value), dict(nads_report or {}))
        elif key == "nad_images":
            draw_nad_mosaic(ax, value)
        elif key == "nad_accuracy":
            draw_accuracy(ax, accuracy_data(value, "nad_index", "summary"), legend=True)
        else:
            draw_accuracy(ax, accuracy_data(value, "num_train", "summary"), legend=True)
        ax.set_title(panel_title)
    fig.suptitle(title or "What can linearised networks say about generalisation? Summary")
    return fig
