"""Nodes of ``eigen_training``: the stored spectrum → the eigenfunction benchmark (docs/methods.md §3.2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.core.sharding import partition_indices, partition_key
from linearized_kedro.experiments.common import with_shortcuts
from linearized_kedro.experiments.eigen_tasks import (
    EigenTasksConfig,
    check_spectrum_matches,
    merge_partition_tables,
    network_alignment,
    train_eigen_tasks,
)


def train_partition(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    prepared_sample_index: np.ndarray,
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    eigen_training: EigenTasksConfig,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], dict, dict]:
    """Trains this job's share of the index list; the table is keyed by the partition."""
    check_spectrum_matches(
        ntk_report,
        ntk_sample_index,
        prepared_sample_index,
        model_config,
        data_report,
        ntk_init_params,
    )
    config = with_shortcuts(eigen_training, label_idx, linearize)
    part, parts = config.partition, config.num_partitions
    config = config.replace(label_idx=partition_indices(config.indices, part, parts))
    out = train_eigen_tasks(
        prepared_inputs,
        int(data_report["num_train"]),
        ntk_eigenvalues,
        ntk_eigenvectors,
        ntk_init_params,
        model_config,
        config,
        seed=seed,
        dataset=data_report["dataset"],
    )
    return {partition_key(part, parts): out.table}, out.histories, out.params


def measure_alignment(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_init_params: dict,
    eigen_training_trained_params: dict[str, Any],
    model_config: ModelConfig,
    eigen_training: EigenTasksConfig,
) -> dict[str, Any]:
    """The trained networks' kernels against the kernel at θ0 (the alignment artifact)."""
    return network_alignment(
        prepared_inputs,
        int(data_report["num_train"]),
        ntk_eigenvalues,
        ntk_eigenvectors,
        ntk_init_params,
        eigen_training_trained_params,
        model_config,
        eigen_training,
    )


def merge_partitions(
    eigen_training_partitions: dict[str, Any],
    eigen_training: EigenTasksConfig,
    label_idx: Any,
    linearize: Any,
) -> pd.DataFrame:
    """One results table from every partition of the sweep."""
    config = with_shortcuts(eigen_training, label_idx, linearize)
    return merge_partition_tables(eigen_training_partitions, config)
