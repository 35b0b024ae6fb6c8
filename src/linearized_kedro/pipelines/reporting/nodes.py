"""Nodes of ``reporting``: the latest result of every experiment → one summary.

The summary tells the paper's story in one place (docs/methods.md §2): the NTK spectrum, the
eigenfunction benchmark (network vs linearisation), the pretrained-kernel comparison,
NADs and training on them, and CIFAR-2. Experiments that have not run are listed with
the command that produces them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from linearized_kedro import figures
from linearized_kedro.core.config import Config, from_mapping
from linearized_kedro.experiments.data import DataConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    """One experiment of the summary: its pipeline, its artifacts and the paper's claim."""

    key: str
    title: str
    pipeline: str
    artifacts: tuple[str, ...]
    claim: str
    keyed_by_dataset: bool = True
    needs: str | None = None


EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "spectrum",
        "Empirical NTK spectrum at initialisation",
        "ntk_spectrum",
        ("ntk_report", "ntk_eigenvalues"),
        "The eigenvalues of the NTK Gram span many orders of magnitude (LeNet on digits: "
        "λ0/λ1000 ≈ 10⁶, docs/methods.md §2.3); its eigenvectors define tasks of graded difficulty.",
    ),
    Experiment(
        "eigen_training",
        "Eigenfunction benchmark: network vs linearisation",
        "eigen_training",
        ("eigen_training_results", "eigen_training_alignment"),
        "Test accuracy falls with the eigenfunction index for both models, which rank the "
        "tasks alike (the linearisation ranks task difficulty); for CNNs the linearisation "
        "often beats the network (no universal non-linear advantage). After training on j, "
        "the kernel's energy peaks at j, more on train than on test (docs/methods.md §2.1-2.2).",
        needs="ntk_spectrum",
    ),
    Experiment(
        "pretrained_comparison",
        "Kernel at initialisation vs kernel after training",
        "pretrained_comparison",
        ("pretrained_comparison_results",),
        "A linear model with the NTK of the trained network generalises like the network, "
        "i.e. worse than the linear model with the NTK at θ0: kernel evolution causes the "
        "overfitting (docs/methods.md §2.2).",
        needs="ntk_spectrum",
    ),
    Experiment(
        "nads",
        "Neural anisotropy directions (NADs)",
        "nads",
        ("nads_report", "nads_eigenvalues", "nads_images"),
        "NADs are the singular vectors of ∂²f/∂θ∂x; they look like structured, "
        "Fourier-like patterns (docs/methods.md §2.1 item 3).",
        keyed_by_dataset=False,
    ),
    Experiment(
        "nad_training",
        "Training on NAD-aligned separable data",
        "nad_training",
        ("nad_training_results",),
        "Accuracy is high for the first NADs and drops for later ones, for the network and "
        "for its linearisation (docs/methods.md §2.2).",
        keyed_by_dataset=False,
        needs="nads",
    ),
    Experiment(
        "cifar2",
        "CIFAR-2 (classes 0-4 vs 5-9): network vs linearisation by training-set size",
        "cifar2",
        ("cifar2_results",),
        "On this natural task networks beat their linearisations (ResNet18 most); the gap "
        "depends on the number of training samples (docs/methods.md §2.2).",
    ),
)


@dataclass(frozen=True)
class ReportingParams(Config):
    """``reporting:`` parameters (``conf/base/parameters_reporting.yml``).

    Attributes:
        top_eigenvalues: how many leading eigenvalues the summary lists.
        max_scalars: how many scalar entries of a JSON report are listed.
        embed_figures: embed every pipeline's PNG figure in the HTML report.
    """

    SECTION: ClassVar[str] = "reporting"

    top_eigenvalues: int = 5
    max_scalars: int = 12
    embed_figures: bool = True
    title: str = "What can linearised networks say about generalisation? Results summary"
    extra: dict = field(default_factory=dict)


@dataclass
class Section:
    """One experiment's part of the summary, rendered to both Markdown and HTML."""

    experiment: Experiment
    found: bool
    facts: list[tuple[str, str]] = field(default_factory=list)
    table: pd.DataFrame | None = None
    table_caption: str = ""
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


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "failed"
        if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A DataFrame as a GitHub Markdown table (index as first column; NaN → "failed")."""
    head = [str(table.index.name or "")] + [str(c) for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, row in table.iterrows():
        cells = [_fmt(index)] + [_fmt(v) for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def accuracy_table(
    results: pd.DataFrame, index_column: str, kind_column: str = "kind"
) -> pd.DataFrame:
    """Test accuracy by ``index_column`` × kind (diverged runs NaN → "failed").

    Args:
        results: a results table with ``index_column``, ``kind_column``,
            ``test_accuracy`` and optionally ``eigenvalue`` / ``majority_baseline_test``.

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


def _first_column(table: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in table.columns), None)


def _scalars(report: dict[str, Any], limit: int) -> list[tuple[str, str]]:
    items = [
        (key, _fmt(value))
        for key, value in report.items()
        if isinstance(value, str | int | float | bool) and value is not None
    ]
    return items[:limit]


def _ranking_facts(results: pd.DataFrame, index_column: str, kind_column: str) -> list:
    """Agreement of the two kinds' task rankings and the mean accuracy gap."""
    facts = []
    pivot = results.pivot_table(
        index=index_column, columns=kind_column, values="test_accuracy", aggfunc="first"
    )
    if {"linear_init", "linear_pretrained"} <= set(pivot.columns):
        both = pivot[["linear_init", "linear_pretrained"]].dropna()
        if len(both):
            gap = float((both["linear_pretrained"] - both["linear_init"]).mean())
            facts.append(("mean test-accuracy gap, kernel at θ_end − kernel at θ0", f"{gap:+.3f}"))
    if {"network", "linear"} <= set(pivot.columns):
        both = pivot[["network", "linear"]].dropna()
        if len(both) >= 3:
            rho = spearmanr(both["network"], both["linear"]).statistic
            facts.append(("Spearman ρ of task rankings (network vs linear)", _fmt(float(rho))))
        if len(both):
            gap = float((both["linear"] - both["network"]).mean())
            facts.append(("mean test-accuracy gap, linear − network", f"{gap:+.3f}"))
    return facts


def _section(
    experiment: Experiment,
    results: dict[str, Any],
    params: ReportingParams,
    dataset: str,
    model: str,
) -> Section:
    data = {name: results.get(name) for name in experiment.artifacts}
    section = Section(
        experiment,
        found=any(value is not None for value in data.values()),
        command=run_command(experiment, dataset, model),
    )
    if not section.found:
        return section
    top = params.top_eigenvalues
    if experiment.key == "spectrum":
        report = data["ntk_report"] or {}
        values = data["ntk_eigenvalues"]
        if values is None and "eigenvalues" in report:
            values = np.asarray(report["eigenvalues"])
        facts = [
            ("N (samples)", _fmt(report.get("n"))),
            ("k (eigenpairs)", _fmt(report.get("k"))),
            ("parameters P", _fmt(report.get("num_params"))),
            ("solver", _fmt(report.get("solver"))),
            ("max residual ‖Ku − λu‖/|λ|", _fmt(report.get("max_residual"))),
        ]
        if values is not None and len(values):
            values = np.asarray(values, np.float64)
            facts[2:2] = [
                ("λ0", _fmt(values[0])),
                (f"λ_{len(values) - 1} (last)", _fmt(values[-1])),
                ("λ0 / λ_last", _fmt(values[0] / values[-1]) if values[-1] else "∞"),
            ]
        timings = report.get("timings") or {}
        facts += [(f"time: {k}", f"{v:.1f} s") for k, v in timings.items()]
        section.facts = facts
    elif experiment.key in ("eigen_training", "nad_training", "pretrained_comparison"):
        table = data[experiment.artifacts[0]]
        kind_column = "kind"
        index_column = (
            _first_column(table, ("task_value", "label_idx", "nad_idx", "index"))
            or table.columns[0]
        )
        section.table = accuracy_table(table, index_column, kind_column)
        section.table_caption = f"Test accuracy by {index_column} and model"
        section.facts = _ranking_facts(table, index_column, kind_column)
        if "diverged" in table and table["diverged"].astype(bool).any():
            section.facts.append(("diverged runs", str(int(table["diverged"].astype(bool).sum()))))
    elif experiment.key == "nads":
        report = data["nads_report"] or {}
        values = data["nads_eigenvalues"]
        facts = _scalars(report, params.max_scalars)
        if values is not None:
            values = np.asarray(values, np.float64)
            facts.insert(0, ("D (input dimension = number of NADs)", str(values.size)))
            facts.insert(
                1, (f"top {top} eigenvalues (σ²)", ", ".join(_fmt(v) for v in values[:top]))
            )
        section.facts = facts
    elif experiment.key == "cifar2":
        table = data["cifar2_results"]
        section.table = accuracy_table(table, "task_value")
        if "train_accuracy" in table:
            train = table.pivot_table(
                index="task_value",
                columns="kind",
                values="train_accuracy",
                aggfunc="first",
                dropna=False,
            )
            for column in train.columns:
                section.table[f"train acc ({column})"] = train[column]
        section.table_caption = "Accuracy by training-set size and model"
        pivot = table.pivot_table(
            index="task_value", columns="kind", values="test_accuracy", aggfunc="first"
        )
        if {"network", "linear"} <= set(pivot.columns):
            gap = (pivot["network"] - pivot["linear"]).dropna()
            section.facts = [(f"network − linear at n={n}", f"{g:+.3f}") for n, g in gap.items()]
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


def _summary_figure(sections: list[Section], results: dict[str, Any], title: str):
    missing = {
        panel: f"not run yet:\n{s.command}"
        for s in sections
        if not s.found
        for panel in _PANELS[s.experiment.key]
    }
    return figures.summary_plot(
        ntk_eigenvalues=results.get("ntk_eigenvalues"),
        ntk_report=results.get("ntk_report"),
        eigen_results=results.get("eigen_training_results"),
        alignment=results.get("eigen_training_alignment"),
        comparison_results=results.get("pretrained_comparison_results"),
        nad_eigenvalues=results.get("nads_eigenvalues"),
        nads_report=results.get("nads_report"),
        nad_images=results.get("nads_images"),
        nad_results=results.get("nad_training_results"),
        cifar2_results=results.get("cifar2_results"),
        missing=missing,
        title=title,
    )


def _render_markdown(sections: list[Section], header: list[str]) -> str:
    lines = list(header)
    lines += ["", "| experiment | pipeline | status |", "|---|---|---|"]
    for s in sections:
        status = "found" if s.found else f"not run: `{s.command}`"
        lines.append(f"| {s.experiment.title} | `{s.experiment.pipeline}` | {status} |")
    for s in sections:
        lines += [
            "",
            f"## {s.experiment.title} (`{s.experiment.pipeline}`)",
            "",
            f"*Paper claim:* {s.experiment.claim}",
            "",
        ]
        if not s.found:
            needs = f" (after `{s.experiment.needs}`)" if s.experiment.needs else ""
            lines.append(f"**Not run yet.** Run{needs}: `{s.command}`")
            continue
        lines += [f"- {name}: {value}" for name, value in s.facts]
        if s.table is not None:
            lines += ["", f"{s.table_caption}:", "", markdown_table(s.table)]
        if s.versions:
            lines += [
                "",
                "Versions read: "
                + ", ".join(f"`{name}` {version or 'n/a'}" for name, version in s.versions.items()),
            ]
    return "\n".join(lines) + "\n"


def _png_tag(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}" width="720">'


def _render_html(
    sections: list[Section], header: list[str], summary_png: bytes | None, embed: bool
) -> str:
    esc = html.escape
    body = [f"<h1>{esc(header[0].lstrip('# '))}</h1>"]
    body += [f"<p>{esc(line)}</p>" for line in header[1:] if line]
    if summary_png:
        body.append(_png_tag(summary_png, "summary figure"))
    for s in sections:
        body.append(
            f"<h2>{esc(s.experiment.title)} (<code>{esc(s.experiment.pipeline)}</code>)</h2>"
        )
        body.append(f"<p><em>Paper claim:</em> {esc(s.experiment.claim)}</p>")
        if not s.found:
            body.append(f"<p><strong>Not run yet.</strong> <code>{esc(s.command)}</code></p>")
            continue
        if s.facts:
            body.append(
                "<ul>" + "".join(f"<li>{esc(n)}: {esc(v)}</li>" for n, v in s.facts) + "</ul>"
            )
        if s.table is not None:
            body.append(f"<p>{esc(s.table_caption)}</p>")
            body.append(s.table.to_html(float_format=lambda v: f"{v:.4g}", na_rep="failed"))
        if s.versions:
            listing = ", ".join(f"{n} {v or 'n/a'}" for n, v in s.versions.items())
            body.append(f"<p><small>Versions read: {esc(listing)}</small></p>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(header[0])}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
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
        artifacts: every experiment's artifacts (``EXPERIMENTS``), ``None`` where the
            experiment has not run.

    Returns:
        (markdown text, HTML text, matplotlib figure).
    """
    params = from_mapping(ReportingParams, reporting)
    dataset = data.dataset
    results = dict(artifacts)
    sections = [_section(e, results, params, dataset, str(model)) for e in EXPERIMENTS]
    for section in sections:
        section.versions = {n: artifact_versions.get(n) for n in section.experiment.artifacts}
    found = [s.experiment.pipeline for s in sections if s.found]
    missing = [s.experiment.pipeline for s in sections if not s.found]
    logger.info("Summary of %s on %s: found %s; not run: %s", model, dataset, found, missing)
    title = f"{params.title}: {model} on {dataset}"
    header = [
        f"# {title}",
        "",
        f"Generated {_dt.datetime.now(_dt.UTC).strftime('%Y-%m-%d %H:%M UTC')} from the "
        f"stored results of model `{model}` on dataset `{dataset}` (NADs: model "
        f"`{model}`, synthetic data). {len(found)} of {len(sections)} experiments found.",
    ]
    figure = _summary_figure(sections, results, title)
    png = None
    if params.embed_figures:
        import io

        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        png = buffer.getvalue()
    markdown = _render_markdown(sections, header)
    html_text = _render_html(sections, header, png, params.embed_figures)
    return markdown, html_text, figure
