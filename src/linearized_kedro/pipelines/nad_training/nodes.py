"""Nodes of ``nad_training``: data separable along NAD j → network vs linearisation (docs/methods.md §3.4)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linearized_kedro.core.models import ModelConfig
from linearized_kedro.experiments.common import with_shortcuts
from linearized_kedro.experiments.nad_tasks import NadTasksConfig, train_nad_tasks
from linearized_kedro.experiments.nads import NadsConfig


def train_on_nads(
    nads_directions: np.ndarray,
    nads_eigenvalues: np.ndarray,
    nads_report: dict[str, Any],
    nads_init_params: dict,
    model_config: ModelConfig,
    nads: NadsConfig,
    nad_training: NadTasksConfig,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Results table and histories (with the run's settings) of every NAD index and kind."""
    out = train_nad_tasks(
        nads_directions,
        nads_eigenvalues,
        nads_report,
        nads_init_params,
        model_config,
        nads,
        with_shortcuts(nad_training, label_idx, linearize),
        seed,
    )
    return out.table, {"runs": out.histories, "settings": out.extras.get("settings", {})}
