"""Nodes of ``nads``: θ0 of the NAD model → all NADs of ∂²f/∂θ∂x (docs/methods.md §3.3)."""

from __future__ import annotations

from typing import Any

import numpy as np

from linearized_kedro import figures
from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.nads import NadsConfig, compute_nads


def compute(
    model_config: ModelConfig, nads: NadsConfig, seed: int
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """θ0, the (D, D) NADs, them as (D, H, W, C) images, their (D,) eigenvalues, a report."""
    result = compute_nads(model_config, nads, seed)
    return result.init_variables, result.nads, result.images, result.eigenvalues, result.report


def plot_nads(nads_images: np.ndarray, nads_report: dict[str, Any], nads: NadsConfig):
    """The first ``nads.num_plot`` NADs and their |FFT2| (``figures.nads_plot``)."""
    return figures.nads_plot(nads_images, nads_report, count=nads.num_plot)
