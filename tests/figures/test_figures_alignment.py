"""Kernel-alignment figures (figures/alignment.py): θ0 baseline beside the end curve."""

from __future__ import annotations

import numpy as np
import pytest
from figure_data import make_alignment

from linearized_kedro import figures
from linearized_kedro.figures.alignment import alignment_runs, draw_concentration


def _panel_lines(ax) -> dict:
    return {line.get_gid(): line for line in ax.get_lines() if line.get_gid()}


def test_each_run_shows_train_and_test_at_theta0_and_at_the_end():
    alignment = make_alignment(targets=(7, 3), k=12)
    fig = figures.alignment_plot(alignment)
    axes = fig.axes
    assert len(axes) == 4  # rows: j = 3, j = 7 (sorted); columns: train, test
    for row, j in enumerate((3, 7)):
        run = alignment["runs"][str(j)]
        for col, split in enumerate(("train", "test")):
            ax = axes[2 * row + col]
            lines = _panel_lines(ax)
            for stage in ("init", "end"):
                line = lines[f"{split}_{stage}"]
                np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 13))
                np.testing.assert_allclose(line.get_ydata(), run[f"{split}_{stage}"])
            assert lines["target"].get_xdata()[0] == j + 1
            c = run["concentration"]
            title = ax.get_title()
            assert f"j={j}" in title and split in title
            assert f"{c[f'{split}_init']:.2f} (θ0) → {c[f'{split}_end']:.2f}" in title
    # Negative control: the θ0 curve is the baseline, not a copy of the end curve.
    lines = _panel_lines(axes[0])
    assert not np.allclose(lines["train_init"].get_ydata(), lines["train_end"].get_ydata())


def test_non_positive_quotients_are_gaps_on_the_log_axis():
    alignment = make_alignment(targets=(3,), k=8)
    alignment["runs"]["3"]["test_end"][5] = 0.0
    lines = _panel_lines(figures.alignment_plot(alignment).axes[1])
    y = lines["test_end"].get_ydata()
    assert np.isnan(y[5]) and np.isfinite(np.delete(y, 5)).all()


def test_plotly_alignment_has_the_same_numbers():
    alignment = make_alignment(targets=(3, 7), k=12)
    fig = figures.alignment_plotly(alignment)
    by_curve = {(t.meta["target"], t.meta["curve"]): t for t in fig.data}
    for j in (3, 7):
        run = alignment["runs"][str(j)]
        for curve in ("train_init", "train_end", "test_init", "test_end"):
            trace = by_curve[(j, curve)]
            np.testing.assert_allclose(np.asarray(trace.y, float), run[curve])
            np.testing.assert_array_equal(np.asarray(trace.customdata), np.arange(12))
        assert by_curve[(j, "target")].x == (j + 1, j + 1)
    titles = [a.text for a in fig.layout.annotations]
    assert any("trained on j=7" in t and "5.07" in t for t in titles)


def test_concentration_panel_pairs_theta0_and_end_per_split():
    from matplotlib.figure import Figure

    runs = alignment_runs(make_alignment(targets=(3, 7)))
    ax = Figure().add_subplot()
    draw_concentration(ax, runs)
    lines = _panel_lines(ax)
    train = lines["train"].get_ydata()
    np.testing.assert_allclose(train[[0, 1, 3, 4]], [1.03, 5.03, 1.07, 5.07])
    np.testing.assert_allclose(lines["test"].get_ydata()[[0, 1]], [0.83, 2.03])


def test_old_or_malformed_alignments_are_refused_and_an_empty_one_says_so():
    old = {"runs": {"5": {"train": [1.0, 2.0], "test": [1.0, 1.0], "train_normalized": [1, 2]}}}
    with pytest.raises(ValueError, match=r'\["5"\] lacks .*older version.*Rerun eigen_training'):
        figures.alignment_plot(old)
    no_ratio = make_alignment(targets=(3,))
    del no_ratio["runs"]["3"]["concentration"]["test_end"]
    with pytest.raises(ValueError, match="concentration.test_end"):
        figures.alignment_plotly(no_ratio)
    ragged = make_alignment(targets=(3,))
    ragged["runs"]["3"]["test_end"] = ragged["runs"]["3"]["test_end"][:-1]
    with pytest.raises(ValueError, match="different lengths"):
        figures.alignment_plot(ragged)
    outside = make_alignment(targets=(3,), k=12)
    outside["runs"]["30"] = outside["runs"].pop("3")
    with pytest.raises(ValueError, match="target index 30 is outside the 12"):
        figures.alignment_plot(outside)
    with pytest.raises(ValueError, match='"runs" mapping'):
        figures.alignment_plot([1, 2])
    empty = figures.alignment_plot({"runs": {}})
    assert not empty.axes[0].axison and "No trained network" in empty.axes[0].texts[0].get_text()
    # Negative control: a well-formed alignment draws data.
    assert figures.figure_has_data(figures.alignment_plot(make_alignment()))
