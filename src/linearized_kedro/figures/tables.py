"""What the accuracy figures read from a results table, checked once for both backends.

The matplotlib and the Plotly version of a figure draw the same :class:`AccuracyData`, so
they show the same numbers. The input is the one results schema of
``experiments.results`` (one row per trained model: task × kind).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .style import ordered_kinds

# Columns an accuracy figure reads (a subset of ``experiments.results.COLUMNS``).
ACCURACY_COLUMNS = (
    "task_axis",
    "task_value",
    "kind",
    "train_accuracy",
    "test_accuracy",
    "majority_baseline_test",
    "degenerate",
    "diverged",
)
# Columns the titles are made of when present.
_DESCRIPTION_COLUMNS = ("model", "activation", "dataset", "epochs")


@dataclass(frozen=True)
class KindSeries:
    """One model kind's accuracies, in ascending task order.

    Attributes:
        kind: the model kind (``network``, ``linear``, ...).
        x: (t,) task values of the ordinary tasks (one-class tasks excluded).
        test, train: (t,) accuracies; NaN where the run diverged (a gap in the curve).
        diverged_x: (d,) task values whose run diverged.
        one_class_x: (c,) task values whose labels are all one class (docs/methods.md §2.3 d).
        one_class_test, one_class_train: (c,) their (trivial) accuracies.
    """

    kind: str
    x: np.ndarray
    test: np.ndarray
    train: np.ndarray
    diverged_x: np.ndarray
    one_class_x: np.ndarray
    one_class_test: np.ndarray
    one_class_train: np.ndarray


@dataclass(frozen=True)
class AccuracyData:
    """Everything an accuracy-vs-task figure draws.

    Attributes:
        task_axis: ``eigen_index``, ``nad_index`` or ``num_train``.
        series: one :class:`KindSeries` per kind present, in the style order.
        baseline_x: (b,) task values of the ordinary tasks.
        baseline: (b,) majority-class test accuracy of each of those tasks.
        all_x: every task value in the table (axis range), one-class and diverged included.
        description: "model (activation) on dataset, E epochs" from the table.
    """

    task_axis: str
    series: tuple[KindSeries, ...]
    baseline_x: np.ndarray
    baseline: np.ndarray
    all_x: np.ndarray
    description: str


def require_columns(table: pd.DataFrame, columns: Iterable[str], figure: str) -> None:
    """Raise a ValueError naming the columns of ``columns`` that ``table`` lacks.

    Raises:
        TypeError: ``table`` is not a DataFrame.
        ValueError: columns are missing (says how to get a complete table).
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(
            f"The {figure} figure needs a results table (pandas.DataFrame); "
            f"got {type(table).__name__}."
        )
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(
            f"The results table lacks columns {missing} that the {figure} figure draws. "
            "Pass the table of experiments.results (one row per task × kind); a table read "
            "back from CSV is restored with experiments.results.conform(table), and a table "
            "written by older code must be produced again by rerunning the experiment."
        )


def as_bool(values: pd.Series) -> np.ndarray:
    """A bool column, also when read back from CSV as text ("True"/"False")."""
    if values.dtype == bool or str(values.dtype) == "boolean":
        return values.fillna(False).to_numpy(bool)
    return values.astype(str).str.strip().str.lower().isin(["true", "1", "1.0"]).to_numpy()


def describe(table: pd.DataFrame) -> str:
    """ "lenet (relu) on digits, 20 epochs" from the table's settings columns (if present)."""

    def values(column: str) -> str:
        if column not in table:
            return ""
        return "/".join(str(v) for v in dict.fromkeys(table[column].dropna().tolist()))

    text = values("model")
    if values("activation"):
        text += f" ({values('activation')})"
    if values("dataset"):
        text += f" on {values('dataset')}"
    if values("epochs"):
        text += f", {values('epochs')} epochs"
    return text.strip()


def select_task_rows(
    table: pd.DataFrame,
    task_axis: str,
    figure: str,
    *,
    columns: Iterable[str] = ACCURACY_COLUMNS,
    experiment: str | None = None,
) -> pd.DataFrame:
    """The rows of ``table`` on ``task_axis`` (and ``experiment``), one per task × kind.

    Raises:
        ValueError: a column is missing, no row is on the axis, or a (task, kind) pair
            appears twice (e.g. two experiments in one table: pass ``experiment``).
    """
    columns = tuple(columns)
    require_columns(table, columns, figure)
    rows = table[table["task_axis"].astype(str) == task_axis]
    if experiment is not None:
        require_columns(table, ["experiment"], figure)
        rows = rows[rows["experiment"].astype(str) == experiment]
    if rows.empty:
        found = sorted(map(str, table["task_axis"].unique()))
        raise ValueError(
            f"The results table has no rows with task_axis == {task_axis!r}"
            + (f" and experiment == {experiment!r}" if experiment else "")
            + f" (its task axes: {found}): the {figure} figure needs the results of that "
            "experiment."
        )
    duplicated = rows.duplicated(["task_value", "kind"], keep=False)
    if duplicated.any():
        pairs = rows.loc[duplicated, ["task_value", "kind"]].drop_duplicates()
        raise ValueError(
            f"The results table has several rows for (task_value, kind) "
            f"{[tuple(p) for p in pairs.itertuples(index=False)]} in the {figure} figure: "
            "select one experiment (experiment=...) or one run's rows before plotting."
        )
    return rows.sort_values("task_value", kind="stable")


def accuracy_data(
    table: pd.DataFrame, task_axis: str, figure: str, *, experiment: str | None = None
) -> AccuracyData:
    """The accuracies of ``table`` on ``task_axis``, split into ordinary, one-class and
    diverged tasks per kind (see :class:`AccuracyData`)."""
    rows = select_task_rows(table, task_axis, figure, experiment=experiment)
    x_all = rows["task_value"].to_numpy(np.float64)
    one_class = as_bool(rows["degenerate"])
    diverged = as_bool(rows["diverged"])
    test = rows["test_accuracy"].to_numpy(np.float64)
    train = rows["train_accuracy"].to_numpy(np.float64)
    kinds = rows["kind"].astype(str).to_numpy()
    series = []
    for kind in ordered_kinds(kinds):
        mine = kinds == kind
        ordinary = mine & ~one_class
        special = mine & one_class
        series.append(
            KindSeries(
                kind=kind,
                x=x_all[ordinary],
                test=np.where(diverged[ordinary], np.nan, test[ordinary]),
                train=np.where(diverged[ordinary], np.nan, train[ordinary]),
                diverged_x=x_all[mine & diverged],
                one_class_x=x_all[special & ~diverged],
                one_class_test=test[special & ~diverged],
                one_class_train=train[special & ~diverged],
            )
        )
    tasks = rows[~one_class].drop_duplicates("task_value")
    return AccuracyData(
        task_axis=task_axis,
        series=tuple(series),
        baseline_x=tasks["task_value"].to_numpy(np.float64),
        baseline=tasks["majority_baseline_test"].to_numpy(np.float64),
        all_x=np.unique(x_all),
        description=describe(rows),
    )
