"""The NAD benchmark: network vs linearisation on data separable along one NAD (docs/methods.md §3.4).

For each NAD index j, ``train_nad_tasks`` draws a dataset whose two classes sit ε apart
along NAD j with isotropic noise in the other D − 1 directions, trains the requested model
kinds from the θ0 the NADs were computed at, and returns one row per (j, kind) in the
project's results schema (``experiments.results``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from linearized_kedro.core import nads as nads_core
from linearized_kedro.core.config import Config, ConfigError, from_mapping
from linearized_kedro.core.models import ModelConfig, build_model
from linearized_kedro.core.train import TrainConfig, train_sweep
from linearized_kedro.experiments import results
from linearized_kedro.experiments.common import (
    TaskSelection,
    check_indices_below,
    check_seed,
    training_progress,
)
from linearized_kedro.experiments.nads import NadsConfig, nad_model_config

logger = logging.getLogger(__name__)

EXPERIMENT = "nad_training"
DATASET = "nad_separable"
"""The ``dataset`` column: synthetic data separable along one NAD (docs/methods.md §3.4)."""


@dataclass(frozen=True)
class NadTasksConfig(TaskSelection, Config):
    """``nad_training:`` parameters (``conf/base/parameters_nad_training.yml``).

    Attributes:
        label_idx: one NAD index or a list (each < D); the ``--params label_idx=`` shortcut
            replaces it (``experiments.common.with_shortcuts``).
        linearize: false (network) | true (linearisation) | both.
        epsilon: class margin ε along the NAD.
        sigma: noise std σ in the other D − 1 directions.
        num_train, num_test: sample counts (train rows first).
        progress: tqdm bars of the training engine.
        train: the training block (``core.train.TrainConfig``).
    """

    SECTION = "nad_training"

    label_idx: int | tuple[int, ...] = (0, 10, 50, 200, 600, 1000)
    linearize: bool | str = "both"
    epsilon: float = 1.0
    sigma: float = 1.0
    num_train: int = 2000
    num_test: int = 1000
    progress: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.check_selection()
        if not self.epsilon > 0:
            raise ConfigError(
                f"nad_training.epsilon (the class margin) must be > 0; got {self.epsilon}."
            )
        if self.sigma < 0:
            raise ConfigError(f"nad_training.sigma (the noise std) must be >= 0; got {self.sigma}.")
        for key in ("num_train", "num_test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"nad_training.{key} must be >= 1; got {getattr(self, key)}.")


RERUN = (
    "Run `kedro run --pipelines nads` with the same --params (model, models.*, nads.*) "
    "first, or pin a matching version with --load-versions."
)


def check_nads_artifacts(
    nads: np.ndarray,
    eigenvalues: np.ndarray,
    nads_report: Mapping[str, Any],
    variables0: Mapping[str, Any],
    model: ModelConfig,
    input_shape: tuple[int, ...],
) -> None:
    """Refuses NADs made for another model or input shape (docs/methods.md §3.4, §4 item 2).

    Raises:
        ValueError: saying which pipeline to rerun.
    """
    nads = np.asarray(nads)
    dim = int(np.prod(input_shape))
    if nads.ndim != 2 or nads.shape[0] > nads.shape[1]:
        raise ValueError(f"Stored NADs must be (K, D) rows; got shape {nads.shape}. {RERUN}")
    if nads.shape[1] != dim:
        raise ValueError(
            f"The stored NADs have D={nads.shape[1]} entries but the model input shape "
            f"{tuple(input_shape)} needs D={dim} (nads.input_shape). {RERUN}"
        )
    if np.shape(eigenvalues) != (nads.shape[0],):
        raise ValueError(
            f"The NAD eigenvalues have shape {np.shape(eigenvalues)} but there are "
            f"{nads.shape[0]} NADs; the artifacts come from different runs. {RERUN}"
        )
    stored = dict(nads_report.get("model_config") or {})
    if stored != model.to_dict():
        raise ValueError(
            f"The stored NADs were computed for model config {stored}, but this run uses "
            f"{model.to_dict()}. {RERUN}"
        )
    if "params" not in variables0:
        raise ValueError(f"The stored θ0 has no 'params' collection. {RERUN}")


def train_nad_tasks(
    nads: np.ndarray,
    eigenvalues: np.ndarray,
    nads_report: Mapping[str, Any],
    variables0: Mapping[str, Any],
    model_config: Mapping[str, Any] | ModelConfig,
    nads_config: NadsConfig | Mapping[str, Any],
    config: NadTasksConfig | Mapping[str, Any],
    seed: int,
) -> results.TaskResults:
    """Trains each model kind on data separable along each requested NAD (docs/methods.md §3.4).

    For NAD j: (train_key, data_key) = split(key(seed)); the data key is
    ``fold_in(data_key, j)`` so each index has its own samples; the same ``train_key``
    (batch order) for every index and kind, from the stored θ0 (docs/methods.md §1.7).

    Args:
        nads: (K, D) NAD rows from ``compute_nads`` (K = D there).
        eigenvalues: (K,) their eigenvalues (σ_i² of the mixed derivative).
        nads_report: the NAD report (the model it was computed for is checked).
        variables0: θ0 variables the NADs were computed at (the starting point).
        model_config: the shared preset; ``nads_config.activation`` replaces its activation.
        nads_config: the ``nads`` parameters (activation, input shape).
        config: the ``nad_training`` parameters, with the CLI shortcuts already applied.
        seed: integer seed.

    Returns:
        ``results.TaskResults``: the table (task_axis ``nad_index``, one row per index ×
        kind, eigenvalue = the NAD's σ², the divergence policy of ``experiments.results``),
        histories and trained variables keyed ``'<kind>_<j>'`` (variables of finished
        runs only), and ``extras['settings']`` (ε, σ, input shape, model, indices, kinds).

    Raises:
        ValueError: artifacts from another model or shape, an index ≥ K, a bad seed.
    """
    config = from_mapping(NadTasksConfig, config)
    nads_config = from_mapping(NadsConfig, nads_config)
    seed = check_seed(seed)
    model = nad_model_config(model_config, nads_config)
    shape = nads_config.input_shape
    check_nads_artifacts(nads, eigenvalues, nads_report, variables0, model, shape)
    nads = np.asarray(nads)
    eigenvalues = np.asarray(eigenvalues, np.float64)
    indices, kinds = config.indices, config.kinds
    check_indices_below(
        indices,
        nads.shape[0],
        "nad_training.label_idx",
        f"there are {nads.shape[0]} NADs, D = {int(np.prod(shape))}",
    )
    cfg = config.train
    settings = results.RunSettings(
        experiment=EXPERIMENT,
        dataset=DATASET,
        model=model.name,
        activation=model.activation,
        task_axis="nad_index",
        num_train=config.num_train,
        num_test=config.num_test,
        seed=seed,
        train=dataclasses.asdict(cfg),
    )
    module = build_model(model)
    variables0 = jax.tree_util.tree_map(np.asarray, dict(variables0))
    recorder = results.ResultsRecorder(settings)
    keys, datasets = [], []
    for j in indices:
        train_key, noise_key, label_key = nads_core.nad_task_keys(seed, j)
        keys.append(train_key)
        datasets.append(
            nads_core.nad_separable_dataset(
                nads[j],
                input_shape=shape,
                epsilon=config.epsilon,
                sigma=config.sigma,
                num_train=config.num_train,
                num_test=config.num_test,
                noise_key=noise_key,
                label_key=label_key,
            )
        )
    # Each index has its own inputs: one sweep with per-task inputs (T, N, H, W, C).
    stacked = {name: np.stack([d[name] for d in datasets]) for name in datasets[0]}
    progress = training_progress(EXPERIMENT, config.progress)
    for kind in kinds:
        logger.info("Training %s on NADs %s (%d epochs)", kind, list(indices), cfg.epochs)
        results_by_task = train_sweep(
            module,
            variables0,
            kind,
            stacked["train_x"],
            stacked["train_y"],
            stacked["test_x"],
            stacked["test_y"],
            cfg,
            jax.numpy.stack(keys),
            progress=progress,
            task_labels=[f"NAD {j}" for j in indices],
        )
        for j, data, result in zip(indices, datasets, results_by_task, strict=True):
            recorder.add(
                kind,
                j,
                result,
                data["train_y"],
                data["test_y"],
                eigenvalue=float(eigenvalues[j]),
            )
    extras = {
        "settings": {
            "epsilon": config.epsilon,
            "sigma": config.sigma,
            "input_shape": list(shape),
            "indices": list(indices),
            "kinds": list(kinds),
            "model_config": model.to_dict(),
            "train": dataclasses.asdict(cfg),
            "seed": seed,
        }
    }
    return recorder.finish(extras)
