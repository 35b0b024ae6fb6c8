"""Kernel alignment: does the kernel rotate toward the trained task, more on train than test?

For each network trained on eigen-index j, the stored alignment (``eigen_training``) holds
the trace-normalised Rayleigh quotients u_iᵀ Θ u_i / (‖u_i‖² · tr Θ / n) of the kernel
restricted to the train or the test samples, for every initial eigenvector u_i, with
Θ = Θ_0 (θ0) and Θ = Θ_end. The θ0 curve is the baseline the end curve is judged against:
the two splits differ before any training, so only the change from θ0 is evidence of
rotation. The concentration ratio is the quotient at j over its neighbours' mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from .style import (
    BASELINE_COLOR,
    PAGE_WIDTH,
    SPLIT_COLORS,
    LogIndexAxis,
    as_list,
    log_value_axis,
    missing_panel,
    new_figure,
    paper_style,
    plotly_graph_objects,
    plotly_layout,
    plotly_subplots,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

SPLITS = ("train", "test")
CURVES = ("train_init", "train_end", "test_init", "test_end")
YLABEL = r"$u_i^\top \Theta\, u_i \,/\, (\|u_i\|^2\, \mathrm{tr}\,\Theta / n)$"
NO_RUNS = (
    "No trained network with a kernel alignment: eigen_training stores one per network run "
    "(linearize=false or both)."
)


@dataclass(frozen=True)
class AlignmentRun:
    """The alignment after training the network on eigen-index ``target``.

    Attributes:
        target: the trained eigen-index j.
        curves: ``'<split>_<init|end>'`` → (k,) quotients over initial eigenvectors i.
        concentration: the same keys → ratio at j over the mean of its neighbours.
    """

    target: int
    curves: dict[str, np.ndarray]
    concentration: dict[str, float]

    @property
    def size(self) -> int:
        """k, the number of initial eigenvectors."""
        return self.curves["train_init"].size


def alignment_runs(alignment: Mapping[str, Any]) -> list[AlignmentRun]:
    """The runs of a stored alignment, by ascending target index, checked.

    Raises:
        ValueError: not the alignment layout (``{"runs": {str(j): {...}}}``), a curve or a
            concentration ratio missing (an alignment written by older code), curves of
            different lengths, or a target outside the curves.
    """
    if not isinstance(alignment, Mapping) or not isinstance(alignment.get("runs"), Mapping):
        raise ValueError(
            'The alignment must be a mapping with a "runs" mapping (eigen_training\'s '
            f"alignment artifact); got {type(alignment).__name__}"
            + (f" with keys {sorted(alignment)}" if isinstance(alignment, Mapping) else "")
            + "."
        )
    runs = []
    for key, run in alignment["runs"].items():
        where = f'alignment["runs"]["{key}"]'
        missing = [c for c in CURVES if c not in run]
        concentration = run.get("concentration") or {}
        missing += [f"concentration.{c}" for c in CURVES if c not in concentration]
        if missing:
            raise ValueError(
                f"{where} lacks {missing}: it was written by an older version of "
                "eigen_training (θ0 baseline and concentration ratios are required). Rerun "
                "eigen_training."
            )
        curves = {c: np.asarray(run[c], np.float64).reshape(-1) for c in CURVES}
        sizes = {c: v.size for c, v in curves.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"{where} has curves of different lengths: {sizes}.")
        target = int(key)
        if not 0 <= target < curves["train_init"].size:
            raise ValueError(
                f"{where}: target index {target} is outside the {sizes['train_init']} "
                "initial eigenvectors."
            )
        runs.append(AlignmentRun(target, curves, {c: float(concentration[c]) for c in CURVES}))
    return sorted(runs, key=lambda run: run.target)


def _positive(values: np.ndarray) -> np.ndarray:
    """Values for a log axis: non-positive entries (round-off) become gaps."""
    return np.where(values > 0, values, np.nan)


def _panel_title(run: AlignmentRun, split: str) -> str:
    c = run.concentration
    return (
        f"{split}, trained on j={run.target}: concentration "
        f"{c[f'{split}_init']:.2f} (θ0) → {c[f'{split}_end']:.2f}"
    )


def draw_alignment_panel(ax: Axes, run: AlignmentRun, split: str) -> None:
    """θ0 baseline (grey, dashed) and end curve of one split; the target j marked.

    Lines carry ``gid`` ``'<split>_init'``, ``'<split>_end'`` and ``'target'``.
    """
    axis = LogIndexAxis.for_values(np.arange(run.size), index=True)
    index = np.arange(run.size)
    ax.plot(
        axis.positions(index),
        _positive(run.curves[f"{split}_init"]),
        color=BASELINE_COLOR,
        ls="--",
        lw=1.0,
        label="at θ0 (baseline)",
        gid=f"{split}_init",
    )
    ax.plot(
        axis.positions(index),
        _positive(run.curves[f"{split}_end"]),
        color=SPLIT_COLORS[split],
        lw=1.2,
        label="at the end of training",
        gid=f"{split}_end",
    )
    target = float(axis.positions([run.target])[0])
    ax.axvline(target, color="black", ls=":", lw=1.0, label=f"target j={run.target}", gid="target")
    ax.set_yscale("log")
    log_value_axis(ax.yaxis, [run.curves[f"{split}_init"], run.curves[f"{split}_end"]])
    axis.apply(ax)
    ax.set_xlabel("initial eigenvector index i (log scale)")
    ax.set_title(_panel_title(run, split))


@paper_style
def alignment_plot(alignment: Mapping[str, Any], *, title: str | None = None) -> Figure:
    """One row per trained index j: train (left) and test (right) quotients, θ0 vs end.

    Args:
        alignment: ``eigen_training``'s alignment (``{"runs": {str(j): {train_init,
            train_end, test_init, test_end: (k,), concentration: {...}}}}``).
        title: the figure title.

    Returns:
        A page-wide figure; a "no runs" panel when the alignment holds none.
    """
    runs = alignment_runs(alignment)
    fig = new_figure(PAGE_WIDTH, 2.1 * max(len(runs), 1) + 0.5)
    if not runs:
        missing_panel(fig.add_subplot(), NO_RUNS, title="Kernel alignment")
        return fig
    axes = fig.subplots(len(runs), 2, sharey="row", squeeze=False)
    for row, run in zip(axes, runs, strict=True):
        for ax, split in zip(row, SPLITS, strict=True):
            draw_alignment_panel(ax, run, split)
        row[0].set_ylabel(YLABEL)
        # The row shares one y axis: label it for both splits' values.
        log_value_axis(row[0].yaxis, list(run.curves.values()))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles[:2], labels[:2], loc="outside lower center", ncols=3)
    fig.suptitle(
        title
        or "Kernel alignment with the initial NTK eigenvectors (trace-normalised; dotted: target)"
    )
    return fig


def draw_concentration(ax: Axes, runs: list[AlignmentRun]) -> None:
    """Concentration ratio at θ0 (hollow) and at the end (filled) per trained j and split.

    Lines carry ``gid`` ``'<split>'`` with y-data ``[init, end]`` per target, NaN-separated.
    """
    if not runs:
        missing_panel(ax, NO_RUNS, title="Kernel alignment")
        return
    for offset, split in ((-0.12, "train"), (0.12, "test")):
        x, y = [], []
        for position, run in enumerate(runs):
            x += [position + offset, position + offset, np.nan]
            y += [run.concentration[f"{split}_init"], run.concentration[f"{split}_end"], np.nan]
        color = SPLIT_COLORS[split]
        ax.plot(x, y, color=color, lw=1.0, gid=split, label=f"{split}: θ0 → end")
        ax.plot(x[0::3], y[0::3], ls="none", marker="o", mfc="none", mec=color)
        ax.plot(x[1::3], y[1::3], ls="none", marker="o", color=color)
    ax.axhline(1.0, color=BASELINE_COLOR, ls="--", lw=1.0, label="no concentration")
    ax.set_xticks(range(len(runs)), [str(run.target) for run in runs])
    ax.set_xlim(-0.6, len(runs) - 0.4)
    ax.set_xlabel("trained eigen-index j")
    ax.set_ylabel("quotient at j / median of neighbours")
    ax.set_title("Kernel concentration on the target")
    ax.legend(loc="upper left")


def alignment_plotly(alignment: Mapping[str, Any], *, title: str | None = None) -> Any:
    """The interactive (Plotly) version of :func:`alignment_plot`, with the same numbers.

    Per run and split, traces named ``'<split> at θ0'`` and ``'<split> at end'`` (x = i + 1,
    customdata = i, ``meta`` = ``{"target": j, "curve": "<split>_<init|end>"}``) and a
    vertical ``target`` trace at x = j + 1.
    """
    go = plotly_graph_objects()
    runs = alignment_runs(alignment)
    rows = max(len(runs), 1)
    titles = [_panel_title(run, split) for run in runs for split in SPLITS] or [NO_RUNS]
    fig = plotly_subplots(
        rows=rows, cols=2 if runs else 1, subplot_titles=titles, vertical_spacing=0.3 / rows
    )
    for row, run in enumerate(runs, start=1):
        axis = LogIndexAxis.for_values(np.arange(run.size), index=True)
        index = np.arange(run.size)
        for col, split in enumerate(SPLITS, start=1):
            for stage, label, color, dash in (
                ("init", "at θ0", BASELINE_COLOR, "dash"),
                ("end", "at end", SPLIT_COLORS[split], "solid"),
            ):
                curve = f"{split}_{stage}"
                fig.add_trace(
                    go.Scatter(
                        x=as_list(axis.positions(index)),
                        y=as_list(_positive(run.curves[curve])),
                        customdata=as_list(index),
                        mode="lines",
                        name=f"{split} {label}",
                        legendgroup=curve,
                        showlegend=row == 1,
                        line={"color": color, "dash": dash},
                        hovertemplate=f"j={run.target}, i=%{{customdata}}<br>{split} {label}: "
                        "%{y:.4g}<extra></extra>",
                        meta={"target": run.target, "curve": curve},
                    ),
                    row=row,
                    col=col,
                )
            values = np.concatenate([run.curves[f"{split}_init"], run.curves[f"{split}_end"]])
            values = values[values > 0]
            span = [float(values.min()), float(values.max())] if values.size else [1e-3, 1.0]
            target = float(axis.positions([run.target])[0])
            fig.add_trace(
                go.Scatter(
                    x=[target, target],
                    y=as_list(span),
                    mode="lines",
                    name="target j",
                    legendgroup="target",
                    showlegend=row == 1 and col == 1,
                    line={"color": "black", "dash": "dot"},
                    hovertemplate=f"target j={run.target}<extra></extra>",
                    meta={"target": run.target, "curve": "target"},
                ),
                row=row,
                col=col,
            )
            fig.update_xaxes(**axis.plotly(), row=row, col=col)
            fig.update_yaxes(type="log", row=row, col=col)
        fig.update_yaxes(title_text="normalised quotient", row=row, col=1)
    fig.update_xaxes(title_text="initial eigenvector index i (log scale)", row=rows)
    fig.update_layout(
        **plotly_layout(
            title or "Kernel alignment with the initial NTK eigenvectors", height=320 * rows + 120
        )
    )
    return fig
