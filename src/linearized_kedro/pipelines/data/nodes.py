"""Nodes of ``data``: the raw splits → the prepared data set (docs: docs/methods.md §1.1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from linearized_kedro.experiments.data import DataConfig, prepare_data


def prepare(
    raw_images: dict[str, Any], data: DataConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Prepared inputs (N, H, W, C) float32, class labels (N,), sample order (N,), report."""
    prepared, report = prepare_data(raw_images, data)
    return prepared.inputs, prepared.labels, prepared.sample_index, report
