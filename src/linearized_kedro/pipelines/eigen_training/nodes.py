"""Nodes of ``eigen_training``: the stored spectrum → the eigenfunction benchmark (docs/methods.md §3.2).

The stored spectrum arrives as ``**stored_spectrum``: the catalog entries of
``experiments.eigen_tasks.StoredSpectrum`` (prepared data, eigenpairs, θ0, reports).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.core.sharding import partition_indices, partition_key
from linearized_kedro.experiments.common import with_shortcuts
from linearized_kedro.experiments.eigen_tasks import (
    EigenTasksConfig,
    StoredSpectrum,
    merge_partition_tables,
    network_alignment,
    train_eigen_tasks,
)


def train_partition(
    model_config: ModelConfig,
    eigen_training: EigenTasksConfig,
    label_idx: Any,
    linearize: Any,
    seed: int,
    **stored_spectrum: Any,
) -> tuple[dict[str, pd.DataFrame], dict, dict]:
    """Trains this job's share of the index list; the table is keyed by the partition."""
    spectrum = StoredSpectrum(**stored_spectrum).check(model_config)
    config = with_shortcuts(eigen_training, label_idx, linearize)
    part, parts = config.partition, config.num_partitions
    config = config.replace(label_idx=partition_indices(config.indices, part, parts))
    out = train_eigen_tasks(
        *spectrum.experiment_inputs(), model_config, config, seed=seed, dataset=spectrum.dataset
    )
    return {partition_key(part, parts): out.table}, out.histories, out.params


def measure_alignment(
    eigen_training_trained_params: dict[str, Any],
    model_config: ModelConfig,
    eigen_training: EigenTasksConfig,
    **stored_spectrum: Any,
) -> dict[str, Any]:
    """The trained networks' kernels against the kernel at θ0 (the alignment artifact)."""
    spectrum = StoredSpectrum(**stored_spectrum)
    return network_alignment(
        *spectrum.experiment_inputs(), eigen_training_trained_params, model_config, eigen_training
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
