"""Pretrained-kernel comparison bars (figures/comparison.py)."""

from __future__ import annotations

import numpy as np
import pytest
from figure_data import accuracy, make_table

from linearized_kedro import figures

KINDS = ("network", "linear_init", "linear_pretrained")


def _bars(fig) -> dict[str, float]:
    return {p.get_gid(): p.get_height() for ax in fig.axes for p in ax.patches if p.get_gid()}


def _table(**kwargs):
    return make_table(
        "eigen_index", [10, 20], kwargs.pop("kinds", KINDS), experiment="pretrained_comparison",
        **kwargs,
    )  # fmt: skip


def test_bars_are_the_train_and_test_accuracies_of_each_model():
    table = _table()
    fig = figures.comparison_plot(table)
    bars = _bars(fig)
    assert len(bars) == 2 * 3 * 2  # tasks × kinds × splits
    for kind in KINDS:
        for j in (10, 20):
            for split in ("train", "test"):
                assert bars[f"{kind}:{split}:{j}"] == pytest.approx(accuracy(kind, j, split))
    baselines = {
        line.get_gid(): line for line in fig.axes[0].collections if str(line.get_gid()) != "None"
    }
    majority = table.drop_duplicates("task_value").set_index("task_value")
    for j in (10, 20):
        segment = baselines[f"baseline:{j}"].get_segments()[0]
        assert segment[0, 1] == pytest.approx(majority.loc[j, "majority_baseline_test"])
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "linear, NTK at θ_end" in legend and "train accuracy" in legend


def test_a_missing_kind_has_no_bars_and_a_diverged_run_no_height():
    bars = _bars(figures.comparison_plot(_table(kinds=("network", "linear_init"))))
    assert not [gid for gid in bars if gid.startswith("linear_pretrained")]
    assert bars["linear_init:test:20"] == pytest.approx(accuracy("linear_init", 20, "test"))

    fig = figures.comparison_plot(_table(diverged=[("network", 20)]))
    bars = _bars(fig)
    assert np.isnan(bars["network:test:20"]) and np.isnan(bars["network:train:20"])
    assert bars["network:test:10"] == pytest.approx(accuracy("network", 10, "test"))
    crosses = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "network:diverged"]
    assert len(crosses) == 1 and len(crosses[0].get_xdata()) == 1
    # Negative control: nothing diverged, no NaN bar, no cross.
    fig = figures.comparison_plot(_table())
    assert np.isfinite(list(_bars(fig).values())).all()
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "network:diverged"]


def test_a_table_without_test_accuracy_is_refused():
    with pytest.raises(ValueError, match=r"lacks columns \['test_accuracy'\]"):
        figures.comparison_plot(_table().drop(columns="test_accuracy"))
    cifar = make_table("num_train", [100], experiment="cifar2")
    with pytest.raises(ValueError, match="no rows with task_axis == 'eigen_index'"):
        figures.comparison_plot(cifar)
