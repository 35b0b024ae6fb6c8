"""NAD image grid (figures/nads.py): the images and their centred |FFT2|."""

from __future__ import annotations

import numpy as np
import pytest

from linearized_kedro import figures
from linearized_kedro.core.nads import fourier_magnitudes
from linearized_kedro.figures.nads import nad_mosaic


def _image_axes(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}


def test_grid_shows_the_first_nads_and_their_spectra():
    images = np.random.default_rng(0).normal(size=(20, 8, 8, 2))
    report = {"model_config": {"name": "lenet", "activation": "gelu"}, "settings": {"sigma": 0.5}}
    fig = figures.nads_plot(images, report, count=10)
    axes = _image_axes(fig)
    assert sorted(axes) == sorted([f"nad:{i}" for i in range(10)] + [f"fft:{i}" for i in range(10)])
    spectra = fourier_magnitudes(images[:10, ..., :1])
    for i in (0, 9):
        np.testing.assert_array_equal(axes[f"nad:{i}"].images[0].get_array(), images[i, ..., 0])
        np.testing.assert_allclose(axes[f"fft:{i}"].images[0].get_array(), spectra[i, ..., 0])
        # each NAD on its own symmetric colour range
        low, high = axes[f"nad:{i}"].images[0].get_clim()
        assert low == -high == -np.abs(images[i, ..., 0]).max()
    assert "lenet (gelu), σ=0.5" in fig.get_suptitle()
    assert len(fig.axes) == 20  # the unused cells of the 2 × 8 rows are removed


def test_count_beyond_the_available_nads_and_3d_input():
    images = np.random.default_rng(1).normal(size=(3, 6, 6))
    fig = figures.nads_plot(images, count=16)
    assert len(_image_axes(fig)) == 6


def test_mosaic_tiles_each_nad_scaled_to_its_range():
    images = np.random.default_rng(2).normal(size=(8, 4, 4, 1))
    mosaic = nad_mosaic(images, rows=2, cols=4)
    assert mosaic.shape == (2 * 5 - 1, 4 * 5 - 1)
    np.testing.assert_allclose(mosaic[5:9, 5:9], images[5, ..., 0] / np.abs(images[5]).max())
    assert np.isnan(mosaic[4]).all() and np.isnan(mosaic[:, 4]).all()  # separators


def test_malformed_images_are_refused():
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        figures.nads_plot(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="count must be"):
        figures.nads_plot(np.zeros((2, 8, 8, 1)), count=0)
