"""The figures' shared look: one style per model kind, paper sizes and fonts, axis helpers.

Everything a figure function needs to look like the others is defined here once, for both
backends: matplotlib (paper PNG/PDF) and Plotly (interactive, shown by Kedro-Viz).

No backend is chosen and ``matplotlib.pyplot`` is never imported: figures are built with
the object-oriented API (``matplotlib.figure.Figure``), which needs no global state and
saves to PNG or PDF from any process. Plotly is imported only when a Plotly figure is made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# Paper widths (inches): one column and the full text width of a two-column layout.
COLUMN_WIDTH = 3.25
PAGE_WIDTH = 6.75
# Resolution of the PNG files (``savefig`` uses the figure's dpi by default).
DPI = 200

# Font sizes readable at print size (a column is 3.25 in wide), grid and lines to match.
PAPER_RC: dict[str, Any] = {
    "font.size": 8.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 8.0,
    "xtick.labelsize": 7.0,
    "ytick.labelsize": 7.0,
    "legend.fontsize": 6.5,
    "figure.titlesize": 9.0,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "legend.frameon": False,
    "mathtext.fontset": "dejavusans",
}


@dataclass(frozen=True)
class KindStyle:
    """How one model kind is drawn in every figure.

    Attributes:
        color: hex colour (both backends).
        marker: matplotlib marker.
        symbol: the Plotly marker symbol of the same shape.
        label: legend text.
    """

    color: str
    marker: str
    symbol: str
    label: str


# The results schema's kinds (experiments.results.KINDS). Both θ0 linearisations share
# the θ0 colour; the kernel at θ_end has its own.
KIND_STYLES: dict[str, KindStyle] = {
    "network": KindStyle("#1f77b4", "o", "circle", "network"),
    "linear": KindStyle("#ff7f0e", "s", "square", "linearisation at θ0"),
    "linear_init": KindStyle("#ff7f0e", "s", "square", "linear, NTK at θ0"),
    "linear_pretrained": KindStyle("#2ca02c", "^", "triangle-up", "linear, NTK at θ_end"),
}
KIND_ORDER = tuple(KIND_STYLES)
_SPARE_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf")

# Test accuracy solid, train accuracy dotted (matplotlib linestyle, Plotly dash).
SPLIT_LINESTYLE = {"test": "-", "train": ":"}
SPLIT_DASH = {"test": "solid", "train": "dot"}
# Alignment curves are drawn per split (the network only), θ0 baseline in grey.
SPLIT_COLORS = {"train": "#d62728", "test": "#9467bd"}
BASELINE_COLOR = "#7f7f7f"
# A task with a single class (the top NTK eigenvector, docs/methods.md §2.3 d) and a diverged run.
ONE_CLASS = {"marker": "*", "symbol": "star-open", "label": "one-class task (trivial)"}
DIVERGED = {"marker": "x", "symbol": "x", "label": "diverged (no result)"}


def mark_tasks(ax: Any, x: Any, y: Any, flag: Mapping[str, str], color: str, **kwargs: Any) -> None:
    """Marks tasks on a matplotlib ``ax`` without a line: an open star for a one-class task
    (``flag`` = :data:`ONE_CLASS`), a cross for a diverged run (:data:`DIVERGED`).

    Args:
        x, y: (t,) positions of the marks.
        color: the model kind's colour.
        **kwargs: further ``Axes.plot`` arguments (``label``, ``gid``, ``ms``).
    """
    look = {"mfc": "none", "mec": color} if flag is ONE_CLASS else {"color": color}
    ax.plot(x, y, ls="none", marker=flag["marker"], **look, **kwargs)


def kind_style(kind: str) -> KindStyle:
    """The style of a model kind; a kind outside the schema gets a spare colour."""
    if kind in KIND_STYLES:
        return KIND_STYLES[kind]
    color = _SPARE_COLORS[sum(map(ord, kind)) % len(_SPARE_COLORS)]
    return KindStyle(color, "D", "diamond", kind)


def ordered_kinds(kinds: Sequence[str]) -> list[str]:
    """Distinct kinds, schema kinds first in :data:`KIND_ORDER`, others alphabetically."""
    present = set(map(str, kinds))
    known = [k for k in KIND_ORDER if k in present]
    return known + sorted(present - set(known))


P = ParamSpec("P")
R = TypeVar("R")


def paper_style(function: Callable[P, R]) -> Callable[P, R]:
    """Runs a figure function under :data:`PAPER_RC` (fonts are read when artists are made).

    The rc settings apply only while the figure is built: the caller's rcParams are left
    as they were.
    """

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(PAPER_RC):
            return function(*args, **kwargs)

    return wrapper


def new_figure(width: float = COLUMN_WIDTH, height: float = 2.4) -> Figure:
    """A pyplot-free figure (constrained layout) of ``width`` × ``height`` inches."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def index_ticks(lo: float, hi: float, *, include_zero: bool) -> list[int]:
    """Readable integer ticks between ``lo`` and ``hi`` for a log axis.

    A 1-2-5 ladder over at most ~2.5 decades, powers of ten beyond; 0 first when the axis
    shows index 0 (drawn at position 1).
    """
    lo, hi = max(float(lo), 1.0), max(float(hi), 1.0)
    decades = np.log10(hi) - np.log10(lo)
    steps = (1, 2, 5) if decades <= 2.5 else (1,)
    ticks = [
        step * 10**power
        for power in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        for step in steps
        if lo <= step * 10**power <= hi
    ]
    if include_zero:
        ticks = [0, *ticks]
    return ticks or [int(round(lo))]


@dataclass(frozen=True)
class LogIndexAxis:
    """An integer quantity (a task index or a sample count) on a log axis.

    Index axes draw index ``i`` at position ``i + 1`` so that index 0 fits on a log scale,
    and label the ticks with the index itself, not with ``i + 1``.

    Attributes:
        offset: 1 for indices (position = value + 1), 0 for counts.
        values: the integer tick values; positions are ``values + offset``.
        limits: the axis range in positions, with a margin so no point is clipped.
    """

    offset: int
    values: tuple[int, ...]
    limits: tuple[float, float]

    @classmethod
    def for_values(cls, values: Sequence[float] | np.ndarray, *, index: bool) -> LogIndexAxis:
        """The axis for the integer ``values`` drawn (indices if ``index``, else counts)."""
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        offset = 1 if index else 0
        if values.size == 0:
            values = np.array([0.0 if index else 1.0])
        positions = values + offset
        if np.any(positions <= 0):
            raise ValueError(
                f"Values {values[positions <= 0].tolist()} cannot be drawn on a log axis: "
                "counts must be positive (indices are drawn at index + 1)."
            )
        lo, hi = float(positions.min()), float(positions.max())
        ticks = index_ticks(lo - offset, hi - offset, include_zero=index and lo == 1.0)
        return cls(offset, tuple(ticks), (lo / 1.25, hi * 1.25))

    def positions(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Where ``values`` are drawn: ``values + offset``, float64."""
        return np.asarray(values, np.float64) + self.offset

    def apply(self, ax: Axes) -> None:
        """Log x scale with integer labels at the ticks and no minor labels.

        One formatter only: the major/minor clash of a log axis (minor labels such as
        2×10⁰ printed over the major ones on short ranges) cannot occur.
        """
        ax.set_xscale("log")
        ax.set_xlim(*self.limits)
        positions = self.positions(self.values)
        ax.xaxis.set_major_locator(ticker.FixedLocator(positions))
        ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(v) for v in self.values]))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())

    def plotly(self) -> dict[str, Any]:
        """The same axis as a Plotly ``xaxis`` layout dict (range in log10 units)."""
        positions = self.positions(self.values)
        return {
            "type": "log",
            "range": [float(np.log10(self.limits[0])), float(np.log10(self.limits[1]))],
            "tickvals": positions.tolist(),
            "ticktext": [str(v) for v in self.values],
        }


def log_value_axis(axis: Any, values: Any = None) -> None:
    """A log axis for positive values, labelled by one formatter only (no minor labels).

    Powers of ten when ``values`` span 1.5 decades or more (or are not given), else a
    1-2-5 (under 0.8 decades 1-2-3-5) ladder, so a short range has labelled ticks too.
    """
    subs: tuple[float, ...] = (1.0,)
    if values is not None:
        positive = np.asarray(values, np.float64)
        positive = positive[np.isfinite(positive) & (positive > 0)]
        decades = np.log10(positive.max() / positive.min()) if positive.size else 2.0
        if decades < 1.5:
            subs = (1.0, 2.0, 5.0) if decades >= 0.8 else (1.0, 2.0, 3.0, 5.0)
    axis.set_major_locator(ticker.LogLocator(base=10.0, subs=subs, numticks=8))
    axis.set_major_formatter(ticker.LogFormatterSciNotation(labelOnlyBase=subs == (1.0,)))
    axis.set_minor_locator(ticker.LogLocator(base=10.0, subs=np.arange(2, 10), numticks=12))
    axis.set_minor_formatter(ticker.NullFormatter())


def missing_panel(ax: Axes, message: str, *, title: str | None = None) -> None:
    """An empty panel that says which result is missing and how to produce it."""
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, transform=ax.transAxes)
    if title:
        ax.set_title(title)
    ax.set_axis_off()


def figure_has_data(fig: Figure) -> bool:
    """True if every visible axes of ``fig`` draws something (finite lines, bars, images).

    Text-only panels (:func:`missing_panel`) are axis-off and do not count as empty.
    """
    for ax in fig.axes:
        if not ax.axison:
            continue
        drawn = [
            line
            for line in ax.get_lines()
            if np.isfinite(np.asarray(line.get_ydata(), np.float64)).any()
        ]
        if not (drawn or ax.patches or ax.images or ax.collections):
            return False
    return bool(fig.axes)


def plotly_layout(title: str, **extra: Any) -> dict[str, Any]:
    """Layout shared by every Plotly figure (white template, legend below the plot)."""
    return {
        "title": {"text": title, "font": {"size": 14}},
        "template": "plotly_white",
        "legend": {"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0.0},
        "margin": {"l": 60, "r": 20, "t": 60, "b": 40},
        **extra,
    }


def as_list(values: Any) -> list:
    """Plain list for a Plotly trace: readable JSON (NaN → null, a gap), not base64 arrays."""
    return np.asarray(values).tolist()


def plotly_graph_objects() -> Any:
    """``plotly.graph_objects``, imported on first use (only Plotly figures need it)."""
    import plotly.graph_objects as go

    return go


def plotly_subplots(**kwargs: Any) -> Any:
    """``plotly.subplots.make_subplots(**kwargs)`` (imported on first use)."""
    from plotly.subplots import make_subplots

    return make_subplots(**kwargs)
