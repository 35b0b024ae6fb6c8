"""Spectrum figures (figures/spectrum.py): NTK spectrum + class balance, NAD spectrum."""

from __future__ import annotations

import numpy as np
import pytest
from figure_data import lines_by_gid

from linearized_kedro import figures

REPORT = {
    "model_config": {"name": "lenet", "activation": "relu"},
    "dataset": "digits",
    "n": 300,
}


def _spectrum(k: int = 40) -> tuple[np.ndarray, np.ndarray]:
    values = np.logspace(3, -3, k)
    balance = np.linspace(0.3, 0.7, k)
    balance[0] = 1.0  # the top eigenvector has one sign (docs/methods.md §2.3 d)
    return values, balance


def test_spectrum_lines_are_the_eigenvalues_and_class_balance():
    values, balance = _spectrum()
    values[-2:] = [0.0, -1e-12]  # round-off tail: cannot be drawn on a log axis
    fig = figures.spectrum_plot(values, {**REPORT, "positive_fraction": balance.tolist()})
    lines = lines_by_gid(fig)
    np.testing.assert_array_equal(lines["eigenvalues"].get_xdata(), np.arange(1, 39))
    np.testing.assert_array_equal(lines["eigenvalues"].get_ydata(), values[:-2])
    assert "2 ≤ 0 not shown" in fig.axes[0].get_legend().get_texts()[0].get_text()
    np.testing.assert_array_equal(lines["positive_fraction"].get_ydata(), balance)
    np.testing.assert_array_equal(lines["one_class"].get_xdata(), [1.0])  # j = 0 marked
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_xscale() == "log"
    assert "lenet (relu), digits, N=300" in fig.get_suptitle()
    # Negative control: no one-class eigenfunction, no marked point.
    fig = figures.spectrum_plot(values, positive_fraction=np.full(40, 0.5))
    assert "one_class" not in lines_by_gid(fig)


def test_without_a_class_balance_only_the_spectrum_is_drawn():
    values, _ = _spectrum()
    assert len(figures.spectrum_plot(values).axes) == 1
    assert len(figures.spectrum_plot(values, positive_fraction=_spectrum()[1]).axes) == 2


def test_plotly_spectrum_has_the_same_numbers():
    values, balance = _spectrum()
    fig = figures.spectrum_plotly(values, REPORT, positive_fraction=balance)
    eig, frac = fig.data[0], fig.data[1]
    np.testing.assert_array_equal(np.asarray(eig.y, float), values)
    np.testing.assert_array_equal(np.asarray(eig.x, float), np.arange(1, 41))
    np.testing.assert_array_equal(np.asarray(eig.customdata), np.arange(40))
    np.testing.assert_array_equal(np.asarray(frac.y, float), balance)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.ticktext[0] == "0"


def test_malformed_spectra_are_refused():
    values, balance = _spectrum()
    with pytest.raises(ValueError, match="non-finite.*indices \\[3\\]"):
        figures.spectrum_plot(np.where(np.arange(40) == 3, np.nan, values))
    with pytest.raises(ValueError, match="positive_fraction has 39 entries but there are 40"):
        figures.spectrum_plot(values, positive_fraction=balance[:-1])
    with pytest.raises(ValueError, match="1-D"):
        figures.spectrum_plotly(values.reshape(4, 10))
    # Negative control: the well-formed inputs draw.
    assert figures.figure_has_data(figures.spectrum_plot(values, positive_fraction=balance))


def test_nad_spectrum_draws_the_positive_eigenvalues_and_marks_the_zero_tail():
    values = np.concatenate([np.logspace(1, -2, 60), np.zeros(4)])
    fig = figures.nad_spectrum_plot(
        values, {"num_zero_eigenvalues": 4, "model_config": {"name": "lenet"}}
    )
    ax = fig.axes[0]
    line = lines_by_gid(fig)["eigenvalues"]
    np.testing.assert_array_equal(line.get_xdata(), np.arange(60))
    np.testing.assert_array_equal(line.get_ydata(), values[:60])
    zero_line = [ln for ln in ax.get_lines() if ln.get_label() == "4 numerically zero"]
    assert zero_line and zero_line[0].get_xdata()[0] == 60
    assert "D=64" in ax.get_title() and "lenet" in ax.get_title()
    # Negative control: without a zero tail there is no marker.
    fig = figures.nad_spectrum_plot(values[:60])
    assert not [ln for ln in fig.axes[0].get_lines() if "zero" in ln.get_label()]
