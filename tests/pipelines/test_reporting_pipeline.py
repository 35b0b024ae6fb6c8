"""reporting: the evidence the summary shows, accumulation over versions, and the wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fakes import results_table
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.experiments.data import DataConfig
from linearized_kedro.figures import figure_has_data
from linearized_kedro.hooks.upstream import TOLERATES_MISSING, VERSIONS_DATASET
from linearized_kedro.pipelines.reporting import create_pipeline
from linearized_kedro.pipelines.reporting.evidence import (
    ONE_CLASS_NOTE,
    Thresholds,
    alignment_evidence,
    band_gaps,
    eigen_evidence,
)
from linearized_kedro.pipelines.reporting.history import (
    VERSION,
    accumulate_alignment,
    accumulate_table,
    versions_of,
)
from linearized_kedro.pipelines.reporting.nodes import (
    EXPERIMENTS,
    ReportingParams,
    accuracy_table,
    history_inputs,
    markdown_table,
    run_command,
    summarize_experiments,
)

EIGENVALUES = np.array([1.2e4, 371.0, 52.0, 1.34])
ARTIFACTS = [name for e in EXPERIMENTS for name in e.artifacts]
V1, V2, V3 = "2026-11-30T01.00.00.000Z", "2026-11-30T02.00.00.000Z", "2026-11-30T03.00.00.000Z"


def _eigen_table(accs=None, indices=None):
    accs = accs or {1: (0.95, 0.97), 2: (0.9, 0.93), 10: (0.7, 0.8), 50: (0.55, 0.6)}
    return results_table(
        "eigen_training",
        "eigen_index",
        [
            (j, kind, acc, 1.0 if kind == "network" else 0.9)
            for j, pair in accs.items()
            if indices is None or j in indices
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
    artifacts = dict.fromkeys([*ARTIFACTS, *history_inputs()])
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


def _facts(evidence) -> dict[str, str]:
    return dict(evidence.facts)


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


def test_summary_reports_numbers_settings_versions_and_commands():
    versions = {"ntk_eigenvalues": "2026-11-30T01.00.00.000Z"}
    markdown, html_text, fig = _summarize(_artifacts(), versions, top_eigenvalues=3)
    assert markdown.startswith("# ") and "lenet on digits" in markdown
    for snippet in (
        "N (samples): 1797",
        "k (eigenpairs): 4",
        "λ_0: 1.200e+04",
        "λ_3: 1.34",
        "λ_0 / λ_3: 8.96e+03",  # the ratio names the index it is taken at
        "3.200e-09",
        # run settings of the eigenfunction table, train beside test accuracy
        "*Run settings:* train samples 100, test samples 50, k 100, epochs 3, batch 32",
        "train acc (network) | test acc (network) | train acc (linearisation) | test acc (linearisation)",
        "| 1000 | 0.6 | 0.6 | 0.6 | 0.99 | 0.7 | failed | failed | diverged: failed (linear) |",
        "D (input dimension = number of NADs): 4",
        "`ntk_eigenvalues` 2026-11-30T01.00.00.000Z",  # the version read
        "`kedro run --pipelines pretrained_comparison --params data.dataset=digits,model=lenet`",
        "`kedro run --pipelines nad_training --params model=lenet`",
        "docs/methods.md §2.1",
    ):
        assert snippet in markdown, snippet
    assert "- λ_0 / λ_1000" not in markdown  # k = 4: no ratio at an index the run lacks
    # CIFAR-2's training-set size is its task axis, not a run setting.
    assert "*Run settings:* test samples 50, epochs 3" in markdown.split("## CIFAR-2")[1]
    assert markdown.count("**Not run yet.**") == 2
    assert html_text.count("data:image/png;base64,") == 1 and "<table" in html_text
    assert figure_has_data(fig)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("pretrained_comparison" in t for t in texts)


def test_one_class_task_is_marked_and_left_out_of_statistics():
    # j = 0 is one-class (fakes: all labels 0) and both models "score" 1.0 on it; with it,
    # the rankings would gain a perfect point at the top.
    accs = {0: (1.0, 1.0), 1: (0.8, 0.9), 2: (0.85, 0.95), 5: (0.7, 0.6), 10: (0.6, 0.65)}
    table = _eigen_table(accs)
    facts = _facts(eigen_evidence(table, Thresholds()))
    shown = eigen_evidence(table, Thresholds()).tables[0][1]
    assert shown.loc[0, "note"] == ONE_CLASS_NOTE and shown.loc[1, "note"] == ""
    assert facts["statistics over"] == "4 tasks, j = 1–10 (excluding j = 0: one-class)"
    assert facts["Spearman ρ(j, test accuracy), network"] == "-0.8"
    # Control: the same table with j = 0 not flagged enters the statistics and changes them.
    control = table.assign(degenerate=False)
    facts = _facts(eigen_evidence(control, Thresholds()))
    assert facts["statistics over"] == "5 tasks, j = 0–10"
    assert facts["Spearman ρ(j, test accuracy), network"] == "-0.9"


def test_gaps_are_reported_per_index_band_not_across_the_sign_change():
    # The linearisation is ahead by 0.1 at low indices, the network by 0.1 at high ones:
    # one mean over all indices would say ~0.
    accs = {1: (0.8, 0.9), 2: (0.8, 0.9), 5: (0.7, 0.8), 100: (0.7, 0.6), 200: (0.6, 0.5)}
    facts = dict(band_gaps(_eigen_table(accs), "linear", "network", "j"))
    assert facts["linearisation − network test accuracy, lower indices (j = 1–5)"].startswith(
        "mean +0.100; linearisation ahead at 3 of 3"
    )
    assert facts["linearisation − network test accuracy, upper indices (j = 100–200)"].startswith(
        "mean -0.100; linearisation ahead at 0 of 2, network at 2"
    )
    assert facts["indices where the network is ahead"] == "100, 200"
    # Control: without a sign change both bands have the same sign and no index is listed.
    same = {j: (n, n + 0.1) for j, (n, _) in accs.items()}
    facts = dict(band_gaps(_eigen_table(same), "linear", "network", "j"))
    assert facts["indices where the network is ahead"] == "none"
    assert all(v.startswith("mean +0.100") for k, v in facts.items() if "indices (" in k)


def test_fit_and_underfit_are_reported():
    accs = {1: (0.9, 0.95), 2: (0.85, 0.9), 500: (0.55, 0.5)}
    table = _eigen_table(accs)  # network train 1.0, linear train 0.9 (fakes)
    table.loc[(table["task_value"] == 500) & (table["kind"] == "linear"), "train_accuracy"] = 0.8
    table.loc[(table["task_value"] == 1) & (table["kind"] == "linear"), "train_accuracy"] = 0.99
    facts = _facts(eigen_evidence(table, Thresholds()))
    fits = "network train accuracy ≥ 0.95 (fits its training set)"
    under = "linearisation train accuracy < 0.95 (underfits its training set)"
    assert facts[fits] == "at 3 of 3 tasks (min 1)"
    assert facts[under] == "at j = 2, 500"
    # Control: a network short of its training set at j = 2 is not counted as fitting.
    table.loc[(table["task_value"] == 2) & (table["kind"] == "network"), "train_accuracy"] = 0.9
    facts = _facts(eigen_evidence(table, Thresholds()))
    assert facts[fits] == "at 2 of 3 tasks (min 0.9)"
    facts = _facts(eigen_evidence(table, Thresholds(underfit=0.85)))
    assert facts["linearisation train accuracy < 0.85 (underfits its training set)"] == "at j = 500"


def _alignment(gains: dict[int, tuple[float, float]], **settings) -> dict:
    runs = {
        str(j): {
            "concentration": {
                "train_init": 1.0,
                "train_end": 1.0 + gtrain,
                "test_init": 0.8,
                "test_end": 0.8 + gtest,
            }
        }
        for j, (gtrain, gtest) in gains.items()
    }
    return {
        "eigenvalues": [4.0, 3.0, 2.0, 1.0],
        "runs": runs,
        "settings": {"radius": 5, "neighbour_statistic": "median", "seed": 42, **settings},
    }


def test_alignment_shows_theta0_baselines_and_counts_train_over_test():
    table = _eigen_table({1: (0.99, 0.99), 2: (0.9, 0.93), 10: (0.7, 0.8)})
    found = alignment_evidence(
        _alignment({1: (2.0, 2.5), 2: (3.0, 1.0), 10: (2.0, 0.5)}), table, Thresholds()
    )
    frame = found.tables[0][1]
    assert list(frame.columns[:6]) == [
        "train θ0", "train end", "test θ0", "test end", "train gain", "test gain",
    ]  # fmt: skip
    assert frame.loc[2, "train θ0"] == 1.0 and frame.loc[2, "train gain"] == 3.0
    facts = _facts(found)
    assert facts["rotation larger on train than on test, all trained j ≥ 1"].startswith("at 2 of 3")
    # j = 1 does not overfit (network train 1.0, test 0.99): only j = 2, 10 count there.
    overfit = next(v for k, v in facts.items() if "overfits" in k)
    assert overfit.startswith("at 2 of 2") and "j = 2–10" in overfit
    # Control: the end kernel equal to θ0's (an untrained network) shows no rotation.
    frozen = alignment_evidence(_alignment({1: (0, 0), 2: (0, 0), 10: (0, 0)}), table, Thresholds())
    assert _facts(frozen)["rotation larger on train than on test, all trained j ≥ 1"].startswith(
        "at 0 of 3"
    )


# --- accumulation over versions -------------------------------------------------------------


def _history(**tables) -> dict:
    """A PartitionedDataset load: '<version>/<stem>' → loader (plus a sidecar to skip)."""
    out = {}
    for version, table in tables.items():
        out[f"{version}/eigen_training_results"] = lambda t=table: t
        out[f"{version}/eigen_training_results.csv.meta"] = lambda: pytest.fail("sidecar read")
    return out


def test_versions_of_keeps_only_the_artifact_files():
    history = _history(**{V1: 1, V2: 2})
    found = versions_of(history, "eigen_training_results")
    assert sorted(found) == [V1, V2] and found[V2]() == 2


def test_results_accumulate_over_runs_of_the_same_settings():
    full = _eigen_table()  # V1: j = 1, 2, 10, 50
    one = _eigen_table({10: (0.75, 0.85)})  # V2: a later run of j = 10 only
    merged = accumulate_table(one, _history(**{V1: full, V2: one}), "eigen_training_results", V2)
    table = merged.data
    assert sorted(set(table["task_value"])) == [1, 2, 10, 50]
    row = table[(table["task_value"] == 10) & (table["kind"] == "linear")].iloc[0]
    assert row["test_accuracy"] == 0.85 and row[VERSION] == V2  # the newest row wins
    assert set(table.loc[table["task_value"] == 1, VERSION]) == {V1}
    assert merged.used == {V2: 2, V1: 6}
    # Control 1: the latest version alone (accumulation off) is the one-index table.
    assert sorted(
        set(accumulate_table(one, None, "eigen_training_results", V2).data["task_value"])
    ) == [10]
    # Control 2: a version with other settings (20 epochs) is left out, and counted.
    other = full.assign(epochs=20)
    merged = accumulate_table(one, _history(**{V1: other, V2: one}), "eigen_training_results", V2)
    assert sorted(set(merged.data["task_value"])) == [10] and merged.other_settings == [V1]
    # Control 3: a pin to V2 ignores the newer V3; a pin to V1 ignores V2.
    newer = _eigen_table({1: (0.1, 0.1)})
    history = _history(**{V1: full, V2: one, V3: newer})
    merged = accumulate_table(one, history, "eigen_training_results", V2)
    assert merged.data.loc[merged.data["task_value"] == 1, "test_accuracy"].tolist() != [0.1, 0.1]
    merged = accumulate_table(full, history, "eigen_training_results", V1)
    assert set(merged.data[VERSION]) == {V1}


def test_a_version_from_another_spectrum_is_not_mixed_in():
    full = _eigen_table()
    one = _eigen_table({10: (0.75, 0.85)})
    respectrum = full.assign(eigenvalue=full["eigenvalue"] * 2)  # same settings, other λ
    merged = accumulate_table(
        one, _history(**{V1: respectrum, V2: one}), "eigen_training_results", V2
    )
    assert merged.other_settings == [V1] and sorted(set(merged.data["task_value"])) == [10]


def test_an_unreadable_old_version_is_skipped_and_reported():
    old = pd.DataFrame({"label_idx": [1], "test_accuracy": [0.9]})  # first-wave columns
    one = _eigen_table({10: (0.75, 0.85)})
    merged = accumulate_table(one, _history(**{V1: old, V2: one}), "eigen_training_results", V2)
    assert merged.unreadable == [V1] and sorted(set(merged.data["task_value"])) == [10]


def test_alignment_accumulates_over_versions_of_the_same_settings():
    older = _alignment({1: (1.0, 0.5), 10: (2.0, 1.0)})
    newer = _alignment({10: (3.0, 1.0)})
    history = {
        f"{V1}/eigen_training_alignment": lambda: older,
        f"{V2}/eigen_training_alignment": lambda: newer,
        f"{V2}/eigen_training_alignment.json.meta": lambda: pytest.fail("sidecar read"),
    }
    merged = accumulate_alignment(newer, history, "eigen_training_alignment", V2)
    assert list(merged.data["runs"]) == ["1", "10"]
    assert merged.data["runs"]["10"]["concentration"]["train_end"] == 4.0  # newest wins
    assert merged.data["settings"]["indices"] == [1, 10]
    # Control: other settings (another radius) are not mixed in.
    history[f"{V1}/eigen_training_alignment"] = lambda: _alignment({1: (1.0, 0.5)}, radius=3)
    merged = accumulate_alignment(newer, history, "eigen_training_alignment", V2)
    assert list(merged.data["runs"]) == ["10"] and merged.other_settings == [V1]


def test_summary_shows_accumulated_rows_and_where_they_come_from():
    full, one = _eigen_table(), _eigen_table({10: (0.75, 0.85)})
    artifacts = _artifacts(
        eigen_training_results=one,
        eigen_training_results_history=_history(**{V1: full, V2: one}),
    )
    markdown, _, _ = _summarize(artifacts, {"eigen_training_results": V2})
    assert "| 50 |" in markdown and "| 10 |" in markdown
    assert (
        f"`eigen_training_results` accumulated from 2 version(s): {V2} (2 rows), {V1} (6 rows)"
        in markdown
    )
    # Control: with accumulation off the table is the latest run's only.
    markdown, _, _ = _summarize(artifacts, {"eigen_training_results": V2}, accumulate=False)
    assert (
        "| 50 |"
        not in markdown.split("## Kernel at initialisation")[0].split("## Eigenfunction")[1]
    )


def test_summary_reports_the_pretrained_kernel_comparison():
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
    assert "test accuracy, kernel at θ0 − kernel at θ_end: mean +0.080" in markdown
    assert "|kernel at θ_end − network| test accuracy: mean 0.02" in markdown
    assert "| 10 | 90.91 | 0.6 | 0.6 | 0.6 | 1 | 0.7 | 1 | 0.8 | 1 | 0.72 |" in markdown
    assert figure_has_data(fig)


def test_summary_with_nothing_run():
    markdown, _, fig = _summarize(dict.fromkeys([*ARTIFACTS, *history_inputs()]))
    assert markdown.count("**Not run yet.**") == len(EXPERIMENTS)
    assert "0 of 6 experiments found" in markdown
    assert fig.axes and all(not ax.axison for ax in fig.axes)  # every panel says "not run"


def test_reporting_params_are_validated():
    with pytest.raises(Exception, match="reporting.fit_threshold is an accuracy"):
        ReportingParams(fit_threshold=1.5)


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
    assert set(ARTIFACTS) | set(history_inputs()) | {VERSIONS_DATASET} <= set(node.inputs)
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


def test_history_catalog_entries_read_every_version_of_their_artifact(tmp_path, monkeypatch):
    """The catalog's ``<artifact>_history`` reads the version folders of ``<artifact>``."""
    from kedro.config import OmegaConfigLoader
    from kedro.io import Version

    from linearized_kedro.settings import CONFIG_LOADER_ARGS

    conf = Path(__file__).resolve().parents[2] / "conf"
    loader = OmegaConfigLoader(
        str(conf),
        runtime_params={"model": "mlp", "data": {"dataset": "digits"}},
        **CONFIG_LOADER_ARGS,
    )
    monkeypatch.chdir(tmp_path)  # relative catalog paths land in tmp_path
    catalog = DataCatalog.from_config(loader["catalog"])
    for name in history_inputs():
        artifact = name.removesuffix("_history")
        history = catalog.get(name)
        assert str(history._path) == str(catalog.get(artifact)._filepath), name
        assert not history.exists()  # nothing saved yet: the hook turns it into None
    # Two saved versions of a results table (and a sidecar) → two partitions.
    from kedro_datasets.pandas import CSVDataset

    path = Path(str(catalog.get("eigen_training_results")._filepath))
    table = _eigen_table()
    for version in (V1, V2):
        CSVDataset(
            filepath=str(path), version=Version(None, version), save_args={"index": False}
        ).save(table)
        (path / version / f"{path.name}.meta.json").write_text("{}")
    found = versions_of(catalog.get("eigen_training_results_history").load(), path.stem)
    assert sorted(found) == [V1, V2]
    assert len(found[V1]()) == len(table)


def test_summary_figure_leaves_one_class_runs_out_of_the_alignment_panel():
    from linearized_kedro.pipelines.reporting.nodes import _without_one_class

    table = _eigen_table({0: (1.0, 1.0), 1: (0.9, 0.95), 10: (0.7, 0.8)})
    alignment = _alignment({0: (120.0, 50.0), 1: (2.0, 1.0), 10: (3.0, 1.0)})
    assert list(_without_one_class(alignment, table)["runs"]) == ["1", "10"]
    # Control: a table where j = 0 is a real two-class task keeps its run.
    assert list(_without_one_class(alignment, table.assign(degenerate=False))["runs"]) == [
        "0",
        "1",
        "10",
    ]
