"""Spectra: the empirical NTK spectrum at θ0 (with the class balance of its eigenfunctions)
and the NAD spectrum (eigenvalues of AᵀA, A the mixed derivative ∂²f/∂θ∂x)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .style import (
    BASELINE_COLOR,
    COLUMN_WIDTH,
    KIND_STYLES,
    ONE_CLASS,
    PAGE_WIDTH,
    LogIndexAxis,
    as_list,
    log_value_axis,
    mark_tasks,
    new_figure,
    paper_style,
    plotly_graph_objects,
    plotly_layout,
    plotly_subplots,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_COLOR = KIND_STYLES["network"].color


@dataclass(frozen=True)
class SpectrumData:
    """What the NTK spectrum figure draws.

    Attributes:
        index: (m,) indices j of the positive eigenvalues (a log axis cannot show the rest).
        values: (m,) those eigenvalues λ_j.
        dropped: how many eigenvalues are ≤ 0 (round-off in the tail) and not drawn.
        count: k, the number of eigenvalues.
        positive_fraction: (k,) fraction of samples with u_j > 0 (label 1 of task j), or
            None when unknown.
        title: the figure title.
    """

    index: np.ndarray
    values: np.ndarray
    dropped: int
    count: int
    positive_fraction: np.ndarray | None
    title: str


def _eigenvalues(values: Any, name: str) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {values.shape}.")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise ValueError(
            f"{name} has non-finite entries (first at indices {bad}): the spectrum did not "
            "converge; rerun it (see its report's residuals) before plotting."
        )
    return values


def _model_text(report: Mapping[str, Any]) -> str:
    cfg = report.get("model_config") or {}
    name, activation = cfg.get("name"), cfg.get("activation")
    if name is None:
        return ""
    return f"{name} ({activation})" if activation else str(name)


def spectrum_data(
    eigenvalues: Any,
    report: Mapping[str, Any] | None = None,
    *,
    positive_fraction: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
) -> SpectrumData:
    """Checks and arranges the NTK spectrum (see :class:`SpectrumData`).

    Args:
        eigenvalues: (k,) eigenvalues, descending.
        report: the spectrum report (``positive_fraction``, ``model_config``, ``dataset``,
            ``n``), optional.
        positive_fraction: (k,) overrides the report's.
        title: overrides the title made from the report.

    Raises:
        ValueError: eigenvalues not 1-D/finite, or a class balance of another length.
    """
    values = _eigenvalues(eigenvalues, "eigenvalues")
    report = dict(report or {})
    if positive_fraction is None and report.get("positive_fraction") is not None:
        positive_fraction = report["positive_fraction"]
    balance = None
    if positive_fraction is not None:
        balance = np.asarray(positive_fraction, np.float64).reshape(-1)
        if balance.size != values.size:
            raise ValueError(
                f"positive_fraction has {balance.size} entries but there are {values.size} "
                "eigenvalues: both must come from the same spectrum run."
            )
    if title is None:
        parts = [_model_text(report), str(report.get("dataset") or "")]
        if report.get("n"):
            parts.append(f"N={report['n']}")
        detail = ", ".join(p for p in parts if p)
        title = "Empirical NTK spectrum at θ0" + (f": {detail}" if detail else "")
    keep = values > 0
    return SpectrumData(
        index=np.flatnonzero(keep),
        values=values[keep],
        dropped=int((~keep).sum()),
        count=values.size,
        positive_fraction=balance,
        title=title,
    )


def draw_eigenvalues(ax: Axes, data: SpectrumData, *, ylabel: str = r"eigenvalue $\lambda_j$"):
    """Eigenvalues against index j on log-log axes (j drawn at j + 1, labelled j)."""
    axis = LogIndexAxis.for_values(np.arange(data.count), index=True)
    label = f"{data.count} eigenvalues"
    if data.dropped:
        label += f" ({data.dropped} ≤ 0 not shown)"
    ax.plot(
        axis.positions(data.index),
        data.values,
        color=_COLOR,
        marker=".",
        ms=2.5,
        lw=1.0,
        label=label,
        gid="eigenvalues",
    )
    ax.set_yscale("log")
    log_value_axis(ax.yaxis, data.values)
    axis.apply(ax)
    ax.set_xlabel("index j (log scale)")
    ax.set_ylabel(f"{ylabel} (log scale)")
    ax.legend(loc="lower left")


def draw_balance(ax: Axes, data: SpectrumData) -> None:
    """Fraction of label 1 of each binarised eigenfunction; one-class tasks starred."""
    balance = data.positive_fraction
    axis = LogIndexAxis.for_values(np.arange(data.count), index=True)
    index = np.arange(balance.size)
    ax.plot(
        axis.positions(index),
        balance,
        color=_COLOR,
        marker=".",
        ms=2.5,
        ls="none",
        gid="positive_fraction",
    )
    one_class = (balance <= 0.0) | (balance >= 1.0)
    if one_class.any():
        mark_tasks(
            ax,
            axis.positions(index[one_class]),
            balance[one_class],
            ONE_CLASS,
            _COLOR,
            ms=9,
            label=ONE_CLASS["label"],
            gid="one_class",
        )
    ax.axhline(0.5, color=BASELINE_COLOR, ls="--", lw=1.0, label="balanced")
    axis.apply(ax)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("eigenfunction index j (log scale)")
    ax.set_ylabel(r"fraction of label 1 ($u_j > 0$)")
    ax.set_title("Class balance of the eigenfunction tasks")
    ax.legend(loc="best")


@paper_style
def spectrum_plot(
    eigenvalues: Any,
    report: Mapping[str, Any] | None = None,
    *,
    positive_fraction: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """The NTK spectrum at θ0 (log-log) beside the class balance of its eigenfunctions.

    Args:
        eigenvalues: (k,) eigenvalues λ_0 ≥ … ≥ λ_{k-1}.
        report: the spectrum report (class balance, model, dataset, N), optional.
        positive_fraction: (k,) fraction of u_j > 0; overrides the report's. Without
            one, only the spectrum panel is drawn.
        title: overrides the title made from the report.

    Returns:
        A page-wide figure (two panels) or a column-wide one (spectrum only).
    """
    data = spectrum_data(eigenvalues, report, positive_fraction=positive_fraction, title=title)
    if data.positive_fraction is None:
        fig = new_figure(COLUMN_WIDTH, 2.6)
        draw_eigenvalues(fig.add_subplot(), data)
    else:
        fig = new_figure(PAGE_WIDTH, 2.6)
        left, right = fig.subplots(1, 2)
        draw_eigenvalues(left, data)
        left.set_title("Eigenvalues")
        draw_balance(right, data)
    fig.suptitle(data.title)
    return fig


def spectrum_plotly(
    eigenvalues: Any,
    report: Mapping[str, Any] | None = None,
    *,
    positive_fraction: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
) -> Any:
    """The interactive (Plotly) version of :func:`spectrum_plot`, with the same numbers.

    Traces: ``eigenvalues`` (x = j + 1, customdata = j) and, with a class balance,
    ``positive fraction`` on a second subplot.
    """
    go = plotly_graph_objects()
    data = spectrum_data(eigenvalues, report, positive_fraction=positive_fraction, title=title)
    axis = LogIndexAxis.for_values(np.arange(data.count), index=True)
    columns = 1 if data.positive_fraction is None else 2
    fig = plotly_subplots(
        rows=1,
        cols=columns,
        subplot_titles=("Eigenvalues", "Class balance of the eigenfunction tasks")[:columns],
    )
    fig.add_trace(
        go.Scatter(
            x=as_list(axis.positions(data.index)),
            y=as_list(data.values),
            customdata=as_list(data.index),
            mode="lines+markers",
            name="eigenvalues" + (f" ({data.dropped} ≤ 0 not shown)" if data.dropped else ""),
            line={"color": _COLOR},
            marker={"size": 4},
            hovertemplate="j=%{customdata}<br>λ=%{y:.4g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.update_xaxes(**axis.plotly(), title_text="index j (log scale)", row=1, col=1)
    fig.update_yaxes(type="log", title_text="eigenvalue λ_j (log scale)", row=1, col=1)
    if data.positive_fraction is not None:
        index = np.arange(data.positive_fraction.size)
        fig.add_trace(
            go.Scatter(
                x=as_list(axis.positions(index)),
                y=as_list(data.positive_fraction),
                customdata=as_list(index),
                mode="markers",
                name="positive fraction",
                marker={"size": 4, "color": _COLOR},
                hovertemplate="j=%{customdata}<br>fraction of label 1: %{y:.3f}<extra></extra>",
            ),
            row=1,
            col=2,
        )
        fig.add_trace(
            go.Scatter(
                x=as_list(list(axis.limits)),
                y=[0.5, 0.5],
                mode="lines",
                name="balanced",
                line={"color": BASELINE_COLOR, "dash": "dash"},
                hoverinfo="skip",
            ),
            row=1,
            col=2,
        )
        fig.update_xaxes(
            **axis.plotly(), title_text="eigenfunction index j (log scale)", row=1, col=2
        )
        fig.update_yaxes(range=[-0.03, 1.03], title_text="fraction of label 1", row=1, col=2)
    fig.update_layout(**plotly_layout(data.title))
    return fig


def draw_nad_spectrum(ax: Axes, values: np.ndarray, report: Mapping[str, Any]) -> None:
    """σ_i² against NAD index i (linear x, log y); the numerically zero tail marked."""
    positive = values > 0
    ax.plot(np.flatnonzero(positive), values[positive], color=_COLOR, lw=1.2, gid="eigenvalues")
    zero = int(report.get("num_zero_eigenvalues") or 0)
    if zero:
        ax.axvline(
            values.size - zero,
            color=BASELINE_COLOR,
            ls="--",
            lw=1.0,
            label=f"{zero} numerically zero",
        )
        ax.legend(loc="lower left")
    ax.set_yscale("log")
    log_value_axis(ax.yaxis, values)
    ax.set_xlim(-0.5, values.size - 0.5)
    ax.set_xlabel("NAD index i")
    ax.set_ylabel(r"$\sigma_i^2$ (eigenvalue of $A^\top A$, log scale)")


@paper_style
def nad_spectrum_plot(
    eigenvalues: Any, report: Mapping[str, Any] | None = None, *, title: str | None = None
) -> Figure:
    """Eigenvalues σ_i² of AᵀA (A = ∂²f/∂θ∂x at x = 0) against NAD index i, log y.

    Args:
        eigenvalues: (D,) eigenvalues, descending (D = input dimension).
        report: the NADs report (``model_config``; ``num_zero_eigenvalues`` marks where
            the numerically zero tail starts), optional.
        title: overrides the title made from the report.
    """
    values = nad_spectrum_values(eigenvalues)
    report = dict(report or {})
    fig = new_figure(COLUMN_WIDTH, 2.4)
    ax = fig.add_subplot()
    draw_nad_spectrum(ax, values, report)
    model = _model_text(report)
    ax.set_title(title or f"NAD spectrum{': ' + model if model else ''}, D={values.size}")
    return fig


def nad_spectrum_values(eigenvalues: Any) -> np.ndarray:
    """(D,) NAD eigenvalues as float64, checked (1-D, non-empty, finite)."""
    return _eigenvalues(eigenvalues, "NAD eigenvalues")
