"""Nodes of ``nad_training``: separable data along NAD j → engine → table and figure (SPEC §3.4)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.core import nads as nads_core  # noqa: E402
from linearized_kedro.core.config import dataclass_from_mapping  # noqa: E402
from linearized_kedro.core.models import ModelConfig, build_model  # noqa: E402
from linearized_kedro.core.train import TrainConfig, train_model  # noqa: E402
from linearized_kedro.pipelines.common import index_list, model_kinds, override  # noqa: E402
from linearized_kedro.pipelines.nads.nodes import NadsParams, nad_model_config  # noqa: E402

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NadTrainingParams:
    """``nad_training:`` parameters (``conf/base/parameters_nad_training.yml``).

    Attributes:
        label_idx: one NAD index or a list (each < D).
        linearize: false (network) | true (linearisation) | both.
        epsilon: class margin ε along the NAD.
        sigma: noise std σ in the other D − 1 directions.
        num_train, num_test: sample counts (train rows first).
        progress: tqdm bars of the training engine.
        train: the training block (``core.train.TrainConfig`` fields).
    """

    label_idx: Any = field(default_factory=lambda: [0, 10, 50, 200, 600, 1000])
    linearize: Any = "both"
    epsilon: float = 1.0
    sigma: float = 1.0
    num_train: int = 2000
    num_test: int = 1000
    progress: bool = True
    train: dict = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | NadTrainingParams) -> NadTrainingParams:
        """Accepts the dataclass (Kedro's typed params) or a plain mapping (tests)."""
        return dataclass_from_mapping(cls, value, "nad_training")


def check_nads_artifacts(
    nads: np.ndarray,
    nad_eigenvalues: np.ndarray,
    nads_report: Mapping[str, Any],
    nads_init_params: Mapping[str, Any],
    config: ModelConfig,
    input_shape: tuple[int, int, int],
) -> None:
    """Refuses NADs made for another model or input shape (SPEC §3.4, §4 item 2).

    Raises:
        ValueError: saying which pipeline to rerun.
    """
    rerun = (
        "Run `kedro run --pipelines nads` with the same --params (model, models.*, nads.*) "
        "first, or pin a matching version with --load-versions."
    )
    nads = np.asarray(nads)
    dim = int(np.prod(input_shape))
    if nads.ndim != 2 or nads.shape[0] > nads.shape[1]:
        raise ValueError(f"Stored NADs must be (K, D) rows; got shape {nads.shape}. {rerun}")
    if nads.shape[1] != dim:
        raise ValueError(
            f"The stored NADs have D={nads.shape[1]} entries but the model input shape "
            f"{input_shape} needs D={dim} (nads.input_shape). {rerun}"
        )
    if np.asarray(nad_eigenvalues).shape != (nads.shape[0],):
        raise ValueError(
            f"nad_eigenvalues has shape {np.shape(nad_eigenvalues)} but there are "
            f"{nads.shape[0]} NADs; the artifacts come from different runs. {rerun}"
        )
    stored = dict(nads_report.get("model_config") or {})
    if stored != config.to_dict():
        raise ValueError(
            f"The stored NADs were computed for model config {stored}, but this run uses "
            f"{config.to_dict()}. {rerun}"
        )
    if "params" not in nads_init_params:
        raise ValueError(f"nads_init_params has no 'params' collection. {rerun}")


def _row(index: int, kind: str, eigenvalue: float, result: Any, cfg: TrainConfig) -> dict:
    row = {
        "label_idx": index,
        "kind": kind,
        "eigenvalue": float(eigenvalue),
        "diverged": bool(result.diverged),
        "epochs": cfg.epochs,
    }
    row.update({key: float(value) for key, value in result.final.items()})
    if result.diverged:
        logger.error("NAD %d (%s) diverged (NaN/Inf loss); reported as failed.", index, kind)
        for key in list(row):
            if key.startswith(("train_", "test_")):
                row[key] = float("nan")
    return row


def train_on_nads(
    nads: np.ndarray,
    nad_eigenvalues: np.ndarray,
    nads_report: dict[str, Any],
    nads_init_params: dict,
    model_config: ModelConfig,
    nads_params: NadsParams,
    nad_training: NadTrainingParams,
    label_idx: Any,
    linearize: Any,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Trains the network and/or its linearisation on data separable along each NAD.

    For NAD j: (train_key, data_key) = split(key(seed)); the data key is
    ``fold_in(data_key, j)`` so each index has its own samples; the same ``train_key``
    (batch order) for every index and kind, from the stored θ0 (SPEC §1.7, §3.4).

    Args:
        nads: (D, D) NAD rows from ``nads``; nad_eigenvalues: (D,).
        nads_report: the ``nads`` report (model config check).
        nads_init_params: θ0 variables the NADs were computed at.
        model_config: the shared preset; ``nads.activation`` replaces its activation.
        nads_params: ``nads`` parameters (activation, input shape).
        nad_training: ``nad_training`` parameters.
        label_idx, linearize: top-level ``--params`` shortcuts; null → nad_training's.
        seed: integer seed.

    Returns:
        The results table (one row per index × kind: eigenvalue, train/test accuracy and
        loss, ‖θ−θ0‖² and relative distance, diverged) and per-run histories
        (``{'<kind>_<j>': {metric: [per epoch]}}``).
    """
    params = NadTrainingParams.from_value(nad_training)
    shape_params = NadsParams.from_value(nads_params)
    config = nad_model_config(model_config, shape_params)
    shape = shape_params.input_shape
    check_nads_artifacts(nads, nad_eigenvalues, nads_report, nads_init_params, config, shape)
    indices = index_list(override(label_idx, params.label_idx))
    too_big = [j for j in indices if j >= np.shape(nads)[0]]
    if too_big:
        raise ValueError(
            f"nad_training.label_idx {too_big} out of range: there are {np.shape(nads)[0]} "
            f"NADs (D = {int(np.prod(shape))}), so indices must be < {np.shape(nads)[0]}."
        )
    kinds = model_kinds(override(linearize, params.linearize))
    cfg = TrainConfig.from_dict(params.train)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"'seed' must be an integer; got {seed!r}.")
    module = build_model(config)
    variables0 = jax.tree_util.tree_map(np.asarray, dict(nads_init_params))
    rows, histories = [], {}
    for j in indices:
        train_key, noise_key, label_key = nads_core.nad_task_keys(int(seed), j)
        data = nads_core.nad_separable_dataset(
            np.asarray(nads)[j],
            input_shape=shape,
            epsilon=params.epsilon,
            sigma=params.sigma,
            num_train=params.num_train,
            num_test=params.num_test,
            noise_key=noise_key,
            label_key=label_key,
        )
        for kind in kinds:
            logger.info("Training %s on NAD %d (%d epochs)", kind, j, cfg.epochs)
            # The inputs differ per index, so the engine's label sweep does not apply.
            result = train_model(
                module,
                variables0,
                kind,
                data["train_x"],
                data["train_y"],
                data["test_x"],
                data["test_y"],
                cfg,
                train_key,
                progress=params.progress,
            )
            row = _row(j, kind, float(np.asarray(nad_eigenvalues)[j]), result, cfg)
            row["positive_fraction_test"] = float(np.mean(data["test_y"]))
            rows.append(row)
            histories[f"{kind}_{j}"] = {
                k: np.asarray(v, np.float64).tolist() for k, v in result.history.items()
            }
    histories = {
        "runs": histories,
        "settings": {
            **{k: v for k, v in asdict(params).items() if k not in ("label_idx", "linearize")},
            "label_idx": indices,
            "kinds": list(kinds),
            "train": asdict(cfg),
            "model_config": config.to_dict(),
            "seed": int(seed),
        },
    }
    table = pd.DataFrame(rows).sort_values(["label_idx", "kind"]).reset_index(drop=True)
    return table, histories


def plot_accuracy_vs_nad_index(nad_training_results: pd.DataFrame, nads_report: dict):
    """Test accuracy vs NAD index, network vs linearisation; symlog x (index 0 exists)."""
    table = nad_training_results
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    styles = {"network": ("C0", "o", "network"), "linear": ("C1", "s", "linearised")}
    for kind, group in table.groupby("kind"):
        color, marker, label = styles.get(str(kind), ("C2", "^", str(kind)))
        group = group.sort_values("label_idx")
        ax.plot(
            group["label_idx"],
            group["test_accuracy"],
            marker=marker,
            color=color,
            label=f"{label} (test)",
        )
        ax.plot(
            group["label_idx"],
            group["train_accuracy"],
            marker=marker,
            color=color,
            ls=":",
            alpha=0.6,
            label=f"{label} (train)",
        )
    ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("NAD index (symlog)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.4, 1.02)
    cfg = nads_report.get("model_config", {})
    ax.set_title(f"Training on NAD-separable data: {cfg.get('name')} ({cfg.get('activation')})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
