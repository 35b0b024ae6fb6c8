"""reporting: ResultsCollectionDataset on a fake versioned tree, and the summary node."""

from __future__ import annotations

import io
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from kedro.io import DataCatalog, DatasetError, MemoryDataset  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402

from linearized_kedro.core.plots import figure_has_data  # noqa: E402
from linearized_kedro.datasets.results_collection import ResultsCollectionDataset  # noqa: E402
from linearized_kedro.pipelines.reporting import create_pipeline  # noqa: E402
from linearized_kedro.pipelines.reporting.nodes import (  # noqa: E402
    EXPERIMENTS,
    accuracy_table,
    markdown_table,
    run_command,
    summarize_experiments,
)

EIGENVALUES = np.array([1.2e4, 371.0, 52.0, 1.34])


def _png() -> bytes:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _eigen_table() -> pd.DataFrame:
    rows = []
    for j, (net, lin) in zip(
        [1, 2, 10, 50], [(0.95, 0.97), (0.9, 0.93), (0.7, 0.8), (0.55, 0.6)], strict=True
    ):
        for kind, acc in (("network", net), ("linear", lin)):
            rows.append(
                {
                    "label_idx": j,
                    "kind": kind,
                    "eigenvalue": EIGENVALUES[min(j, 3)],
                    "test_accuracy": acc,
                    "train_accuracy": 1.0,
                    "majority_baseline_test": 0.52,
                    "diverged": False,
                }
            )
    return pd.DataFrame(rows)


def _cifar2_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "num_train": [250, 250, 1000, 1000],
            "kind": ["linear", "network", "linear", "network"],
            "test_accuracy": [0.62, 0.64, np.nan, 0.7],
            "train_accuracy": [0.9, 1.0, np.nan, 0.99],
            "diverged": [False, False, True, False],
            "majority_baseline_test": [0.5] * 4,
        }
    )


def _results(**overrides):
    results = {name: None for e in EXPERIMENTS for name in (*e.artifacts, *e.figures)}
    results.update(
        ntk_report={
            "n": 1797,
            "k": 4,
            "num_params": 16_601,
            "solver": "dense",
            "max_residual": 3.2e-9,
            "timings": {"gram_seconds": 12.5},
        },
        ntk_eigenvalues=EIGENVALUES,
        ntk_spectrum_plot=_png(),
        eigen_training_results=_eigen_table(),
        cifar2_results=_cifar2_table(),
        nad_eigenvalues=np.array([5.0, 2.0, 1.0, 0.0]),
    )
    results.update(overrides)
    return results


# --- ResultsCollectionDataset -------------------------------------------------------


def _write(path, text_or_bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text_or_bytes, bytes):
        path.write_bytes(text_or_bytes)
    else:
        path.write_text(text_or_bytes)


@pytest.fixture
def tree(tmp_path):
    """Kedro's versioned layout: <filepath>/<version>/<basename>."""
    report = tmp_path / "ntk/report.json"
    _write(report / "2026-11-27T10.00.00.000Z/report.json", json.dumps({"n": 1}))
    _write(report / "2026-11-28T09.00.00.000Z/report.json", json.dumps({"n": 2}))
    (report / "2026-11-28T23.00.00.000Z").mkdir()  # a failed save: folder without file
    values = tmp_path / "ntk/eigenvalues.npy"
    (values / "2026-11-28T09.00.00.000Z").mkdir(parents=True)
    np.save(values / "2026-11-28T09.00.00.000Z/eigenvalues.npy", EIGENVALUES)
    _write(tmp_path / "plain/results.csv", "num_train,kind\n10,network\n")  # unversioned
    _write(tmp_path / "fig/plot.png/v1/plot.png", b"\x89PNG fake")
    return tmp_path


def _collection(root, **kwargs):
    return ResultsCollectionDataset(
        artifacts={
            "ntk_report": str(root / "ntk/report.json"),
            "ntk_eigenvalues": str(root / "ntk/eigenvalues.npy"),
            "table": {"filepath": str(root / "plain/results.csv"), "format": "csv"},
            "figure": str(root / "fig/plot.png"),
            "never_run": str(root / "missing/results.csv"),
        },
        **kwargs,
    )


def test_collection_loads_latest_versions_and_none_for_missing(tree):
    loaded = _collection(tree).load()
    assert loaded["ntk_report"] == {"n": 2}  # latest folder that holds the file
    np.testing.assert_array_equal(loaded["ntk_eigenvalues"], EIGENVALUES)
    assert list(loaded["table"]["kind"]) == ["network"]
    assert loaded["figure"] == b"\x89PNG fake"
    assert loaded["never_run"] is None
    assert _collection(tree).versions()["ntk_report"] == "2026-11-28T09.00.00.000Z"


def test_collection_version_pins(tree):
    pinned = _collection(tree, versions={"ntk_report": "2026-11-27T10.00.00.000Z"})
    assert pinned.load()["ntk_report"] == {"n": 1}
    with pytest.raises(DatasetError, match="does not exist"):
        _collection(tree, versions={"ntk_report": "1999"}).load()
    with pytest.raises(DatasetError, match="unknown artifacts"):
        _collection(tree, versions={"nope": "1"})


def test_collection_refuses_corrupt_files_bad_config_and_saves(tree):
    _write(tree / "ntk/report.json/2026-11-29T00.00.00.000Z/report.json", "{not json")
    with pytest.raises(DatasetError, match="Cannot read 'ntk_report'"):
        _collection(tree).load()
    with pytest.raises(DatasetError, match="Cannot infer the format"):
        ResultsCollectionDataset(artifacts={"x": str(tree / "a.bin")})
    with pytest.raises(DatasetError, match="Unknown artifact format"):
        ResultsCollectionDataset(artifacts={"x": {"filepath": "a.csv", "format": "xls"}})
    with pytest.raises(DatasetError, match="at least one"):
        ResultsCollectionDataset(artifacts={})
    with pytest.raises(DatasetError, match="read-only"):
        _collection(tree).save({})


def test_collection_preview_for_kedro_viz(tree):
    preview = _collection(tree).preview()
    assert preview["columns"] == ["artifact", "status", "version", "filepath"]
    status = {row[0]: row[1] for row in preview["data"]}
    assert status == {
        "ntk_report": "found",
        "ntk_eigenvalues": "found",
        "table": "found",
        "figure": "found",
        "never_run": "missing",
    }


# --- summary ------------------------------------------------------------------------


def test_accuracy_table_and_markdown():
    table = accuracy_table(_cifar2_table(), "num_train")
    assert list(table.columns) == ["test acc (linear)", "test acc (network)", "majority"]
    assert np.isnan(table.loc[1000, "test acc (linear)"])
    text = markdown_table(table)
    assert "| num_train | test acc (linear) |" in text.splitlines()[0]
    assert "| 1000 | failed | 0.7 | 0.5 |" in text


def test_summary_reports_numbers_and_commands_for_missing_experiments():
    markdown, html_text, fig = summarize_experiments(
        _results(), {"dataset": "digits"}, "lenet", {"top_eigenvalues": 3}
    )
    assert markdown.startswith("# ") and "lenet on digits" in markdown
    # spectrum: N, k, λ0, λ_last, max residual
    for snippet in (
        "N (samples): 1797",
        "k (eigenpairs): 4",
        "λ0: 1.200e+04",
        "λ_3 (last): 1.34",
        "3.200e-09",
    ):
        assert snippet in markdown, snippet
    # eigen_training: accuracy by index × kind, ranking agreement, gap
    assert "| 10 | 0.8 | 0.7 |" in markdown
    assert "Spearman ρ of task rankings (network vs linear): 1" in markdown
    assert "linear − network: +0.050" in markdown
    # cifar2: the diverged run is "failed", never a number
    assert "| 1000 | failed | 0.7 |" in markdown
    # nads: D and top eigenvalues from the array even without the JSON report
    assert "D (input dimension = number of NADs): 4" in markdown
    # missing experiments with their commands
    assert (
        "`kedro run --pipelines pretrained_comparison --params data.dataset=digits,model=lenet`"
        in markdown
    )
    assert "`kedro run --pipelines nad_training --params model=lenet`" in markdown
    assert markdown.count("**Not run yet.**") == 2
    # HTML embeds the summary figure and the stored pipeline figures
    assert html_text.count("data:image/png;base64,") == 2
    assert "<table" in html_text
    # summary figure: one panel per experiment, missing ones say what to run
    assert len(fig.axes) == len(EXPERIMENTS)
    assert figure_has_data(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("pretrained_comparison" in t for t in texts)


def test_summary_reports_the_pretrained_kernel_gap():
    table = pd.DataFrame(
        {
            "label_idx": [10, 10, 10],
            "model": ["network", "linear_init", "linear_pretrained"],
            "test_accuracy": [0.7, 0.8, 0.72],
            "majority_baseline_test": [0.5] * 3,
        }
    )
    markdown, _, fig = summarize_experiments(
        _results(pretrained_comparison_results=table), {"dataset": "digits"}, "lenet", {}
    )
    assert "| 10 | 0.8 | 0.72 | 0.7 | 0.5 |" in markdown
    assert "kernel at θ_end − kernel at θ0: -0.080" in markdown
    assert figure_has_data(fig)


def test_summary_with_nothing_run():
    results = {name: None for e in EXPERIMENTS for name in (*e.artifacts, *e.figures)}
    markdown, _, fig = summarize_experiments(results, {"dataset": "cifar10"}, "mlp", {})
    assert markdown.count("**Not run yet.**") == len(EXPERIMENTS)
    assert "0 of 6 experiments found" in markdown
    assert all(not ax.axison for ax in fig.axes)


def test_run_command_keys_nads_by_model_only():
    by_key = {e.key: e for e in EXPERIMENTS}
    assert run_command(by_key["nads_directions"], "digits", "lenet") == (
        "kedro run --pipelines nads --params model=lenet"
    )
    assert run_command(by_key["cifar2"], "digits", "mlp") == (
        "kedro run --pipelines cifar2 --params data.dataset=digits,model=mlp"
    )


def test_pipeline_on_in_memory_catalog():
    catalog = DataCatalog(
        {
            "experiment_results": MemoryDataset(_results(), copy_mode="assign"),
            "params:data": MemoryDataset({"dataset": "digits"}),
            "params:model": MemoryDataset("mlp"),
            "params:reporting": MemoryDataset({"embed_figures": False}),
        }
    )
    outputs = SequentialRunner().run(create_pipeline(), catalog)
    markdown = outputs["summary_markdown"].load()
    html_text = outputs["summary_html"].load()
    assert "## CIFAR-2" in markdown
    assert "base64" not in html_text  # embed_figures: false
    assert figure_has_data(outputs["summary_plot"].load())


# --- shared plotting helpers (core/plots.py, used by the notebook) ------------------


def test_alignment_and_image_grid_figures_have_data():
    from linearized_kedro.core.plots import plot_alignment, plot_image_grid

    runs = {"5": {"train_normalized": np.linspace(1, 2, 10), "test_normalized": np.ones(10)}}
    fig = plot_alignment(runs)
    assert figure_has_data(fig) and "j=5" in fig.axes[0].get_title()
    images = np.random.default_rng(0).normal(size=(20, 8, 8, 1))
    grid = plot_image_grid(images, count=16, fourier=True)
    assert len(grid.axes) == 16 and figure_has_data(grid)
    empty, ax = plt.subplots()
    ax.plot([0, 1], [np.nan, np.nan])
    assert not figure_has_data(empty)  # NaN-only curves are not data
