"""The paper's figures: one function per figure, matplotlib (paper) and Plotly (interactive).

Every function takes plain data (arrays, the results table of ``experiments.results``, the
alignment and report dicts stored by the pipelines) and returns a figure; nodes, reporting
and notebooks call the same functions. ``*_plot`` functions return a
``matplotlib.figure.Figure`` built without ``pyplot`` (no backend is chosen, nothing is
registered globally; ``fig.savefig("x.pdf")`` works in any process). ``*_plotly`` functions
return the same figure as a ``plotly.graph_objects.Figure`` with the same numbers, for
Kedro-Viz (kedro-datasets ``plotly.JSONDataset``).

In a notebook, show a figure with ``display(fig)`` (or make it the cell's last value).

| figure | matplotlib | Plotly |
|---|---|---|
| NTK spectrum + class balance | :func:`spectrum_plot` | :func:`spectrum_plotly` |
| accuracy vs eigen-index | :func:`eigen_accuracy_plot` | :func:`eigen_accuracy_plotly` |
| kernel alignment (θ0 vs end) | :func:`alignment_plot` | :func:`alignment_plotly` |
| pretrained-kernel comparison | :func:`comparison_plot` | |
| NAD images and |FFT2| | :func:`nads_plot` | |
| NAD spectrum | :func:`nad_spectrum_plot` | |
| accuracy vs NAD index | :func:`nad_accuracy_plot` | :func:`nad_accuracy_plotly` |
| CIFAR-2 accuracy vs size | :func:`cifar2_accuracy_plot` | :func:`cifar2_accuracy_plotly` |
| summary grid | :func:`summary_plot` | |
"""

from .accuracy import (
    accuracy_plot,
    accuracy_plotly,
    cifar2_accuracy_plot,
    cifar2_accuracy_plotly,
    eigen_accuracy_plot,
    eigen_accuracy_plotly,
    nad_accuracy_plot,
    nad_accuracy_plotly,
)
from .alignment import alignment_plot, alignment_plotly
from .comparison import comparison_plot
from .nads import nads_plot
from .spectrum import nad_spectrum_plot, spectrum_plot, spectrum_plotly
from .style import KIND_STYLES, figure_has_data, kind_style
from .summary import PANELS, summary_plot

__all__ = [
    "KIND_STYLES",
    "PANELS",
    "accuracy_plot",
    "accuracy_plotly",
    "alignment_plot",
    "alignment_plotly",
    "cifar2_accuracy_plot",
    "cifar2_accuracy_plotly",
    "comparison_plot",
    "eigen_accuracy_plot",
    "eigen_accuracy_plotly",
    "figure_has_data",
    "kind_style",
    "nad_accuracy_plot",
    "nad_accuracy_plotly",
    "nad_spectrum_plot",
    "nads_plot",
    "spectrum_plot",
    "spectrum_plotly",
    "summary_plot",
]
