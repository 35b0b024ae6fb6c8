"""Shared look and mechanics (figures/style.py): no pyplot, paper style, log index axes."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from linearized_kedro import figures
from linearized_kedro.figures.style import PAPER_RC, LogIndexAxis, index_ticks, log_value_axis

_IMPORTS = """
import sys
import matplotlib
import {module}
print("pyplot" if "matplotlib.pyplot" in sys.modules else "no-pyplot")
print("plotly" if "plotly" in sys.modules else "no-plotly")
print(matplotlib.rcParams._get_backend_or_none())
"""


def _import_report(module: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS.format(module=module)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.split()


def test_importing_the_package_chooses_no_backend_and_loads_neither_pyplot_nor_plotly():
    assert _import_report("linearized_kedro.figures") == ["no-pyplot", "no-plotly", "None"]
    # Negative control: the same probe sees pyplot and a chosen backend when they happen.
    assert _import_report("matplotlib.pyplot")[0] == "pyplot"


def test_figures_are_not_registered_with_pyplot_and_save_to_png_and_pdf():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = figures.spectrum_plot(np.logspace(2, -2, 30))
    assert isinstance(fig, Figure) and plt.get_fignums() == before
    for fmt, magic in (("png", b"\x89PNG"), ("pdf", b"%PDF")):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt)
        assert buffer.getvalue().startswith(magic)
    # Negative control: a pyplot figure is registered (and would leak without a close).
    plt.figure()
    assert len(plt.get_fignums()) == len(before) + 1
    plt.close("all")


def test_paper_style_applies_while_building_and_leaves_the_callers_rcparams_alone():
    before = dict(matplotlib.rcParams)
    fig = figures.spectrum_plot(np.logspace(2, -2, 30))
    assert fig.axes[0].xaxis.label.get_fontsize() == PAPER_RC["axes.labelsize"]
    assert dict(matplotlib.rcParams) == before
    # Negative control: a figure built outside the style uses the caller's font size.
    with matplotlib.rc_context({"axes.labelsize": 17.0}):
        ax = Figure().add_subplot()
        ax.set_xlabel("x")
        assert ax.xaxis.label.get_fontsize() == 17.0


def test_index_ticks_are_readable_integers():
    assert index_ticks(1, 200, include_zero=True) == [0, 1, 2, 5, 10, 20, 50, 100, 200]
    assert index_ticks(1, 1024, include_zero=True) == [0, 1, 10, 100, 1000]  # > 2.5 decades
    assert index_ticks(100, 3000, include_zero=False) == [100, 200, 500, 1000, 2000]
    axis = LogIndexAxis.for_values([0, 7, 1023], index=True)
    assert axis.values[0] == 0 and axis.positions([0, 1023]).tolist() == [1.0, 1024.0]
    assert axis.limits[0] < 1.0 and axis.limits[1] > 1024.0
    plotly_axis = axis.plotly()
    assert plotly_axis["ticktext"][0] == "0" and plotly_axis["tickvals"][0] == 1.0
    assert plotly_axis["range"][1] > np.log10(1024.0)
    # Counts cannot be drawn at zero on a log axis.
    with pytest.raises(ValueError, match="cannot be drawn on a log axis"):
        LogIndexAxis.for_values([0, 10], index=False)


def _value_labels(ax) -> tuple[list[str], list[str]]:
    ax.figure.canvas.draw()
    lo, hi = ax.get_ylim()
    major = [
        t.get_text()
        for t in ax.get_yticklabels()
        if t.get_text() and lo <= t.get_position()[1] <= hi
    ]
    minor = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_text()]
    return major, minor


@pytest.mark.parametrize("values", [np.linspace(400, 100, 20), np.logspace(4, -3, 50)])
def test_log_value_axis_labels_short_and_long_ranges_without_minor_labels(values):
    ax = Figure().add_subplot()
    ax.semilogy(values)
    log_value_axis(ax.yaxis, values)
    major, minor = _value_labels(ax)
    assert len(major) >= 2 and minor == []
    # Negative control: matplotlib's default log formatter labels the minor ticks of a short
    # range beside the major ones (the clash the helper removes).
    if values.max() / values.min() < 10:
        default = Figure().add_subplot()
        default.semilogy(values)
        assert _value_labels(default)[1]


def test_figure_has_data_sees_empty_panels():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [np.nan, np.nan])
    assert not figures.figure_has_data(fig)  # NaN-only curves are not data
    ax.plot([0, 1], [0.5, 0.6])
    assert figures.figure_has_data(fig)
