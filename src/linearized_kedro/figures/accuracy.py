"""Accuracy against the task: eigenfunction index, NAD index, CIFAR-2 training-set size.

Test accuracy solid, train accuracy dotted, one colour and marker per model kind, the
majority-class accuracy of each task dashed. A one-class task (the top NTK eigenvector,
docs/methods.md §2.3 d) is a marked point apart from the curves, a diverged run a cross at the bottom
(never a result). Index axes are logarithmic with index i drawn at i + 1 and labelled i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import (
    BASELINE_COLOR,
    COLUMN_WIDTH,
    DIVERGED,
    ONE_CLASS,
    SPLIT_DASH,
    SPLIT_LINESTYLE,
    LogIndexAxis,
    as_list,
    kind_style,
    mark_tasks,
    new_figure,
    paper_style,
    plotly_graph_objects,
    plotly_layout,
)
from .tables import AccuracyData, KindSeries, accuracy_data

if TYPE_CHECKING:
    from matplotlib.axes import Axes


@dataclass(frozen=True)
class TaskAxis:
    """How one task axis is drawn: index (position i + 1) or count, labels, titles."""

    index: bool
    symbol: str
    xlabel: str
    title: str


TASK_AXES: dict[str, TaskAxis] = {
    "eigen_index": TaskAxis(
        True, "j", "NTK eigenfunction index j (log scale)", "NTK eigenfunction tasks"
    ),
    "nad_index": TaskAxis(True, "i", "NAD index i (log scale)", "Tasks along NAD i"),
    "num_train": TaskAxis(
        False, "n", "training-set size n (log scale)", "CIFAR-2 (classes 0–4 vs 5–9)"
    ),
}


def _y_limits(data: AccuracyData) -> tuple[float, float]:
    """[low, 1.03] with low ≤ 0.4, lower when a value (e.g. an anti-correlated task) is."""
    values = [data.baseline]
    for s in data.series:
        values += [s.test, s.train, s.one_class_test]
    finite = np.concatenate([np.ravel(v) for v in values])
    finite = finite[np.isfinite(finite)]
    low = min(0.4, float(finite.min()) - 0.03) if finite.size else 0.4
    return low, 1.03


# One-class tasks and diverged runs are marks without a line: matplotlib ``ms`` and
# Plotly marker sizes, and what hovering a Plotly mark says after the task value.
_MARK_SIZE = {"one_class": 9, "diverged": 7}
_MARKER_SIZE = {"one_class": 14, "diverged": 10}
_MARK_HOVER = {
    "one_class": ": one class, test accuracy %{y:.3f} (trivial)",
    "diverged": ": diverged",
}


def _task_marks(s: KindSeries, low: float) -> list[tuple[dict, str, np.ndarray, np.ndarray]]:
    """(flag, what, x, y) of a series' one-class tasks and diverged runs, where it has any.

    Diverged runs have no accuracy; their crosses sit just above the axis floor ``low``.
    """
    marks = [
        (ONE_CLASS, "one_class", s.one_class_x, s.one_class_test),
        (DIVERGED, "diverged", s.diverged_x, np.full(s.diverged_x.size, low + 0.02)),
    ]
    return [mark for mark in marks if mark[2].size]


def _title(data: AccuracyData, axis: TaskAxis, title: str | None) -> str:
    if title is not None:
        return title
    return f"{axis.title}\n{data.description}" if data.description else axis.title


def draw_accuracy(ax: Axes, data: AccuracyData, *, legend: bool = False) -> None:
    """Draws ``data`` on ``ax``; every line's ``gid`` is ``'<kind>:<what>'`` (or
    ``'baseline'``) so the drawn numbers can be read back."""
    axis_style = TASK_AXES[data.task_axis]
    axis = LogIndexAxis.for_values(data.all_x, index=axis_style.index)
    low, high = _y_limits(data)
    for s in data.series:
        style = kind_style(s.kind)
        for split, values in (("test", s.test), ("train", s.train)):
            ax.plot(
                axis.positions(s.x),
                values,
                color=style.color,
                marker=style.marker,
                ls=SPLIT_LINESTYLE[split],
                alpha=1.0 if split == "test" else 0.75,
                label=f"{style.label} ({split})",
                gid=f"{s.kind}:{split}",
            )
        for flag, what, x, y in _task_marks(s, low):
            mark_tasks(
                ax,
                axis.positions(x),
                y,
                flag,
                style.color,
                ms=_MARK_SIZE[what],
                label=f"{style.label}: {flag['label']}",
                gid=f"{s.kind}:{what}",
            )
    if data.baseline.size:
        ax.plot(
            axis.positions(data.baseline_x),
            data.baseline,
            color=BASELINE_COLOR,
            ls="--",
            lw=1.0,
            label="majority class (test)",
            gid="baseline",
        )
    one_class = sorted({float(v) for s in data.series for v in s.one_class_x})
    for value in one_class:
        ax.annotate(
            "one class",
            (float(axis.positions([value])[0]), 1.0),
            xytext=(0, -12),
            textcoords="offset points",
            ha="center",
            fontsize=5.5,
            color=BASELINE_COLOR,
        )
    axis.apply(ax)
    ax.set_ylim(low, high)
    ax.set_xlabel(axis_style.xlabel)
    ax.set_ylabel("accuracy")
    if legend:
        ax.legend(*legend_entries(data), fontsize=5.5, loc="lower left")


def legend_entries(data: AccuracyData) -> tuple[list[Line2D], list[str]]:
    """A compact legend: one entry per kind, the two line styles, then the markers used."""
    handles, labels = [], []
    for s in data.series:
        style = kind_style(s.kind)
        handles.append(Line2D([], [], color=style.color, marker=style.marker))
        labels.append(style.label)
    for split in ("test", "train"):
        handles.append(Line2D([], [], color="black", ls=SPLIT_LINESTYLE[split]))
        labels.append(f"{split} accuracy")
    if data.baseline.size:
        handles.append(Line2D([], [], color=BASELINE_COLOR, ls="--", lw=1.0))
        labels.append("majority class (test)")
    if any(s.one_class_x.size for s in data.series):
        handles.append(
            Line2D([], [], ls="none", marker=ONE_CLASS["marker"], ms=8, mfc="none", mec="black")
        )
        labels.append(ONE_CLASS["label"])
    if any(s.diverged_x.size for s in data.series):
        handles.append(Line2D([], [], ls="none", marker=DIVERGED["marker"], color="black"))
        labels.append(DIVERGED["label"])
    return handles, labels


@paper_style
def accuracy_plot(
    results: pd.DataFrame,
    task_axis: str,
    *,
    experiment: str | None = None,
    title: str | None = None,
    width: float = COLUMN_WIDTH,
) -> Figure:
    """Accuracy against the task (matplotlib), from a results table.

    Args:
        results: the results table (``experiments.results`` schema; at least
            :data:`~linearized_kedro.figures.tables.ACCURACY_COLUMNS`).
        task_axis: ``eigen_index``, ``nad_index`` or ``num_train``.
        experiment: keep only this experiment's rows (a table holding several).
        title: replaces the title made from the table's settings.
        width: figure width in inches (column width by default).

    Returns:
        A one-axes figure, legend below the axes.

    Raises:
        ValueError: a column is missing, no row is on ``task_axis``, or a task × kind
            appears twice.
    """
    _check_axis(task_axis)
    data = accuracy_data(results, task_axis, "accuracy", experiment=experiment)
    fig = new_figure(width, width * 0.95)
    ax = fig.add_subplot()
    draw_accuracy(ax, data)
    ax.set_title(_title(data, TASK_AXES[task_axis], title))
    fig.legend(*legend_entries(data), loc="outside lower center", ncols=2)
    return fig


def accuracy_plotly(
    results: pd.DataFrame,
    task_axis: str,
    *,
    experiment: str | None = None,
    title: str | None = None,
) -> Any:
    """The interactive (Plotly) version of :func:`accuracy_plot`, with the same numbers.

    Every trace carries its task values in ``customdata`` (x is the log-axis position,
    index + 1 for index axes); trace names are the legend labels.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    _check_axis(task_axis)
    go = plotly_graph_objects()
    data = accuracy_data(results, task_axis, "accuracy", experiment=experiment)
    axis_style = TASK_AXES[task_axis]
    axis = LogIndexAxis.for_values(data.all_x, index=axis_style.index)
    low, high = _y_limits(data)
    symbol = axis_style.symbol
    fig = go.Figure()
    for s in data.series:
        style = kind_style(s.kind)
        for split, values in (("test", s.test), ("train", s.train)):
            fig.add_trace(
                go.Scatter(
                    x=as_list(axis.positions(s.x)),
                    y=as_list(values),
                    customdata=as_list(s.x),
                    mode="lines+markers",
                    name=f"{style.label} ({split})",
                    legendgroup=s.kind,
                    line={"color": style.color, "dash": SPLIT_DASH[split]},
                    marker={"symbol": style.symbol, "color": style.color},
                    opacity=1.0 if split == "test" else 0.75,
                    hovertemplate=f"{symbol}=%{{customdata}}<br>{split} accuracy %{{y:.3f}}"
                    "<extra>%{fullData.name}</extra>",
                    meta={"kind": s.kind, "what": split},
                )
            )
        for flag, what, x, y in _task_marks(s, low):
            fig.add_trace(
                go.Scatter(
                    x=as_list(axis.positions(x)),
                    y=as_list(y),
                    customdata=as_list(x),
                    mode="markers",
                    name=f"{style.label}: {flag['label']}",
                    legendgroup=s.kind,
                    marker={
                        "symbol": flag["symbol"],
                        "size": _MARKER_SIZE[what],
                        "color": style.color,
                    },
                    hovertemplate=f"{symbol}=%{{customdata}}{_MARK_HOVER[what]}<extra></extra>",
                    meta={"kind": s.kind, "what": what},
                )
            )
    if data.baseline.size:
        fig.add_trace(
            go.Scatter(
                x=as_list(axis.positions(data.baseline_x)),
                y=as_list(data.baseline),
                customdata=as_list(data.baseline_x),
                mode="lines",
                name="majority class (test)",
                line={"color": BASELINE_COLOR, "dash": "dash"},
                hovertemplate=f"{symbol}=%{{customdata}}<br>majority class %{{y:.3f}}"
                "<extra></extra>",
                meta={"kind": None, "what": "baseline"},
            )
        )
    fig.update_layout(
        **plotly_layout(
            _title(data, axis_style, title),
            xaxis={**axis.plotly(), "title": {"text": axis_style.xlabel}},
            yaxis={"title": {"text": "accuracy"}, "range": [low, high]},
        )
    )
    return fig


def _check_axis(task_axis: str) -> None:
    if task_axis not in TASK_AXES:
        raise ValueError(f"task_axis must be one of {sorted(TASK_AXES)}; got {task_axis!r}.")


def eigen_accuracy_plot(results: pd.DataFrame, **kwargs: Any) -> Figure:
    """The paper's main figure: accuracy vs NTK eigenfunction index (matplotlib).

    ``results``: the ``eigen_training`` results table; keywords as :func:`accuracy_plot`.
    """
    return accuracy_plot(results, "eigen_index", **kwargs)


def eigen_accuracy_plotly(results: pd.DataFrame, **kwargs: Any) -> Any:
    """Interactive accuracy vs NTK eigenfunction index (Plotly)."""
    return accuracy_plotly(results, "eigen_index", **kwargs)


def nad_accuracy_plot(results: pd.DataFrame, **kwargs: Any) -> Figure:
    """Accuracy vs NAD index (matplotlib); index 0 at position 1 of the log axis."""
    return accuracy_plot(results, "nad_index", **kwargs)


def nad_accuracy_plotly(results: pd.DataFrame, **kwargs: Any) -> Any:
    """Interactive accuracy vs NAD index (Plotly)."""
    return accuracy_plotly(results, "nad_index", **kwargs)


def cifar2_accuracy_plot(results: pd.DataFrame, **kwargs: Any) -> Figure:
    """CIFAR-2 accuracy vs training-set size, network vs linearisation (matplotlib)."""
    return accuracy_plot(results, "num_train", **kwargs)


def cifar2_accuracy_plotly(results: pd.DataFrame, **kwargs: Any) -> Any:
    """Interactive CIFAR-2 accuracy vs training-set size (Plotly)."""
    return accuracy_plotly(results, "num_train", **kwargs)
