"""Accuracy vs task figures (figures/accuracy.py): the drawn numbers are the table's."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.io
import pytest
from figure_data import accuracy, lines_by_gid, make_table

from linearized_kedro import figures
from linearized_kedro.experiments import results

EIGEN = [0, 1, 2, 5, 10, 20]


def _traces(fig) -> dict:
    """(kind, what) → Plotly trace."""
    return {(t.meta["kind"], t.meta["what"]): t for t in fig.data}


def test_curves_are_the_tables_accuracies_and_j0_is_a_marked_point():
    table = make_table("eigen_index", EIGEN, one_class=[0])
    lines = lines_by_gid(figures.eigen_accuracy_plot(table))
    ordinary = np.array(EIGEN[1:])
    for kind in ("network", "linear"):
        for split in ("test", "train"):
            line = lines[f"{kind}:{split}"]
            np.testing.assert_array_equal(line.get_xdata(), ordinary + 1)  # index j at j + 1
            np.testing.assert_allclose(
                line.get_ydata(), [accuracy(kind, j, split) for j in ordinary]
            )
        # j = 0 is one-class: a marked point apart from the curve, at its trivial accuracy
        marked = lines[f"{kind}:one_class"]
        np.testing.assert_array_equal(marked.get_xdata(), [1.0])
        np.testing.assert_allclose(marked.get_ydata(), [accuracy(kind, 0, "test")])
        assert marked.get_linestyle() == "None"
    baseline = table[table.kind == "network"].set_index("task_value")["majority_baseline_test"]
    np.testing.assert_allclose(lines["baseline"].get_ydata(), baseline.loc[ordinary])

    # Negative control: when j = 0 has two classes it is an ordinary point of the curve.
    normal = lines_by_gid(figures.eigen_accuracy_plot(make_table("eigen_index", EIGEN)))
    assert "network:one_class" not in normal
    np.testing.assert_array_equal(normal["network:test"].get_xdata(), np.array(EIGEN) + 1)


def test_a_missing_kind_is_absent_and_diverged_runs_are_crosses_not_results():
    only_network = make_table("eigen_index", [1, 5], kinds=("network",))
    fig = figures.eigen_accuracy_plot(only_network)
    assert {gid.split(":")[0] for gid in lines_by_gid(fig)} == {"network", "baseline"}
    assert not any("linearisation" in t.get_text() for t in fig.legends[0].get_texts())

    table = make_table("eigen_index", [1, 5, 10], diverged=[("linear", 5)])
    lines = lines_by_gid(figures.eigen_accuracy_plot(table))
    test = lines["linear:test"].get_ydata()
    assert np.isnan(test[1]) and np.isfinite(test[[0, 2]]).all()  # a gap, not a value
    np.testing.assert_array_equal(lines["linear:diverged"].get_xdata(), [6.0])
    assert "network:diverged" not in lines
    # Negative control: without the divergence there is no cross and no gap.
    clean = lines_by_gid(figures.eigen_accuracy_plot(make_table("eigen_index", [1, 5, 10])))
    assert "linear:diverged" not in clean
    assert np.isfinite(clean["linear:test"].get_ydata()).all()


def test_plotly_traces_carry_the_same_numbers_as_the_matplotlib_lines():
    table = make_table("eigen_index", EIGEN, one_class=[0], diverged=[("network", 10)])
    lines = lines_by_gid(figures.eigen_accuracy_plot(table))
    fig = figures.eigen_accuracy_plotly(table)
    traces = _traces(plotly.io.from_json(fig.to_json()))  # the JSON Kedro-Viz reads
    for kind in ("network", "linear"):
        for what in ("test", "train", "one_class"):
            trace, line = traces[(kind, what)], lines[f"{kind}:{what}"]
            np.testing.assert_array_equal(np.asarray(trace.x, float), line.get_xdata())
            np.testing.assert_array_equal(np.asarray(trace.y, float), line.get_ydata())
            np.testing.assert_array_equal(np.asarray(trace.customdata), line.get_xdata() - 1)
    np.testing.assert_array_equal(np.asarray(traces[("network", "diverged")].customdata), [10])
    assert ("linear", "diverged") not in traces
    np.testing.assert_allclose(
        np.asarray(traces[(None, "baseline")].y, float), lines["baseline"].get_ydata()
    )
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext)[:3] == ["0", "1", "2"]
    # Negative control: another table's numbers differ from these traces.
    other = _traces(figures.eigen_accuracy_plotly(make_table("eigen_index", EIGEN, seed=1)))
    assert not np.array_equal(
        np.asarray(other[(None, "baseline")].y, float), lines["baseline"].get_ydata()
    )


def _index_axis_problems(ax, xs) -> list[str]:
    """What is wrong with an index x axis: labels that are not plain non-negative integers,
    repeated labels, labelled minor ticks (the major/minor clash), points outside the view."""
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    problems = [f"label {label!r}" for label in labels if not label.isdigit()]
    if len(set(labels)) != len(labels):
        problems.append(f"repeated labels {labels}")
    problems += [
        f"minor label {t.get_text()!r}" for t in ax.xaxis.get_minorticklabels() if t.get_text()
    ]
    lo, hi = ax.get_xlim()
    problems += [f"point {x} outside {lo, hi}" for x in xs if not lo < x < hi]
    return problems


def test_nad_axis_has_integer_ticks_from_zero_and_keeps_the_last_point():
    # The old figure's symlog axis had negative ticks and clipped the last NAD index.
    table = make_table("nad_index", [0, 1, 5, 50, 1023], experiment="nad_training")
    fig = figures.nad_accuracy_plot(table)
    ax = fig.axes[0]
    xs = lines_by_gid(fig)["network:test"].get_xdata()
    assert _index_axis_problems(ax, xs) == []
    assert ax.get_xticklabels()[0].get_text() == "0"
    assert xs[0] == 1.0 and xs[-1] == 1024.0  # index i at i + 1
    # Negative controls: the old symlog axis (10^k labels) and a plain log axis over a short
    # range (minor labels printed beside the major ones) are both caught.
    from matplotlib.figure import Figure

    old = Figure().add_subplot()
    old.plot(table["task_value"], table["test_accuracy"])
    old.set_xscale("symlog", linthresh=1.0)
    assert _index_axis_problems(old, table["task_value"])
    short = Figure().add_subplot()
    short.semilogx([1, 2, 3, 4], [0.9, 0.8, 0.7, 0.6])
    assert any("minor" in p for p in _index_axis_problems(short, [1, 2, 3, 4]))
    # Ours on the same short range has no clash.
    short_table = make_table("eigen_index", [0, 1, 2, 3])
    fig = figures.eigen_accuracy_plot(short_table)
    assert _index_axis_problems(fig.axes[0], [1, 2, 3, 4]) == []


def test_cifar2_axis_is_the_training_set_size():
    table = make_table("num_train", [100, 300, 1000], experiment="cifar2")
    fig = figures.cifar2_accuracy_plot(table)
    lines = lines_by_gid(fig)
    np.testing.assert_array_equal(lines["network:test"].get_xdata(), [100, 300, 1000])
    np.testing.assert_allclose(
        lines["linear:train"].get_ydata(),
        [accuracy("linear", n, "train") for n in (100, 300, 1000)],
    )
    assert "CIFAR-2" in fig.axes[0].get_title() and "lenet (relu)" in fig.axes[0].get_title()
    traces = _traces(figures.cifar2_accuracy_plotly(table))
    np.testing.assert_array_equal(
        np.asarray(traces[("network", "test")].x, float), [100, 300, 1000]
    )


def test_a_table_read_back_from_csv_draws_the_same_figure():
    table = make_table("eigen_index", EIGEN, one_class=[0], diverged=[("linear", 5)])
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    loaded = pd.read_csv(io.StringIO(buffer.getvalue()))  # bools may come back as text
    loaded["degenerate"] = loaded["degenerate"].astype(str)
    a, b = (lines_by_gid(figures.eigen_accuracy_plot(t)) for t in (table, loaded))
    assert a.keys() == b.keys()
    for gid in a:
        np.testing.assert_array_equal(a[gid].get_ydata(), b[gid].get_ydata())


def test_incomplete_or_ambiguous_tables_are_refused_with_a_clear_error():
    table = make_table("eigen_index", [1, 5])
    with pytest.raises(ValueError, match=r"lacks columns \['train_accuracy'\].*conform"):
        figures.eigen_accuracy_plot(table.drop(columns="train_accuracy"))
    with pytest.raises(ValueError, match=r"no rows with task_axis == 'nad_index'.*eigen_index"):
        figures.nad_accuracy_plot(table)
    comparison = make_table(
        "eigen_index", [1], ("network", "linear_init"), experiment="pretrained_comparison"
    )
    both = pd.concat([table, comparison])
    with pytest.raises(ValueError, match="several rows.*experiment="):
        figures.eigen_accuracy_plot(both)
    # ... and selecting the experiment resolves it.
    lines = lines_by_gid(figures.eigen_accuracy_plot(both, experiment="eigen_training"))
    assert "linear_init:test" not in lines and "network:test" in lines
    with pytest.raises(TypeError, match="results table"):
        figures.eigen_accuracy_plot(table.to_dict("records"))
    with pytest.raises(ValueError, match="task_axis must be one of"):
        figures.accuracy_plot(table, "label_idx")
    # Negative control: the complete table draws.
    assert figures.figure_has_data(figures.eigen_accuracy_plot(table))


def test_every_schema_kind_has_its_own_style():
    styles = {kind: figures.kind_style(kind) for kind in results.KINDS}
    assert len({s.label for s in styles.values()}) == len(results.KINDS)
    assert styles["network"].color != styles["linear"].color
    assert styles["linear_pretrained"].color not in {
        styles["network"].color,
        styles["linear"].color,
    }
