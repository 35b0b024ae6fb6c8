"""Nodes of ``pretrained_comparison``: init kernel vs trained kernel (SPEC §3.5)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.experiments.common import with_shortcuts  # noqa: E402
from linearized_kedro.experiments.eigen_tasks import check_spectrum_matches  # noqa: E402
from linearized_kedro.experiments.pretrained import PretrainedConfig, compare_kernels  # noqa: E402


def compare_init_and_pretrained_kernels(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    prepared_sample_index: np.ndarray,
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: dict[str, Any],
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


def plot_comparison(pretrained_comparison_results: pd.DataFrame, ntk_report: dict[str, Any]):
    """Bar chart of train/test accuracy for the three models, per eigenfunction index."""
    table = pretrained_comparison_results
    indices = sorted(table["task_value"].unique())
    fig, axes = plt.subplots(1, len(indices), figsize=(5.5 * len(indices), 4), squeeze=False)
    for ax, j in zip(axes[0], indices, strict=True):
        group = table[table["task_value"] == j].set_index("kind")
        names = ["network", "linear_init", "linear_pretrained"]
        pos = np.arange(len(names))
        for offset, split, color in ((-0.2, "train", "C0"), (0.2, "test", "C1")):
            values = [group.get(f"{split}_accuracy", pd.Series()).get(n, np.nan) for n in names]
            ax.bar(pos + offset, values, width=0.4, color=color, label=split)
        ax.axhline(
            float(group["majority_baseline_test"].iloc[0]),
            color="gray",
            ls="--",
            label="majority class (test)",
        )
        ax.set_xticks(pos, ["network", "linear\n(init kernel)", "linear\n(pretrained kernel)"])
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title(f"Eigenfunction j={j} ({ntk_report.get('model_config', {}).get('name')})")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
