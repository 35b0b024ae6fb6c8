"""The pretrained-kernel comparison: the network, the linear model with the NTK at θ0 and the
linear model with the NTK of the trained network (θ_end), on the same eigenfunction tasks.

The paper's claim (docs/methods.md §2.2): the θ_end kernel generalises like the network, below the θ0
kernel, so the kernel's evolution during training causes the overfitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .style import (
    BASELINE_COLOR,
    COLUMN_WIDTH,
    DIVERGED,
    kind_style,
    mark_tasks,
    new_figure,
    ordered_kinds,
    paper_style,
)
from .tables import ACCURACY_COLUMNS, as_bool, describe, select_task_rows

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# The accuracy figures' columns but ``degenerate`` (a comparison marks no one-class task).
COMPARISON_COLUMNS = tuple(c for c in ACCURACY_COLUMNS if c != "degenerate")


def comparison_rows(results: pd.DataFrame, experiment: str | None = None) -> pd.DataFrame:
    """The eigen-index rows of a comparison table, checked (one per task × kind)."""
    return select_task_rows(
        results,
        "eigen_index",
        "pretrained comparison",
        columns=COMPARISON_COLUMNS,
        experiment=experiment,
    )


def draw_comparison(ax: Axes, rows: pd.DataFrame, *, legend: bool = False) -> None:
    """Bars per eigen-index j and kind: train hatched and pale, test solid.

    Bar patches carry ``gid`` ``'<kind>:<train|test>:<j>'``; the majority-class line of
    task j has ``gid`` ``'baseline:<j>'``; a diverged run is a cross at the bottom.
    """
    tasks = sorted(int(j) for j in rows["task_value"].unique())
    kinds = ordered_kinds(rows["kind"].astype(str))
    width = 0.84 / (2 * max(len(kinds), 1))
    diverged = as_bool(rows["diverged"])
    for k, kind in enumerate(kinds):
        style = kind_style(kind)
        mine = rows[rows["kind"].astype(str) == kind]
        by_task = dict(zip(mine["task_value"].astype(int), range(len(mine)), strict=True))
        failed = diverged[(rows["kind"].astype(str) == kind).to_numpy()]
        for s, split in enumerate(("train", "test")):
            heights, positions, gids = [], [], []
            for g, task in enumerate(tasks):
                positions.append(g - 0.42 + (2 * k + s + 0.5) * width)
                gids.append(f"{kind}:{split}:{task}")
                if task not in by_task or failed[by_task[task]]:
                    heights.append(np.nan)
                else:
                    heights.append(float(mine[f"{split}_accuracy"].iloc[by_task[task]]))
            bars = ax.bar(
                positions,
                heights,
                width,
                color=style.color,
                alpha=0.45 if split == "train" else 1.0,
                hatch="////" if split == "train" else None,
                edgecolor=style.color,
                lw=0.5,
                label=f"{style.label} ({split})",
            )
            for patch, gid in zip(bars.patches, gids, strict=True):
                patch.set_gid(gid)
        lost = [g for g, task in enumerate(tasks) if task in by_task and failed[by_task[task]]]
        if lost:
            mark_tasks(
                ax,
                [g - 0.42 + (2 * k + 1) * width for g in lost],
                np.full(len(lost), 0.03),
                DIVERGED,
                style.color,
                label=f"{style.label}: {DIVERGED['label']}",
                gid=f"{kind}:diverged",
            )
    baseline = rows.drop_duplicates("task_value").set_index("task_value")
    for g, task in enumerate(tasks):
        ax.hlines(
            float(baseline.loc[task, "majority_baseline_test"]),
            g - 0.45,
            g + 0.45,
            colors=BASELINE_COLOR,
            linestyles="--",
            lw=1.0,
            label="majority class (test)" if g == 0 else None,
            gid=f"baseline:{task}",
        )
    ax.set_xticks(range(len(tasks)), [f"j={task}" for task in tasks])
    ax.set_xlim(-0.5, len(tasks) - 0.5)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("accuracy")
    ax.grid(False, axis="x")
    if legend:
        ax.legend(*legend_entries(kinds), fontsize=5.5, loc="lower left")


def legend_entries(kinds: list[str]) -> tuple[list[Any], list[str]]:
    """One entry per kind (its colour), the two bar styles and the majority line."""
    handles: list[Any] = [Patch(color=kind_style(kind).color) for kind in kinds]
    labels = [kind_style(kind).label for kind in kinds]
    handles += [
        Patch(facecolor="white", edgecolor="black", hatch="////", lw=0.5),
        Patch(facecolor="black"),
        Line2D([], [], color=BASELINE_COLOR, ls="--", lw=1.0),
    ]
    labels += ["train accuracy", "test accuracy", "majority class (test)"]
    return handles, labels


@paper_style
def comparison_plot(
    results: pd.DataFrame,
    *,
    experiment: str | None = None,
    title: str | None = None,
    width: float = COLUMN_WIDTH,
) -> Figure:
    """Train and test accuracy of network / linear_init / linear_pretrained per task j.

    Args:
        results: the ``pretrained_comparison`` results table (``experiments.results``
            schema); a kind that is absent (e.g. no pretrained point after a diverged
            network) has no bars.
        experiment: keep only this experiment's rows (a table holding several).
        title: replaces the title made from the table's settings.
        width: figure width in inches.

    Raises:
        ValueError: a column is missing, no eigen-index row, or a task × kind twice.
    """
    rows = comparison_rows(results, experiment)
    fig = new_figure(width, width * 0.9)
    ax = fig.add_subplot()
    draw_comparison(ax, rows)
    text = describe(rows)
    ax.set_title(title or "Kernel at θ0 vs after training" + (f"\n{text}" if text else ""))
    kinds = ordered_kinds(rows["kind"].astype(str))
    fig.legend(*legend_entries(kinds), loc="outside lower center", ncols=2)
    return fig
