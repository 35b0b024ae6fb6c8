"""CIFAR-2: the first half of the classes vs the second half, network vs linearisation (docs/methods.md §3.6).

On CIFAR-10 this is {airplane, automobile, bird, cat, deer} (label 1) against {dog, frog,
horse, ship, truck} (label 0). The original trained only the network; the reproduction
trains its linearisation f(θ0,x) + J(θ0,x)(θ−θ0) too and sweeps the training-set size.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import jax
import numpy as np

from linearized_kedro.core.config import Config, ConfigError
from linearized_kedro.core.data import binary_labels, stratified_subset
from linearized_kedro.core.models import build_model, count_params, init_variables, model_config
from linearized_kedro.core.train import TrainConfig, train_model
from linearized_kedro.experiments import results
from linearized_kedro.experiments.common import check_seed, model_kinds, training_progress

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cifar2Config(Config):
    """``cifar2:`` parameters (``conf/base/parameters_cifar2.yml``).

    Attributes:
        num_train: one training-set size or a list (a sweep); -1 = every prepared train row.
        linearize: ``false`` (network), ``true`` (linearisation) or ``both``.
        subset_seed: seed of the stratified subsets; null → seed + 999 (docs/methods.md §1.1).
        progress: progress bars while training.
        train: the optimiser and schedule (docs/methods.md §1.6).
    """

    SECTION: ClassVar[str] = "cifar2"

    num_train: int | tuple[int, ...] = (250, 500, 1000, -1)
    linearize: bool | str = "both"
    subset_seed: int | None = None
    progress: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        model_kinds(self.linearize, f"{self.SECTION}.linearize")
        sizes = self.num_train if isinstance(self.num_train, tuple) else (self.num_train,)
        if not sizes:
            raise ConfigError("cifar2.num_train is empty; give at least one training-set size.")
        bad = [s for s in sizes if s != -1 and s < 1]
        if bad:
            raise ConfigError(f"cifar2.num_train must be positive sizes or -1; got {bad}.")

    def sizes(self, available: int, num_classes: int) -> list[int]:
        """Sorted distinct training-set sizes, -1 → ``available``; checked against the data."""
        values = self.num_train if isinstance(self.num_train, tuple) else (self.num_train,)
        sizes = sorted({available if v == -1 else int(v) for v in values})
        for size in sizes:
            if size < num_classes:
                raise ConfigError(
                    f"cifar2.num_train={size} is too small: a subset stratified on the "
                    f"{num_classes} classes needs at least {num_classes} samples (-1 = all)."
                )
            if size > available:
                raise ConfigError(
                    f"cifar2.num_train={size} exceeds the {available} prepared training "
                    "samples. Lower cifar2.num_train (-1 = all of them), or prepare more data "
                    "with --params data.num_train=... (-1 = the full split)."
                )
        return sizes


def cifar2_labels(class_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) float32 0/1 labels: 1 for the first half of the classes (docs/methods.md §1.1)."""
    del num_classes  # CIFAR-2 is defined on 10 classes: 0-4 vs 5-9 (docs/methods.md §1.1)
    return binary_labels(class_labels).astype(np.float32)


def train_cifar2(
    inputs: np.ndarray,
    class_labels: np.ndarray,
    labels: np.ndarray,
    num_train: int,
    num_classes: int,
    model_cfg: Any,
    config: Cifar2Config,
    *,
    seed: int,
    dataset: str,
) -> results.TaskResults:
    """Trains each kind on each training-set size (docs/methods.md §3.6).

    Keys follow docs/methods.md §1.7: ``(train_key, model_key) = split(key(seed))``; every run starts
    from θ0 = init(model_key) with the same ``train_key``. The test set is every prepared
    test row.

    Args:
        inputs: (N, H, W, C) float32, train rows first.
        class_labels: (N,) original class labels (subsets are stratified on them).
        labels: (N,) 0/1 task labels (``cifar2_labels``).
        num_train: number of leading train rows.
        num_classes: number of classes of the dataset.
        model_cfg: the model preset.
        config: settings.
        seed: integer seed.
        dataset: dataset name (recorded).

    Returns:
        ``TaskResults`` (task_axis ``num_train``); ``extras['report']`` holds the sweep's
        settings, θ0's size and the test set's class balance.
    """
    seed = check_seed(seed)
    x = np.asarray(inputs, np.float32)
    classes = np.asarray(class_labels)
    y = np.asarray(labels, np.float32)
    if x.ndim != 4 or classes.shape != (x.shape[0],) or y.shape != classes.shape:
        raise ValueError(
            f"inputs {x.shape}, class_labels {classes.shape} and labels {y.shape} must be "
            "(N, H, W, C), (N,) and (N,) with the same N."
        )
    if not 0 < num_train < x.shape[0]:
        raise ValueError(
            f"cifar2 needs train and test rows; got num_train={num_train} of N={x.shape[0]}."
        )
    cfg_model = model_config(model_cfg)
    shape = cfg_model.check_input_shape(x.shape[1:])
    sizes = config.sizes(num_train, num_classes)
    subset_seed = seed + 999 if config.subset_seed is None else int(config.subset_seed)
    module = build_model(cfg_model)
    train_key, model_key = jax.random.split(jax.random.key(seed))
    variables0 = init_variables(module, model_key, shape)
    test_x, test_y = x[num_train:], y[num_train:]
    progress = training_progress("cifar2", config.progress)
    settings = results.RunSettings(
        experiment="cifar2",
        dataset=dataset,
        model=cfg_model.name,
        activation=cfg_model.activation,
        task_axis="num_train",
        num_train=num_train,
        num_test=int(test_y.shape[0]),
        seed=seed,
        train=asdict(config.train),
    )
    recorder = results.ResultsRecorder(settings, keep_params=False)
    for size in sizes:
        chosen = stratified_subset(classes[:num_train], size, subset_seed)
        for kind in model_kinds(config.linearize):
            logger.info("cifar2: %s of %s on %d samples", kind, cfg_model.name, size)
            result = train_model(
                module,
                variables0,
                kind,
                x[chosen],
                y[chosen],
                test_x,
                test_y,
                config.train,
                train_key,
                progress=progress,
                task_label=f"n={size}",
            )
            recorder.add(kind, size, result, y[chosen], test_y)
    out = recorder.finish()
    out.extras["report"] = {
        "dataset": dataset,
        "model_config": cfg_model.to_dict(),
        "num_params": count_params(variables0["params"]),
        "seed": seed,
        "subset_seed": subset_seed,
        "sizes": sizes,
        "kinds": list(model_kinds(config.linearize)),
        "num_test": int(test_y.shape[0]),
        "available_train": num_train,
        "positive_fraction_test": float(np.mean(test_y)),
        "train": asdict(config.train),
        "diverged_runs": sorted(
            out.table.loc[out.table["diverged"], "kind"].astype(str)
            + "_"
            + out.table.loc[out.table["diverged"], "task_value"].astype(str)
        ),
    }
    return out
