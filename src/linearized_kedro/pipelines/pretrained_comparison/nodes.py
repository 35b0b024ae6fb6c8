"""Nodes of ``pretrained_comparison`` (SPEC §3.5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.core.models import ModelConfig, build_model, split_variables  # noqa: E402
from linearized_kedro.core.tasks import binarize_eigenfunction, majority_baseline  # noqa: E402
from linearized_kedro.core.train import TrainConfig, train_model  # noqa: E402
from linearized_kedro.pipelines.common import as_params, index_list, override  # noqa: E402
from linearized_kedro.pipelines.eigen_training.nodes import check_spectrum  # noqa: E402

logger = logging.getLogger(__name__)

MODELS = (
    ("network", "network"),
    ("linear_init", "diff-linearisation at θ0 (init kernel)"),
    ("linear_pretrained", "diff-linearisation at θ_end (pretrained kernel)"),
)


@dataclass(frozen=True)
class PretrainedComparisonParams:
    """``pretrained_comparison:`` parameters."""

    label_idx: Any = 10
    progress: bool = True
    train: dict = field(default_factory=dict)


def compare_init_and_pretrained_kernels(
    prepared_inputs: np.ndarray,
    data_report: dict[str, Any],
    ntk_eigenvalues: np.ndarray,
    ntk_eigenvectors: np.ndarray,
    ntk_report: dict[str, Any],
    ntk_sample_index: np.ndarray,
    sample_index: np.ndarray,
    ntk_init_params: dict,
    model_config: ModelConfig,
    pretrained_comparison: PretrainedComparisonParams,
    label_idx: Any,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Three trainings with the same key and settings on eigenfunction j (SPEC §3.5).

    1. the network from θ0; 2. f(θ,x) = J(θ0,x)(θ−θ0) from θ0; 3. f(θ,x) =
    J(θ_end,x)(θ−θ_end) from θ_end with the *initial* BN statistics, as the original
    ("BN re-initialised so the pretrained model gets no unfair advantage").

    Returns:
        results table, histories, and trained parameters.
    """
    check_spectrum(
        ntk_report, ntk_sample_index, sample_index, model_config, data_report, ntk_init_params
    )
    pretrained_comparison = as_params(PretrainedComparisonParams, pretrained_comparison)
    indices = index_list(override(label_idx, pretrained_comparison.label_idx))
    cfg = TrainConfig.from_dict(pretrained_comparison.train)
    module = build_model(ModelConfig.from_dict(model_config))
    x = np.asarray(prepared_inputs, np.float32)
    num_train = int(data_report["num_train"])
    train_key, _ = jax.random.split(jax.random.key(int(seed)))
    _, init_state = split_variables(ntk_init_params)
    rows, histories, trained = [], {}, {}
    for j in indices:
        y = binarize_eigenfunction(ntk_eigenvectors, j)
        data = (x[:num_train], y[:num_train], x[num_train:], y[num_train:])
        network = train_model(
            module,
            ntk_init_params,
            "network",
            *data,
            cfg,
            train_key,
            progress=pretrained_comparison.progress,
        )
        results = {"network": network}
        results["linear_init"] = train_model(
            module,
            ntk_init_params,
            "linear_diff",
            *data,
            cfg,
            train_key,
            progress=pretrained_comparison.progress,
        )
        if network.diverged:
            logger.error("Network training on j=%d diverged; no pretrained kernel.", j)
        else:
            pretrained = {"params": network.params, **init_state}
            results["linear_pretrained"] = train_model(
                module,
                pretrained,
                "linear_diff",
                *data,
                cfg,
                train_key,
                linearization_point=pretrained,
                progress=pretrained_comparison.progress,
            )
        for name, _label in MODELS:
            result = results.get(name)
            row = {
                "label_idx": j,
                "model": name,
                "eigenvalue": float(ntk_eigenvalues[j]),
                "positive_fraction": float(np.mean(y)),
                "majority_baseline_test": majority_baseline(y[num_train:]),
                "diverged": True if result is None else bool(result.diverged),
                "epochs": cfg.epochs,
            }
            if result is not None and not result.diverged:
                row.update({k: float(v) for k, v in result.final.items()})
                trained[f"{name}_{j}"] = jax.tree_util.tree_map(
                    np.asarray, {"params": result.params, **(result.state or {})}
                )
            if result is not None:
                histories[f"{name}_{j}"] = {
                    k: np.asarray(v).tolist() for k, v in result.history.items()
                }
            rows.append(row)
        logger.info(
            "j=%d test accuracy: network %.3f, init kernel %.3f, pretrained kernel %.3f",
            j,
            *(r.get("test_accuracy", float("nan")) for r in rows[-3:]),
        )
    return pd.DataFrame(rows), histories, trained


def plot_comparison(pretrained_comparison_results: pd.DataFrame, ntk_report: dict[str, Any]):
    """Bar chart of train/test accuracy for the three models, per eigenfunction index."""
    table = pretrained_comparison_results
    indices = sorted(table["label_idx"].unique())
    fig, axes = plt.subplots(1, len(indices), figsize=(5.5 * len(indices), 4), squeeze=False)
    for ax, j in zip(axes[0], indices, strict=True):
        group = table[table["label_idx"] == j].set_index("model")
        names = [name for name, _ in MODELS]
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
