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
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import jax
import numpy as np

from linearized_kedro.core.config import Config, ConfigError
from linearized_kedro.core.models import build_model, model_config, split_variables
from linearized_kedro.core.train import TrainConfig, train_model
from linearized_kedro.experiments import results
from linearized_kedro.experiments.common import check_seed, index_list, training_progress
from linearized_kedro.experiments.eigen_tasks import eigen_labels

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainedConfig(Config):
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
        index_list(self.label_idx, f"{self.SECTION}.label_idx")

    @property
    def indices(self) -> tuple[int, ...]:
        return index_list(self.label_idx, f"{self.SECTION}.label_idx")


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
    seed = check_seed(seed)
    indices = config.indices
    k = int(np.shape(eigenvectors)[0])
    too_big = [j for j in indices if j >= k]
    if too_big:
        raise ConfigError(
            f"pretrained_comparison.label_idx {too_big} out of range: the spectrum has k={k} "
            "eigenvectors. Use smaller indices or rerun ntk_spectrum with a larger "
            "ntk.num_eigvecs."
        )
    cfg_model = model_config(model_cfg)
    module = build_model(cfg_model)
    x = np.asarray(inputs, np.float32)
    train_key, _ = jax.random.split(jax.random.key(seed))
    _, init_state = split_variables(variables0)
    progress = training_progress("pretrained_comparison", config.progress)
    settings = results.RunSettings(
        experiment="pretrained_comparison",
        dataset=dataset,
        model=cfg_model.name,
        activation=cfg_model.activation,
        task_axis="eigen_index",
        num_train=num_train,
        num_test=x.shape[0] - num_train,
        seed=seed,
        train=asdict(config.train),
        num_eigvecs=k,
    )
    out = results.TaskResults(table=None)
    rows = []
    for j, y in zip(indices, eigen_labels(eigenvectors, indices), strict=True):
        data = (x[:num_train], y[:num_train], x[num_train:], y[num_train:])

        def train(start, kind, point=None, data=data, label=f"j={j}"):
            return train_model(
                module,
                start,
                kind,
                *data,
                config.train,
                train_key,
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
        for kind in ("network", "linear_init", "linear_pretrained"):
            result = trained.get(kind)
            rows.append(
                results.task_row(
                    settings,
                    kind=kind,
                    task_value=j,
                    labels_train=y[:num_train],
                    labels_test=y[num_train:],
                    final=None if result is None else result.final,
                    diverged=result is None or result.diverged,
                    eigenvalue=float(eigenvalues[j]),
                )
            )
            if result is None:
                continue
            name = results.run_name(kind, j)
            out.histories[name] = {m: np.asarray(v).tolist() for m, v in result.history.items()}
            if not result.diverged:
                out.params[name] = jax.tree_util.tree_map(
                    np.asarray, {"params": result.params, **(result.state or {})}
                )
        logger.info(
            "j=%d test accuracy: network %.3f, init kernel %.3f, pretrained kernel %.3f",
            j,
            *(r["test_accuracy"] for r in rows[-3:]),
        )
    out.table = results.results_table(rows)
    return out
