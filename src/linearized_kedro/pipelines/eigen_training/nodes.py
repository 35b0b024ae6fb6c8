"""Nodes of ``eigen_training``: the stored spectrum → the eigenfunction benchmark (SPEC §3.2)."""

from __future__ import annotations

from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.core.sharding import partition_indices, partition_key  # noqa: E402
from linearized_kedro.experiments.common import with_shortcuts  # noqa: E402
from linearized_kedro.experiments.eigen_tasks import (  # noqa: E402
    EigenTasksConfig,
    check_spectrum_matches,
    merge_partition_tables,
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
    model_config: dict[str, Any],
    eigen_training: EigenTasksConfig,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[dict[str, pd.DataFrame], dict, dict, dict]:
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
    return (
        {partition_key(part, parts): out.table},
        out.histories,
        out.params,
        out.extras["alignment"],
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


def plot_accuracy_vs_index(eigen_training_results: pd.DataFrame, ntk_report: dict[str, Any]):
    """The paper's main figure: test accuracy vs eigenfunction index, network vs linear."""
    table = eigen_training_results
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"network": ("C0", "o", "network"), "linear": ("C1", "s", "linearised")}
    for kind, group in table.groupby("kind"):
        color, marker, label = styles.get(kind, ("C2", "^", kind))
        group = group.sort_values("task_value")
        ax.plot(
            group["task_value"] + 1,
            group["test_accuracy"],
            marker=marker,
            color=color,
            label=f"{label} (test)",
        )
        ax.plot(
            group["task_value"] + 1,
            group["train_accuracy"],
            marker=marker,
            color=color,
            ls=":",
            alpha=0.6,
            label=f"{label} (train)",
        )
    base = table.drop_duplicates("task_value").sort_values("task_value")
    ax.plot(
        base["task_value"] + 1,
        base["majority_baseline_test"],
        color="gray",
        ls="--",
        label="majority class (test)",
    )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("eigenfunction index j + 1 (log scale)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.4, 1.02)
    cfg = ntk_report.get("model_config", {})
    ax.set_title(f"NTK eigenfunction benchmark: {cfg.get('name')} on {ntk_report.get('dataset')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_alignment(eigen_training_alignment: dict[str, Any]):
    """End-kernel energy on the initial eigenvectors, trace-normalised, train vs test."""
    runs = eigen_training_alignment.get("runs", {})
    ncols = min(3, max(len(runs), 1))
    nrows = -(-max(len(runs), 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(runs) :]:
        ax.set_axis_off()
    axes = axes.reshape(1, -1)
    if not runs:
        axes[0, 0].text(0.5, 0.5, "no network runs with alignment", ha="center")
        axes[0, 0].set_axis_off()
    for ax, (j, arrays) in zip(
        axes[0], sorted(runs.items(), key=lambda t: int(t[0])), strict=False
    ):
        for split, color in (("train", "C0"), ("test", "C3")):
            values = np.asarray(arrays.get(f"{split}_normalized", arrays.get(split)))
            ax.semilogy(np.arange(len(values)), values, color=color, lw=1, label=split)
        ax.axvline(int(j), color="k", ls="--", lw=1, label=f"target j={j}")
        ax.set_xlabel("initial eigenvector index")
        ax.set_ylabel("u_jᵀ Θ_end u_j / (‖u_j‖² tr Θ_end / N)")
        ax.set_title(f"Kernel alignment after training on j={j}")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return fig
