"""Neural anisotropy directions as images: the first NADs and their centred |FFT2|.

The paper's claim (docs/methods.md §2.1 item 3): NADs are structured, Fourier-like patterns. Each
image is scaled to its own symmetric range (NADs are unit vectors of very different
local contrast), diverging colours for the image, a sequential map for its spectrum.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .style import PAGE_WIDTH, new_figure, paper_style

if TYPE_CHECKING:
    from matplotlib.axes import Axes

IMAGE_CMAP = "RdBu_r"
SPECTRUM_CMAP = "magma"


def nad_images(images: Any, count: int) -> np.ndarray:
    """The first ``count`` images, channel 0, as (m, H, W) float64.

    Args:
        images: (n, H, W, C) or (n, H, W) NADs reshaped to the input shape.
        count: how many to keep (at most n).

    Raises:
        ValueError: not 3-/4-D, no image, or a non-positive ``count``.
    """
    images = np.asarray(images, np.float64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(
            f"NAD images must be (n, H, W, C) with n ≥ 1 (nads_as_images); got shape "
            f"{images.shape}."
        )
    if count < 1:
        raise ValueError(f"count must be ≥ 1; got {count}.")
    return images[:count, ..., 0]


def _signed(ax: Axes, image: np.ndarray) -> None:
    bound = float(np.max(np.abs(image))) or 1.0
    ax.imshow(image, cmap=IMAGE_CMAP, vmin=-bound, vmax=bound)


@paper_style
def nads_plot(
    images: Any,
    report: Mapping[str, Any] | None = None,
    *,
    count: int = 16,
    title: str | None = None,
) -> Figure:
    """The first ``count`` NADs (top rows) and their centred |FFT2| (bottom rows).

    Args:
        images: (n, H, W, C) NADs as images (channel 0 is drawn).
        report: the NADs report (``model_config``, ``settings.sigma``), optional.
        count: how many NADs (8 per row).
        title: overrides the title made from the report.

    Returns:
        A page-wide figure; image axes carry ``gid`` ``'nad:<i>'`` and ``'fft:<i>'``.
    """
    from linearized_kedro.core.nads import fourier_magnitudes

    shown = nad_images(images, count)
    spectra = fourier_magnitudes(shown[..., None])[..., 0]
    cols = min(8, shown.shape[0])
    rows = -(-shown.shape[0] // cols)
    fig = new_figure(PAGE_WIDTH, 0.9 * 2 * rows * PAGE_WIDTH / 8 + 0.4)
    axes = fig.subplots(2 * rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        row, col = divmod(i, cols)
        n = (row % rows) * cols + col
        if n >= shown.shape[0]:
            ax.remove()
            continue
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if row < rows:
            _signed(ax, shown[n])
            ax.set_gid(f"nad:{n}")
            ax.set_title(f"NAD {n}", fontsize=6)
        else:
            ax.imshow(spectra[n], cmap=SPECTRUM_CMAP)
            ax.set_gid(f"fft:{n}")
            ax.set_title(f"|FFT| {n}", fontsize=6)
    report = dict(report or {})
    cfg = report.get("model_config") or {}
    sigma = (report.get("settings") or {}).get("sigma")
    model = f"{cfg.get('name')} ({cfg.get('activation')})" if cfg.get("name") else "the network"
    fig.suptitle(
        title
        or f"NADs of {model}"
        + (f", σ={sigma}" if sigma is not None else "")
        + ": images (top) and centred |FFT2| (bottom)"
    )
    return fig


def nad_mosaic(images: Any, *, rows: int = 2, cols: int = 4) -> np.ndarray:
    """The first rows × cols NADs tiled into one (rows·(H+1)−1, cols·(W+1)−1) image.

    Each tile is divided by its largest |value| (range [-1, 1]); NaN separates tiles.
    """
    shown = nad_images(images, rows * cols)
    h, w = shown.shape[1:]
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for n, image in enumerate(shown):
        r, c = divmod(n, cols)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = image / (
            float(np.max(np.abs(image))) or 1.0
        )
    return mosaic


def draw_nad_mosaic(ax: Axes, images: Any) -> None:
    """The first eight NADs as one 2 × 4 mosaic on ``ax`` (summary panel)."""
    ax.imshow(nad_mosaic(images), cmap=IMAGE_CMAP, vmin=-1.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_title("First NADs (each scaled to its range)")
