"""Nodes of ``cifar2``: binary labels → size sweep of network and linearisation → table, figure.

SPEC §3.6: the original trains only the network on all 50 000 CIFAR-2 images; the
reproduction adds the linearisation f(θ0, x) + J(θ0, x)(θ − θ0) (SPEC §1.5) and a sweep
over training-set sizes, because the non-linear advantage depends on it (SPEC §2.2).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import jax
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linearized_kedro.core.config import dataclass_from_mapping  # noqa: E402
from linearized_kedro.core.data import binary_labels, stratified_subset  # noqa: E402
from linearized_kedro.core.models import (  # noqa: E402
    ModelConfig,
    build_model,
    count_params,
    init_variables,
)
from linearized_kedro.core.plots import plot_accuracy_curves  # noqa: E402
from linearized_kedro.core.tasks import majority_baseline  # noqa: E402
from linearized_kedro.core.train import TrainConfig, train_model  # noqa: E402
from linearized_kedro.pipelines.common import model_kinds  # noqa: E402

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
# Metrics that are meaningless for a diverged run: reported as NaN, never as results.
_METRIC_PREFIXES = ("train_", "test_", "param_distance")


@dataclass(frozen=True)
class Cifar2Params:
    """``cifar2:`` parameters (``conf/base/parameters_cifar2.yml``).

    Attributes:
        num_train: one training-set size or a list (a sweep); -1 = every prepared train row.
        linearize: false (network only) | true (linearisation only) | both.
        subset_seed: seed of the stratified subsets; null → seed + 999 (SPEC §1.1).
        progress: tqdm progress bars of the training engine.
        train: the training block (``core.train.TrainConfig`` fields).
    """

    num_train: Any = field(default_factory=lambda: [250, 500, 1000, -1])
    linearize: Any = "both"
    subset_seed: int | None = None
    progress: bool = False
    train: dict = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: Mapping[str, Any] | Cifar2Params) -> Cifar2Params:
        """Accepts the dataclass (Kedro's typed params) or a plain mapping (tests, notebooks)."""
        return dataclass_from_mapping(cls, value, "cifar2")


def _check_class_labels(prepared_labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(prepared_labels)
    if labels.ndim != 1:
        raise ValueError(f"prepared_labels must be (N,); got shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            "cifar2 needs the original 10-class labels (0..9) of a 10-class dataset "
            "(cifar10, mnist, fashion_mnist, digits); got labels in "
            f"[{labels.min()}, {labels.max()}]."
        )
    return labels.astype(np.int64)


def make_cifar2_labels(prepared_labels: np.ndarray, data_report: dict[str, Any]) -> np.ndarray:
    """CIFAR-2 labels: classes 0-4 → 1, classes 5-9 → 0 (SPEC §1.1).

    Args:
        prepared_labels: (N,) int original classes in 0..9, train rows first.
        data_report: the data pipeline's report (``num_train`` + ``num_test`` must be N).

    Returns:
        (N,) float32 labels in {0, 1}.
    """
    labels = _check_class_labels(prepared_labels)
    expected = int(data_report["num_train"]) + int(data_report["num_test"])
    if labels.shape[0] != expected:
        raise ValueError(
            f"prepared_labels has {labels.shape[0]} rows but data_report says num_train + "
            f"num_test = {expected}; rerun the data pipeline."
        )
    return binary_labels(labels).astype(np.float32)


def training_sizes(num_train: Any, available: int) -> list[int]:
    """``cifar2.num_train`` (int or list; -1 = all) → sorted distinct sizes ≤ ``available``."""
    values = (
        num_train
        if isinstance(num_train, Sequence) and not isinstance(num_train, str)
        else [num_train]
    )
    sizes = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(
                f"cifar2.num_train must be an integer or a list of integers; got {value!r}."
            )
        size = available if int(value) == -1 else int(value)
        if size < NUM_CLASSES:
            raise ValueError(
                f"cifar2.num_train={value} is too small: a subset stratified on the "
                f"{NUM_CLASSES} original classes needs at least {NUM_CLASSES} samples "
                "(use -1 for every prepared training sample)."
            )
        if size > available:
            raise ValueError(
                f"cifar2.num_train={size} exceeds the {available} prepared training samples. "
                "Lower cifar2.num_train (or use -1 for all of them), or prepare more data "
                "with --params data.num_train=... (-1 = the full split)."
            )
        sizes.append(size)
    if not sizes:
        raise ValueError("cifar2.num_train is empty; give at least one training-set size.")
    return sorted(set(sizes))


def train_cifar2(
    prepared_inputs: np.ndarray,
    prepared_labels: np.ndarray,
    cifar2_labels: np.ndarray,
    data_report: dict[str, Any],
    model_config: ModelConfig,
    cifar2: Cifar2Params,
    seed: int,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Trains the network and/or its linearisation on each training-set size (SPEC §3.6).

    Keys follow SPEC §1.7: ``(train_key, model_key) = split(key(seed))``. Every run starts
    from the same θ0 (``model_key``) and uses the same ``train_key`` (same batch order
    for the network and its linearisation). The test set is every prepared test row.

    Args:
        prepared_inputs: (N, H, W, C) float32, train rows first.
        prepared_labels: (N,) original classes (stratification of the subsets).
        cifar2_labels: (N,) {0, 1} labels from ``make_cifar2_labels``.
        data_report: the data pipeline's report (num_train, num_test, dataset).
        model_config: the selected model preset.
        cifar2: sweep settings.
        seed: integer seed.

    Returns:
        results table (one row per size × kind), per-epoch histories
        (``{'<kind>_<size>': {metric: list}}``) and a report dict.
    """
    params = Cifar2Params.from_value(cifar2)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool):
        raise ValueError(f"'seed' must be an integer; got {seed!r}.")
    kinds = model_kinds(params.linearize)
    cfg = TrainConfig.from_dict(params.train)
    config = ModelConfig.from_dict(model_config)
    x = np.asarray(prepared_inputs, np.float32)
    classes = _check_class_labels(prepared_labels)
    y = np.asarray(cifar2_labels, np.float32)
    num_train = int(data_report["num_train"])
    if x.ndim != 4 or x.shape[0] != y.shape[0] or classes.shape[0] != y.shape[0]:
        raise ValueError(
            f"prepared_inputs {x.shape}, prepared_labels {classes.shape} and cifar2_labels "
            f"{y.shape} must be (N, H, W, C), (N,) and (N,) with the same N."
        )
    if not 0 < num_train < x.shape[0]:
        raise ValueError(
            f"cifar2 needs train and test rows; data_report says num_train={num_train} "
            f"of N={x.shape[0]}."
        )
    shape = config.check_input_shape(x.shape[1:])
    sizes = training_sizes(params.num_train, num_train)
    subset_seed = int(seed) + 999 if params.subset_seed is None else int(params.subset_seed)

    module = build_model(config)
    train_key, model_key = jax.random.split(jax.random.key(int(seed)))
    variables0 = init_variables(module, model_key, shape)
    test_x, test_y = x[num_train:], y[num_train:]
    baseline = majority_baseline(test_y)

    rows: list[dict[str, Any]] = []
    histories: dict[str, Any] = {}
    for size in sizes:
        rows_idx = stratified_subset(classes[:num_train], size, subset_seed)
        train_x, train_y = x[rows_idx], y[rows_idx]
        for kind in kinds:
            logger.info(
                "cifar2: training %s of %s on %d samples for %d epochs",
                kind,
                config.name,
                size,
                cfg.epochs,
            )
            result = train_model(
                module,
                variables0,
                kind,
                train_x,
                train_y,
                test_x,
                test_y,
                cfg,
                train_key,
                progress=params.progress,
            )
            row: dict[str, Any] = {
                "num_train": size,
                "kind": kind,
                "num_test": int(test_y.shape[0]),
                "epochs": cfg.epochs,
                "diverged": bool(result.diverged),
                "positive_fraction_train": float(np.mean(train_y)),
                "majority_baseline_test": baseline,
            }
            row.update({key: float(value) for key, value in result.final.items()})
            if result.diverged:
                # SPEC §4: a NaN run is a failure, never a number in the table.
                logger.error(
                    "cifar2: %s on %d samples diverged (NaN/Inf loss); reported as failed.",
                    kind,
                    size,
                )
                for key in list(row):
                    if key.startswith(_METRIC_PREFIXES):
                        row[key] = float("nan")
            rows.append(row)
            histories[f"{kind}_{size}"] = {
                key: np.asarray(value).tolist() for key, value in result.history.items()
            }
    table = pd.DataFrame(rows).sort_values(["num_train", "kind"]).reset_index(drop=True)
    report = {
        "dataset": data_report.get("dataset"),
        "model_config": config.to_dict(),
        "num_params": count_params(variables0["params"]),
        "seed": int(seed),
        "subset_seed": subset_seed,
        "sizes": sizes,
        "kinds": list(kinds),
        "num_test": int(test_y.shape[0]),
        "available_train": num_train,
        "majority_baseline_test": baseline,
        "positive_fraction_test": float(np.mean(test_y)),
        "train": asdict(cfg),
        "diverged_runs": [f"{r['kind']}_{r['num_train']}" for r in rows if r["diverged"]],
    }
    logger.info("cifar2 results:\n%s", table.to_string(index=False))
    return table, histories, report


def plot_cifar2_accuracy(cifar2_results: pd.DataFrame, cifar2_report: dict[str, Any]):
    """Test (and train) accuracy vs training-set size, network vs linearisation (log x).

    Args:
        cifar2_results: the table of ``train_cifar2``.
        cifar2_report: its report (majority-class baseline, model, dataset, epochs).

    Returns:
        A matplotlib figure.
    """
    cfg = cifar2_report.get("model_config", {})
    return plot_accuracy_curves(
        cifar2_results,
        "num_train",
        xscale="log",
        xlabel="training-set size",
        baseline=cifar2_report.get("majority_baseline_test"),
        title=(
            f"CIFAR-2 split (classes 0-4 vs 5-9): {cfg.get('name')} on "
            f"{cifar2_report.get('dataset')}, {cifar2_report.get('train', {}).get('epochs')} epochs"
        ),
    )
