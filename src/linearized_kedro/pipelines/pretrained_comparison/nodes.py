"""Nodes of ``pretrained_comparison``: init kernel vs trained kernel (docs/methods.md §3.5).

The stored spectrum arrives as ``**stored_spectrum``: the catalog entries of
``experiments.eigen_tasks.StoredSpectrum``.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.common import with_shortcuts
from linearized_kedro.experiments.eigen_tasks import StoredSpectrum
from linearized_kedro.experiments.pretrained import PretrainedConfig, compare_kernels


def compare_init_and_pretrained_kernels(
    model_config: ModelConfig,
    pretrained_comparison: PretrainedConfig,
    label_idx: Any,
    seed: int,
    **stored_spectrum: Any,
) -> tuple[pd.DataFrame, dict, dict]:
    """Network, init-kernel and pretrained-kernel models on each requested eigenfunction."""
    spectrum = StoredSpectrum(**stored_spectrum).check(model_config)
    config = with_shortcuts(pretrained_comparison, label_idx)
    out = compare_kernels(
        *spectrum.experiment_inputs(), model_config, config, seed=seed, dataset=spectrum.dataset
    )
    return out.table, out.histories, out.params
