"""Nodes of ``reporting``: every experiment's stored results → one summary of the evidence.

The summary tells the paper's story in one place (docs/methods.md §2), each claim cited by where it
comes from: the paper's text (docs/methods.md §2.1), what was measured at toy scale (docs/methods.md §2.3), or a
recollection of the paper's figures (docs/methods.md §2.2, marked as such). Under each claim: the run
settings, the version(s) read, and the evidence (``evidence``): train and test accuracy
beside the class balance and the majority baseline, one-class tasks marked and left out of
the statistics, gaps per index band, alignment against its θ0 baseline. Result tables are
accumulated over every saved version of the same settings (``history``), so a later run
of one index adds to the table instead of replacing it. Experiments that have not run are
listed with the command that produces them.
"""

from __future__ import annotations

import datetime as _dt
import io
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from linearized_kedro import figures
from linearized_kedro.core.config import Config, ConfigError, from_mapping
from linearized_kedro.experiments.data import DataConfig

from . import evidence as ev
from .evidence import ONE_CLASS_NOTE, fmt
from .history import Accumulated, accumulate_alignment, accumulate_table
from .render import markdown_table, render_html, render_markdown

logger = logging.getLogger(__name__)

__all__ = [
    "EXPERIMENTS",
    "ONE_CLASS_NOTE",
    "Experiment",
    "ReportingParams",
    "Section",
    "accuracy_table",
    "markdown_table",
    "run_command",
    "summarize_experiments",
]

HISTORY_SUFFIX = "_history"
"""``<artifact>_history``: every saved version of ``<artifact>`` (a PartitionedDataset)."""


@dataclass(frozen=True)
class Experiment:
    """One experiment of the summary: its pipeline, its artifacts and what it should show.

    Attributes:
        claims: the findings this experiment tests, each citing docs/methods.md §2.1 (paper text),
            §2.3 (measured at toy scale) or §2.2 (recollection, marked as such).
        accumulated: artifacts whose versions are merged (``<artifact>_history`` inputs).
    """

    key: str
    title: str
    pipeline: str
    artifacts: tuple[str, ...]
    claims: tuple[str, ...]
    keyed_by_dataset: bool = True
    needs: str | None = None
    accumulated: tuple[str, ...] = ()

    @property
    def claim(self) -> str:
        return " ".join(self.claims)


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "spectrum",
        "Empirical NTK spectrum at initialisation",
        "ntk_spectrum",
        ("ntk_report", "ntk_eigenvalues"),
        (
            "docs/methods.md §2.3 (measured at toy scale): the eigenvalues span many orders of magnitude; "
            "for LeNet on all 1 797 digits λ_0 = 1.2·10⁴, λ_100 = 1.34, λ_1000 = 0.0095 "
            "(λ_0 / λ_1000 ≈ 1.3·10⁶), which is why the Gram and its eigensolver need float64 "
            "(docs/methods.md §3.1). The ratios below are for this run's indices.",
        ),
    ),
    Experiment(
        "eigen_training",
        "Eigenfunction benchmark: network vs linearisation",
        "eigen_training",
        ("eigen_training_results", "eigen_training_alignment"),
        (
            "docs/methods.md §2.1 items 1–2 (paper text): the linearisation ranks task difficulty as the "
            "network does, and there is no universal advantage of the non-linear network: on "
            "NTK-eigenfunction tasks the network can be worse than its linearisation.",
            "docs/methods.md §2.3 (a)–(d) (measured at toy scale): accuracy falls with j for both models, "
            "in the same order; at low-to-mid j the linearisation wins while the network fits "
            "its training set; at high j the linearisation underfits its training set (it "
            "moves along u_j at a speed ∝ λ_j, docs/methods.md §1.5); j = 0 is a one-class task.",
            "docs/methods.md §2.1 item 4 (paper text): the kernel rotates towards the target during "
            "training, which the authors name as the main reason the networks overfit. SPEC "
            "§2.3 (measured, LeNet): the end kernel concentrates on u_j more on train than on "
            "test. Read each split's end value against its θ0 value (docs/methods.md §3.2 step 5).",
        ),
        needs="ntk_spectrum",
        accumulated=("eigen_training_results", "eigen_training_alignment"),
    ),
    Experiment(
        "pretrained_comparison",
        "Kernel at initialisation vs kernel after training",
        "pretrained_comparison",
        ("pretrained_comparison_results",),
        (
            "docs/methods.md §2.1 item 4 (paper text, v1 abstract): a linearisation at the end of "
            "training accounts for the network's behaviour better than one at initialisation.",
            "docs/methods.md §2.3, §3.5 (measured at toy scale): the linear model with the trained "
            "network's kernel generalises about as badly as the network, clearly worse than "
            "the linear model with the kernel at θ0.",
        ),
        needs="ntk_spectrum",
        accumulated=("pretrained_comparison_results",),
    ),
    Experiment(
        "nads",
        "Neural anisotropy directions (NADs)",
        "nads",
        ("nads_report", "nads_eigenvalues", "nads_images"),
        (
            "docs/methods.md §2.1 item 3 (paper text): NADs are the singular vectors of ∂²f/∂θ∂x (here "
            "all D of them, exactly, docs/methods.md §3.3). That they look like structured, Fourier-like "
            "patterns is a recollection of the paper's figures (docs/methods.md §2.2), not checked here.",
        ),
        keyed_by_dataset=False,
    ),
    Experiment(
        "nad_training",
        "Training on NAD-aligned separable data",
        "nad_training",
        ("nad_training_results",),
        (
            "docs/methods.md §2.3 (measured, LeNet-GeLU, 4 000 samples, 30 epochs): both models order "
            "the NADs alike, accuracy falls with the NAD index, and with this budget the "
            "network beats its linearisation. That the paper's figure shows the same fall for "
            "both is a recollection (docs/methods.md §2.2).",
        ),
        keyed_by_dataset=False,
        needs="nads",
        accumulated=("nad_training_results",),
    ),
    Experiment(
        "cifar2",
        "CIFAR-2 (classes 0-4 vs 5-9): network vs linearisation by training-set size",
        "cifar2",
        ("cifar2_results",),
        (
            "docs/methods.md §2.1 item 2 (paper text): the sign and size of the network − linearisation "
            "gap depend on the architecture, the number of training samples and the task. "
            "That networks beat their linearisations on CIFAR-2, ResNet18 most, is a "
            "recollection of the paper's table (docs/methods.md §2.2).",
        ),
        accumulated=("cifar2_results",),
    ),
)


def history_inputs() -> tuple[str, ...]:
    """The ``<artifact>_history`` datasets the summary reads."""
    return tuple(f"{name}{HISTORY_SUFFIX}" for e in EXPERIMENTS for name in e.accumulated)


@dataclass(frozen=True)
class ReportingParams(Config):
    """``reporting:`` parameters (``conf/base/parameters_reporting.yml``).

    Attributes:
        top_eigenvalues: how many leading eigenvalues the summary lists.
        max_scalars: how many scalar entries of a JSON report are listed.
        embed_figures: embed the summary figure in the HTML report.
        accumulate: merge the saved versions of each result that share its settings.
        fit_threshold: train accuracy from which a model "fits its training set".
        underfit_threshold: train accuracy below which a linearisation "underfits".
        overfit_gap: network train − test accuracy from which it "overfits" (alignment).
        title: the report's title.
    """

    SECTION: ClassVar[str] = "reporting"

    top_eigenvalues: int = 5
    max_scalars: int = 12
    embed_figures: bool = True
    accumulate: bool = True
    fit_threshold: float = 0.95
    underfit_threshold: float = 0.95
    overfit_gap: float = 0.05
    title: str = "What can linearised networks say about generalisation? Results summary"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        for name in ("fit_threshold", "underfit_threshold", "overfit_gap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(
                    f"reporting.{name} is an accuracy in [0, 1]; got {getattr(self, name)}."
                )
        if self.top_eigenvalues < 1 or self.max_scalars < 0:
            raise ConfigError("reporting.top_eigenvalues must be >= 1, max_scalars >= 0.")

    @property
    def thresholds(self) -> ev.Thresholds:
        return ev.Thresholds(self.fit_threshold, self.underfit_threshold, self.overfit_gap)


@dataclass
class Section:
    """One experiment's part of the summary, rendered to both Markdown and HTML."""

    experiment: Experiment
    found: bool
    facts: list[tuple[str, str]] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    subsections: list[tuple[str, str, ev.Evidence]] = field(default_factory=list)
    settings: str = ""
    provenance: list[str] = field(default_factory=list)
    command: str = ""
    versions: dict[str, str | None] = field(default_factory=dict)


def run_command(experiment: Experiment, dataset: str, model: str) -> str:
    """The ``kedro run`` command that produces ``experiment`` for this dataset and model."""
    params = (
        f"model={model}"
        if not experiment.keyed_by_dataset
        else (f"data.dataset={dataset},model={model}")
    )
    return f"kedro run --pipelines {experiment.pipeline} --params {params}"


def accuracy_table(
    results: pd.DataFrame, index_column: str, kind_column: str = "kind"
) -> pd.DataFrame:
    """Test accuracy by ``index_column`` × kind (diverged runs NaN → "failed").

    Returns:
        One row per index value; one ``test acc (<kind>)`` column per kind, plus the
        eigenvalue and majority-class baseline where the table has them.
    """
    table = results.pivot_table(
        index=index_column,
        columns=kind_column,
        values="test_accuracy",
        aggfunc="first",
        dropna=False,
    )
    table.columns = [f"test acc ({c})" for c in table.columns]
    for extra, name in (("eigenvalue", "eigenvalue"), ("majority_baseline_test", "majority")):
        if extra in results:
            table[name] = results.drop_duplicates(index_column).set_index(index_column)[extra]
    table.index.name = index_column
    return table


def _provenance(name: str, merged: Accumulated | None) -> list[str]:
    """Lines saying which versions a merged result comes from and which were left out."""
    if merged is None or not merged.used:
        return []
    unit = "runs" if name.endswith("alignment") else "rows"
    used = ", ".join(f"{v or 'unversioned'} ({n} {unit})" for v, n in merged.used.items())
    lines = [f"`{name}` accumulated from {len(merged.used)} version(s): {used}"]
    if len(merged.used) == 1:
        lines = []  # one version: "Versions read" already says which
    if merged.other_settings:
        lines.append(
            f"`{name}`: {len(merged.other_settings)} older version(s) with other settings "
            f"not included (latest {max(merged.other_settings)})"
        )
    if merged.unreadable:
        lines.append(
            f"`{name}`: {len(merged.unreadable)} version(s) unreadable by this code, "
            f"skipped: {', '.join(sorted(merged.unreadable))}"
        )
    return lines


def _merge(
    experiment: Experiment,
    results: dict[str, Any],
    versions: dict[str, str | None],
    params: ReportingParams,
) -> dict[str, Accumulated | None]:
    merged: dict[str, Accumulated | None] = {}
    for name in experiment.accumulated:
        history = results.get(f"{name}{HISTORY_SUFFIX}") if params.accumulate else None
        accumulate = accumulate_alignment if name.endswith("alignment") else accumulate_table
        merged[name] = accumulate(results.get(name), history, name, versions.get(name))
        if merged[name] is not None:
            results[name] = merged[name].data
    return merged


def _section(
    experiment: Experiment,
    results: dict[str, Any],
    versions: dict[str, str | None],
    params: ReportingParams,
    dataset: str,
    model: str,
) -> Section:
    section = Section(
        experiment,
        found=any(results.get(name) is not None for name in experiment.artifacts),
        command=run_command(experiment, dataset, model),
        versions={name: versions.get(name) for name in experiment.artifacts},
    )
    if not section.found:
        return section
    merged = _merge(experiment, results, versions, params)
    for name, accumulated in merged.items():
        section.provenance += _provenance(name, accumulated)
    data = {name: results.get(name) for name in experiment.artifacts}
    thresholds = params.thresholds
    found: ev.Evidence | None = None
    if experiment.key == "spectrum":
        report = data["ntk_report"] or {}
        values = data["ntk_eigenvalues"]
        if values is None and "eigenvalues" in report:
            values = np.asarray(report["eigenvalues"])
        found = ev.spectrum_evidence(report, values, params.top_eigenvalues)
    elif experiment.key == "eigen_training":
        table, alignment = data["eigen_training_results"], data["eigen_training_alignment"]
        if table is not None:
            found = ev.eigen_evidence(table, thresholds)
            section.settings = ev.run_settings(table)
        if alignment is not None:
            section.subsections.append(
                (
                    "Kernel rotation toward the target",
                    "Concentration ratio of the trace-normalised kernel at the target index, "
                    "per split, at θ0 and at the end of training; gain = end − θ0.",
                    ev.alignment_evidence(alignment, table, thresholds),
                )
            )
    elif experiment.key == "pretrained_comparison":
        table = data["pretrained_comparison_results"]
        found = ev.pretrained_evidence(table)
        section.settings = ev.run_settings(table)
    elif experiment.key == "nads":
        report = data["nads_report"] or {}
        values = data["nads_eigenvalues"]
        facts = ev.scalar_facts(report, params.max_scalars)
        if values is not None:
            values = np.asarray(values, np.float64)
            top = params.top_eigenvalues
            facts = [
                ("D (input dimension = number of NADs)", str(values.size)),
                (f"top {top} eigenvalues (σ²)", ", ".join(fmt(v) for v in values[:top])),
                *facts,
            ]
        found = ev.Evidence(facts=facts, tables=[])
    elif experiment.key == "nad_training":
        table = data["nad_training_results"]
        found = ev.nad_evidence(table)
        section.settings = ev.run_settings(table)
    elif experiment.key == "cifar2":
        table = data["cifar2_results"]
        found = ev.cifar2_evidence(table, thresholds)
        section.settings = ev.run_settings(table)
    if found is not None:
        section.facts, section.tables = found.facts, found.tables
    return section


# Summary-figure panels (figures.PANELS) of each experiment.
_PANELS = {
    "spectrum": ("spectrum",),
    "eigen_training": ("eigen_accuracy", "alignment"),
    "pretrained_comparison": ("comparison",),
    "nads": ("nad_spectrum", "nad_images"),
    "nad_training": ("nad_accuracy",),
    "cifar2": ("cifar2_accuracy",),
}


def _without_version(value: Any) -> Any:
    if isinstance(value, pd.DataFrame) and "version" in value:
        return value.drop(columns="version")
    return value


def _without_one_class(alignment: Any, table: pd.DataFrame | None) -> Any:
    """The alignment without the runs of one-class tasks: j = 0's concentration (tens to
    hundreds) would set the panel's scale and flatten every other run."""
    if not alignment or table is None:
        return alignment
    one_class = {str(int(j)) for j in table.loc[table["degenerate"].astype(bool), "task_value"]}
    runs = {j: run for j, run in (alignment.get("runs") or {}).items() if j not in one_class}
    return {**alignment, "runs": runs}


def _summary_figure(sections: list[Section], results: dict[str, Any], title: str):
    missing = {
        panel: s.command  # the figure says "not run yet" itself
        for s in sections
        if not s.found
        for panel in _PANELS[s.experiment.key]
    }
    get = lambda name: _without_version(results.get(name))  # noqa: E731
    return figures.summary_plot(
        ntk_eigenvalues=get("ntk_eigenvalues"),
        ntk_report=get("ntk_report"),
        eigen_results=get("eigen_training_results"),
        alignment=_without_one_class(
            get("eigen_training_alignment"), get("eigen_training_results")
        ),
        comparison_results=get("pretrained_comparison_results"),
        nad_eigenvalues=get("nads_eigenvalues"),
        nads_report=get("nads_report"),
        nad_images=get("nads_images"),
        nad_results=get("nad_training_results"),
        cifar2_results=get("cifar2_results"),
        missing=missing,
        title=title,
    )


def summarize_experiments(
    artifact_versions: dict[str, str | None],
    data: DataConfig,
    model: str,
    reporting: ReportingParams,
    **artifacts: Any,
) -> tuple[str, str, Any]:
    """Markdown report, self-contained HTML report and summary figure of all results.

    Args:
        artifact_versions: name → the version read (``hooks.upstream``).
        data: the ``data`` parameters (``dataset`` names the prepared dataset).
        model: the selected model preset name.
        reporting: report settings.
        artifacts: every experiment's artifacts (``EXPERIMENTS``) and the version
            histories of the accumulated ones (:func:`history_inputs`), ``None`` where
            the experiment has not run.

    Returns:
        (markdown text, HTML text, matplotlib figure).
    """
    params = from_mapping(ReportingParams, reporting)
    dataset = data.dataset
    results = dict(artifacts)
    versions = dict(artifact_versions or {})
    sections = [_section(e, results, versions, params, dataset, str(model)) for e in EXPERIMENTS]
    found = [s.experiment.pipeline for s in sections if s.found]
    missing = [s.experiment.pipeline for s in sections if not s.found]
    logger.info("Summary of %s on %s: found %s; not run: %s", model, dataset, found, missing)
    title = f"{params.title}: {model} on {dataset}"
    header = [
        f"# {title}",
        "",
        f"Generated {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from the "
        f"stored results of model `{model}` on dataset `{dataset}` (NADs: model "
        f"`{model}`, synthetic data). {len(found)} of {len(sections)} experiments found. "
        "Claims cite docs/methods.md §2.1 (the paper's text), §2.3 (measured at toy scale) or §2.2 "
        "(a recollection of the paper's figures, unverified). "
        + (
            "Result tables merge every saved version with the same run settings (newest "
            "row per task)."
            if params.accumulate
            else "Result tables are the latest (or pinned) version only."
        ),
    ]
    figure = _summary_figure(sections, results, title)
    png = None
    if params.embed_figures:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        png = buffer.getvalue()
    return render_markdown(sections, header), render_html(sections, header, png), figure
