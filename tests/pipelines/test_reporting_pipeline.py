"""reporting: the summary node on in-memory artifacts, and the pipeline's wiring."""

from __future__ import annotations

import numpy as np
from fakes import results_table
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.experiments.data import DataConfig
from linearized_kedro.figures import figure_has_data
from linearized_kedro.hooks.upstream import TOLERATES_MISSING, VERSIONS_DATASET
from linearized_kedro.pipelines.reporting import create_pipeline
from linearized_kedro.pipelines.reporting.nodes import (
    EXPERIMENTS,
    ReportingParams,
    accuracy_table,
    markdown_table,
    run_command,
    summarize_experiments,
)

EIGENVALUES = np.array([1.2e4, 371.0, 52.0, 1.34])
ARTIFACTS = [name for e in EXPERIMENTS for name in e.artifacts]


def _eigen_table():
    accs = {1: (0.95, 0.97), 2: (0.9, 0.93), 10: (0.7, 0.8), 50: (0.55, 0.6)}
    return results_table(
        "eigen_training",
        "eigen_index",
        [
            (j, kind, acc, 1.0)
            for j, pair in accs.items()
            for kind, acc in zip(("network", "linear"), pair, strict=True)
        ],
    )


def _cifar2_table():
    return results_table(
        "cifar2",
        "num_train",
        [
            (250, "linear", 0.62, 0.9),
            (250, "network", 0.64, 1.0),
            (1000, "linear", 0.5, 0.5, True),
            (1000, "network", 0.7, 0.99),
        ],
    )


def _artifacts(**overrides):
    artifacts = dict.fromkeys(ARTIFACTS)
    artifacts.update(
        ntk_report={
            "n": 1797,
            "k": 4,
            "num_params": 16_601,
            "solver": "dense",
            "max_residual": 3.2e-9,
            "timings": {"gram_seconds": 12.5},
        },
        ntk_eigenvalues=EIGENVALUES,
        eigen_training_results=_eigen_table(),
        cifar2_results=_cifar2_table(),
        nads_eigenvalues=np.array([5.0, 2.0, 1.0, 0.5]),
    )
    artifacts.update(overrides)
    return artifacts


def _summarize(artifacts, versions=None, **params):
    return summarize_experiments(
        versions or {},
        DataConfig(dataset="digits"),
        "lenet",
        ReportingParams(**params),
        **artifacts,
    )


def test_accuracy_table_and_markdown():
    table = accuracy_table(_cifar2_table(), "task_value")
    assert list(table.columns) == [
        "test acc (linear)",
        "test acc (network)",
        "eigenvalue",
        "majority",
    ]
    assert np.isnan(table.loc[1000, "test acc (linear)"])
    text = markdown_table(table)
    assert "| task_value | test acc (linear) |" in text.splitlines()[0]
    assert "| 1000 | failed | 0.7 |" in text


def test_summary_reports_numbers_versions_and_commands_for_missing_experiments():
    versions = {"ntk_eigenvalues": "2026-11-30T01.00.00.000Z"}
    markdown, html_text, fig = _summarize(_artifacts(), versions, top_eigenvalues=3)
    assert markdown.startswith("# ") and "lenet on digits" in markdown
    for snippet in (
        "N (samples): 1797",
        "k (eigenpairs): 4",
        "λ0: 1.200e+04",
        "λ_3 (last): 1.34",
        "3.200e-09",
    ):
        assert snippet in markdown, snippet
    assert "| 10 | 0.8 | 0.7 |" in markdown
    assert "Spearman ρ of task rankings (network vs linear): 1" in markdown
    assert "| 1000 | failed | 0.7 |" in markdown  # a diverged run is "failed", never a number
    assert "D (input dimension = number of NADs): 4" in markdown
    assert "`ntk_eigenvalues` 2026-11-30T01.00.00.000Z" in markdown  # the version read
    assert (
        "`kedro run --pipelines pretrained_comparison --params data.dataset=digits,model=lenet`"
    ) in markdown
    assert "`kedro run --pipelines nad_training --params model=lenet`" in markdown
    assert markdown.count("**Not run yet.**") == 2
    assert html_text.count("data:image/png;base64,") == 1 and "<table" in html_text
    assert figure_has_data(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("pretrained_comparison" in t for t in texts)


def test_summary_reports_the_pretrained_kernel_gap():
    table = results_table(
        "pretrained_comparison",
        "eigen_index",
        [
            (10, "network", 0.7, 1.0),
            (10, "linear_init", 0.8, 1.0),
            (10, "linear_pretrained", 0.72, 1.0),
        ],
    )
    markdown, _, fig = _summarize(_artifacts(pretrained_comparison_results=table))
    assert "| 10 | 0.8 | 0.72 | 0.7 |" in markdown
    assert "kernel at θ_end − kernel at θ0: -0.080" in markdown
    assert figure_has_data(fig)


def test_summary_with_nothing_run():
    markdown, _, fig = _summarize(dict.fromkeys(ARTIFACTS))
    assert markdown.count("**Not run yet.**") == len(EXPERIMENTS)
    assert "0 of 6 experiments found" in markdown
    assert fig.axes and all(not ax.axison for ax in fig.axes)  # every panel says "not run"


def test_run_command_keys_nads_by_model_only():
    by_key = {e.key: e for e in EXPERIMENTS}
    assert run_command(by_key["nads"], "digits", "lenet") == (
        "kedro run --pipelines nads --params model=lenet"
    )
    assert run_command(by_key["cifar2"], "digits", "mlp") == (
        "kedro run --pipelines cifar2 --params data.dataset=digits,model=mlp"
    )


def test_pipeline_reads_every_experiment_artifact_and_tolerates_missing_ones():
    pipeline = create_pipeline()
    (node,) = pipeline.nodes
    assert set(ARTIFACTS) | {VERSIONS_DATASET} <= set(node.inputs)
    assert TOLERATES_MISSING in node.tags
    catalog = DataCatalog(
        {
            **{
                name: MemoryDataset(value, copy_mode="assign")
                for name, value in _artifacts().items()
            },
            VERSIONS_DATASET: MemoryDataset({}),
            "params:data": MemoryDataset(DataConfig(dataset="digits")),
            "params:model": MemoryDataset("mlp"),
            "params:reporting": MemoryDataset(ReportingParams(embed_figures=False)),
        }
    )
    outputs = SequentialRunner().run(pipeline, catalog)
    assert "## CIFAR-2" in outputs["summary_markdown"].load()
    assert "base64" not in outputs["summary_html"].load()  # embed_figures: false
    assert figure_has_data(outputs["summary_plot"].load())
