"""Nodes of ``pretrained_comparison``: init kernel vs trained kernel (docs/methods.md §3.5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.common import with_shortcuts
from linearized_kedro.experiments.eigen_tasks import check_spectrum_matches
from linearized_kedro.experiments.pretrained import PretrainedConfig, compare_kernels


def compare_init_and_pretrained_kernels(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    prepared_sample_index: np.ndarray,
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    pretrained_comparison: PretrainedConfig,
    label_idx: Any,
    seed: int,
) -> tuple[pd.DataFrame, dict, dict]:
    """Network, init-kernel and pretrained-kernel models on each requested eigenfunction."""
    check_spectrum_matches(
        ntk_report,
        ntk_sample_index,
        prepared_sample_index,
        model_config,
        data_report,
        ntk_init_params,
    )
    out = compare_kernels(
        prepared_inputs,
        int(data_report["num_train"]),
        ntk_eigenvalues,
        ntk_eigenvectors,
        ntk_init_params,
        model_config,
        with_shortcuts(pretrained_comparison, label_idx),
        seed=seed,
        dataset=data_report["dataset"],
    )
    return out.table, out.histories, out.params
