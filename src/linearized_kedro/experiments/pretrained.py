"""Kernel at initialisation vs kernel after training, on one eigenfunction task (docs/methods.md §3.5).

Three trainings with the same key and settings on the labels sign(u_j):

1. ``network``: the network from θ0;
2. ``linear_init``: f(θ, x) = J(θ0, x)(θ − θ0) from θ0 (the kernel at initialisation);
3. ``linear_pretrained``: f(θ, x) = J(θ_end, x)(θ − θ_end) from θ_end, the network's trained
   parameters, with the *initial* BatchNorm statistics ("BN re-initialised so the
   pretrained model gets no unfair advantage", docs/methods.md §3.5).

Both linear models have zero output at the start: only the kernel is carried over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from linearized_kedro.core.config import Config
from linearized_kedro.core.models import split_variables
from linearized_kedro.core.train import TrainConfig, train_model
from linearized_kedro.experiments import results
from linearized_kedro.experiments.common import TaskSelection, training_progress
from linearized_kedro.experiments.eigen_tasks import eigen_task_run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainedConfig(TaskSelection, Config):
    """``pretrained_comparison:`` parameters.

    Attributes:
        label_idx: eigenfunction index j, or a list of them (each < the spectrum's k).
        progress: progress bars while training.
        train: the optimiser and schedule, shared by the three trainings (docs/methods.md §1.6).
    """

    SECTION: ClassVar[str] = "pretrained_comparison"

    label_idx: int | tuple[int, ...] = 10
    progress: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.check_selection()


def compare_kernels(
    inputs: np.ndarray,
    num_train: int,
    eigenvalues: np.ndarray,
    eigenvectors: np.ndarray,
    variables0: Any,
    model_cfg: Any,
    config: PretrainedConfig,
    *,
    seed: int,
    dataset: str,
) -> results.TaskResults:
    """The three trainings of docs/methods.md §3.5 for every requested index.

    Args:
        inputs: (N, H, W, C) float32, train rows first.
        num_train: number of leading train rows.
        eigenvalues: (k,); eigenvectors: (k, N).
        variables0: θ0 of the spectrum.
        model_cfg: the model preset of θ0.
        config: settings (shortcuts already applied).
        seed: integer seed; ``train_key = split(key(seed))[0]`` for all three trainings.
        dataset: dataset name (recorded in the table).

    Returns:
        ``TaskResults`` (task_axis ``eigen_index``; kinds ``network``, ``linear_init``,
        ``linear_pretrained``). No pretrained-kernel model is trained when the network
        diverged (its row is reported as failed).
    """
    run = eigen_task_run(
        inputs, num_train, eigenvectors, model_cfg, config, seed=seed, dataset=dataset
    )
    _, init_state = split_variables(variables0)
    progress = training_progress("pretrained_comparison", config.progress)
    recorder = results.ResultsRecorder(run.settings)
    for j, y in zip(run.indices, run.labels, strict=True):
        data = (run.train_x, y[:num_train], run.test_x, y[num_train:])

        def train(start, kind, point=None, data=data, label=f"j={j}"):
            return train_model(
                run.module,
                start,
                kind,
                *data,
                config.train,
                run.train_key,
                linearization_point=point,
                progress=progress,
                task_label=label,
            )

        trained = {"network": train(variables0, "network")}
        trained["linear_init"] = train(variables0, "linear_diff")
        network = trained["network"]
        if network.diverged:
            logger.error("Network training on j=%d diverged: no pretrained kernel.", j)
        else:
            pretrained = {"params": network.params, **init_state}
            trained["linear_pretrained"] = train(pretrained, "linear_diff", pretrained)
        accuracies = [
            recorder.add(
                kind,
                j,
                trained.get(kind),
                y[:num_train],
                y[num_train:],
                eigenvalue=float(eigenvalues[j]),
            )["test_accuracy"]
            for kind in ("network", "linear_init", "linear_pretrained")
        ]
        logger.info(
            "j=%d test accuracy: network %.3f, init kernel %.3f, pretrained kernel %.3f",
            j,
            *accuracies,
        )
    return recorder.finish()
