"""Nodes of ``cifar2``: network vs linearisation on the two halves of the classes (docs/methods.md §3.6)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.cifar2 import Cifar2Config, cifar2_labels, train_cifar2


def make_cifar2_labels(prepared_labels: np.ndarray, data_report: dict[str, Any]) -> np.ndarray:
    """(N,) float32 0/1 labels: 1 for the first half of the classes."""
    return cifar2_labels(prepared_labels, int(data_report.get("num_classes", 10)))


def train_size_sweep(
    prepared_inputs: np.ndarray,
    prepared_labels: np.ndarray,
    cifar2_labels: np.ndarray,
    data_report: dict[str, Any],
    model_config: ModelConfig,
    cifar2: Cifar2Config,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Results table and histories (with the sweep's settings) of every size and kind."""
    out = train_cifar2(
        prepared_inputs,
        prepared_labels,
        cifar2_labels,
        int(data_report["num_train"]),
        int(data_report.get("num_classes", 10)),
        model_config,
        cifar2,
        seed=seed,
        dataset=data_report["dataset"],
    )
    return out.table, {"runs": out.histories, "settings": out.extras["report"]}
