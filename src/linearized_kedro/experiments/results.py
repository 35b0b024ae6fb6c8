"""One results schema for every training experiment, and one divergence policy.

Every trained model (one task × one model kind) is one row of the same table, whatever
the experiment: the eigenfunction benchmark, the pretrained-kernel comparison, the NAD
benchmark and CIFAR-2. The row carries the task, the model, the metrics and the run
settings (sizes, epochs, optimiser, seed, k), so a table read back alone says how it was
made and tables of different runs can be concatenated.

Divergence policy (the only one): a run whose loss or parameters became non-finite is
reported with ``diverged = True``, ``epochs_completed`` the last finite epoch, every
metric column NaN (a diverged model has no accuracy), and no saved parameters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np
import pandas as pd

from linearized_kedro.core.tasks import majority_baseline
from linearized_kedro.core.train import HISTORY_KEYS, TrainResult

logger = logging.getLogger(__name__)

# What the ``task_value`` of a row indexes.
TASK_AXES = ("eigen_index", "nad_index", "num_train")

# Model kinds across experiments: the network, its linearisation f(θ0,x) + J(θ0,x)(θ−θ0),
# and the offset-free linearisations J(θc,x)(θ−θc) at θ0 and at the trained θ_end.
KINDS = ("network", "linear", "linear_init", "linear_pretrained")

# The metric columns: the training engine's per-epoch history, final epoch.
METRICS = HISTORY_KEYS

# Column → dtype, in table order.
SCHEMA: dict[str, str] = {
    "experiment": "string",
    "dataset": "string",
    "model": "string",
    "activation": "string",
    "kind": "string",
    "task_axis": "string",
    "task_value": "int64",
    "eigenvalue": "float64",
    "num_train": "int64",
    "num_test": "int64",
    "positive_fraction_train": "float64",
    "positive_fraction_test": "float64",
    "majority_baseline_train": "float64",
    "majority_baseline_test": "float64",
    "degenerate": "bool",
    **dict.fromkeys(METRICS, "float64"),
    "diverged": "bool",
    "epochs": "int64",
    "epochs_completed": "int64",
    "batch_size": "int64",
    "optimizer": "string",
    "lr_schedule": "string",
    "max_lr": "float64",
    "momentum": "float64",
    "num_eigvecs": "Int64",  # k of the spectrum the task comes from; <NA> elsewhere
    "seed": "int64",
}
COLUMNS = tuple(SCHEMA)
KEY = ("experiment", "task_axis", "task_value", "kind")


@dataclass(frozen=True)
class RunSettings:
    """What every row of one experiment run shares (the run's identity in the table)."""

    experiment: str
    dataset: str
    model: str
    activation: str
    task_axis: str
    num_train: int
    num_test: int
    seed: int
    train: Mapping[str, Any]
    num_eigvecs: int | None = None

    def __post_init__(self) -> None:
        if self.task_axis not in TASK_AXES:
            raise ValueError(f"task_axis must be one of {TASK_AXES}; got {self.task_axis!r}.")


@dataclass
class TaskResults:
    """What a training experiment returns.

    Attributes:
        table: one row per (task, kind) in :data:`SCHEMA` order (see :func:`results_table`).
        histories: ``'<kind>_<task_value>'`` → metric → per-epoch list.
        params: ``'<kind>_<task_value>'`` → trained variables (NumPy), finished runs only.
        extras: experiment-specific arrays (e.g. kernel alignment), JSON-friendly.
    """

    table: pd.DataFrame
    histories: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


def run_name(kind: str, task_value: int) -> str:
    """The key of one trained model in histories and parameter collections."""
    return f"{kind}_{int(task_value)}"


def task_row(
    settings: RunSettings,
    *,
    kind: str,
    task_value: int,
    labels_train: np.ndarray,
    labels_test: np.ndarray,
    final: Mapping[str, float] | None,
    diverged: bool,
    eigenvalue: float = math.nan,
) -> dict[str, Any]:
    """One row of the results table; applies the divergence policy.

    Args:
        settings: the run's shared settings.
        kind: one of :data:`KINDS`.
        task_value: the eigen/NAD index or the training-set size.
        labels_train, labels_test: the task's 0/1 labels (class balance and baselines).
        final: the engine's final metrics (``METRICS`` plus ``epochs_completed``), or
            ``None`` when the model was not trained (e.g. no pretrained point after a
            diverged network).
        diverged: the run stopped on a non-finite loss or parameter.
        eigenvalue: the task's eigenvalue (NaN where it has none).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
    labels_train = np.asarray(labels_train)
    labels_test = np.asarray(labels_test)
    both = np.concatenate([labels_train, labels_test])
    train = dict(settings.train)
    final = dict(final or {})
    failed = diverged or not final
    row = {
        "experiment": settings.experiment,
        "dataset": settings.dataset,
        "model": settings.model,
        "activation": settings.activation,
        "kind": kind,
        "task_axis": settings.task_axis,
        "task_value": int(task_value),
        "eigenvalue": float(eigenvalue),
        "num_train": int(len(labels_train)),
        "num_test": int(len(labels_test)),
        "positive_fraction_train": _mean(labels_train),
        "positive_fraction_test": _mean(labels_test),
        "majority_baseline_train": majority_baseline(labels_train),
        "majority_baseline_test": majority_baseline(labels_test),
        "degenerate": bool(both.size and np.all(both == both[0])),
        **{m: math.nan if failed else float(final.get(m, math.nan)) for m in METRICS},
        "diverged": bool(failed),
        "epochs": int(train.get("epochs", 0)),
        "epochs_completed": int(final.get("epochs_completed", 0)),
        "batch_size": int(train.get("batch_size", 0)),
        "optimizer": str(train.get("optimizer", "")),
        "lr_schedule": str(train.get("lr_schedule", "")),
        "max_lr": float(train.get("max_lr", math.nan)),
        "momentum": float(train.get("momentum", math.nan)),
        "num_eigvecs": settings.num_eigvecs,
        "seed": int(settings.seed),
    }
    return row


class ResultsRecorder:
    """Collects one experiment run's trained models into a :class:`TaskResults`.

    Every training experiment records each (task, kind) the same way: one table row under
    the divergence policy, its per-epoch history, and its trained variables unless it
    diverged.

    Args:
        settings: the run's shared settings.
        keep_params: keep the trained variables (False: table and histories only).
    """

    def __init__(self, settings: RunSettings, *, keep_params: bool = True):
        self.settings = settings
        self.keep_params = keep_params
        self.rows: list[dict[str, Any]] = []
        self.histories: dict[str, dict[str, list[float]]] = {}
        self.params: dict[str, Any] = {}

    def add(
        self,
        kind: str,
        task_value: int,
        result: TrainResult | None,
        labels_train: np.ndarray,
        labels_test: np.ndarray,
        *,
        eigenvalue: float = math.nan,
    ) -> dict[str, Any]:
        """Records one trained model; returns its row.

        Args:
            kind: one of :data:`KINDS`.
            task_value: the eigen/NAD index or the training-set size.
            result: the engine's result, or ``None`` for a model that was not trained
                (reported as failed).
            labels_train, labels_test: the task's 0/1 labels.
            eigenvalue: the task's eigenvalue (NaN where it has none).
        """
        row = task_row(
            self.settings,
            kind=kind,
            task_value=task_value,
            labels_train=labels_train,
            labels_test=labels_test,
            final=None if result is None else result.final,
            diverged=result is None or result.diverged,
            eigenvalue=eigenvalue,
        )
        self.rows.append(row)
        if result is None:
            return row
        name = run_name(kind, task_value)
        self.histories[name] = {
            metric: np.asarray(values, np.float64).tolist()
            for metric, values in result.history.items()
        }
        if result.diverged:
            logger.error(
                "%s: %s diverged (NaN/Inf loss); reported as failed.",
                self.settings.experiment,
                name,
            )
        elif self.keep_params:
            variables = {"params": result.params, **(result.state or {})}
            self.params[name] = jax.tree_util.tree_map(np.asarray, variables)
        return row

    def finish(self, extras: Mapping[str, Any] | None = None) -> TaskResults:
        """The collected table (:func:`results_table`), histories, parameters and extras."""
        return TaskResults(
            table=results_table(self.rows),
            histories=self.histories,
            params=self.params,
            extras=dict(extras or {}),
        )


def results_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows as a table in :data:`SCHEMA` (column order and dtypes), sorted by :data:`KEY`.

    Raises:
        ValueError: a row misses a column or has an unknown one, or two rows share a key.
    """
    rows = [dict(r) for r in rows]
    for row in rows:
        missing = set(COLUMNS) - set(row)
        extra = set(row) - set(COLUMNS)
        if missing or extra:
            raise ValueError(
                f"Result row does not match the schema: missing {sorted(missing)}, "
                f"unknown {sorted(extra)}."
            )
    table = pd.DataFrame(rows, columns=list(COLUMNS)).astype(SCHEMA)
    if table.duplicated(list(KEY)).any():
        dup = table.loc[table.duplicated(list(KEY), keep=False), list(KEY)]
        raise ValueError(f"Duplicate result rows for {dup.to_dict('records')}.")
    return table.sort_values(list(KEY)).reset_index(drop=True)


def conform(table: pd.DataFrame) -> pd.DataFrame:
    """A loaded results table (e.g. from CSV) back in :data:`SCHEMA` dtypes.

    Raises:
        ValueError: naming the missing columns (a table written by older code).
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"The results table lacks columns {missing}: it was written by an older version "
            "of the project. Rerun the experiment."
        )
    return table[list(COLUMNS)].astype(SCHEMA)


def _mean(labels: np.ndarray) -> float:
    return float(np.mean(labels > 0.5)) if np.size(labels) else math.nan
