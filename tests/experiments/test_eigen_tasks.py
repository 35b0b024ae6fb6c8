"""experiments.eigen_tasks and experiments.pretrained: tables, checks, failure modes."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from fakes import MLP, N_TEST, N_TRAIN, TRAIN, fake_spectrum

from linearized_kedro.core.config import ConfigError, from_mapping
from linearized_kedro.experiments import results
from linearized_kedro.experiments.eigen_tasks import (
    EigenTasksConfig,
    StoredSpectrum,
    check_spectrum_matches,
    merge_partition_tables,
    network_alignment,
    train_eigen_tasks,
)
from linearized_kedro.experiments.pretrained import PretrainedConfig, compare_kernels


@pytest.fixture(scope="module")
def spectrum():
    return StoredSpectrum(**fake_spectrum())


def _config(**changes) -> EigenTasksConfig:
    values = {"label_idx": [1], "linearize": "false", "alignment": False, "progress": False}
    values.update(changes)
    values["train"] = {**TRAIN, **values.get("train", {})}
    return from_mapping(EigenTasksConfig, values)


def _train(spectrum, config):
    return train_eigen_tasks(
        *spectrum.experiment_inputs(), MLP, config, seed=42, dataset=spectrum.dataset
    )


def _align(spectrum, trained, config):
    return network_alignment(*spectrum.experiment_inputs(), trained, MLP, config)


def _check(spectrum, **changes):
    args = {
        "ntk_report": spectrum.ntk_report,
        "spectrum_sample_index": spectrum.ntk_sample_index,
        "sample_index": spectrum.prepared_sample_index,
        "model_cfg": MLP,
        "data_report": spectrum.data_report,
        "variables0": spectrum.ntk_init_params,
    }
    args.update(changes)
    check_spectrum_matches(**args)


def _squared_distance(a, b) -> float:
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return sum(float(np.sum((x - y) ** 2)) for x, y in leaves)


def test_table_follows_the_schema_and_labels(spectrum):
    out = _train(spectrum, _config(label_idx=[0, 3], linearize="both", alignment=True))
    table = out.table
    assert list(table.columns) == list(results.COLUMNS)
    assert len(table) == 4 and set(table["kind"]) == {"network", "linear"}
    labels = (spectrum.ntk_eigenvectors[3] > 0).astype(float)
    row = table[(table.task_value == 3) & (table.kind == "linear")].iloc[0]
    assert row["positive_fraction_train"] == pytest.approx(labels[:N_TRAIN].mean())
    test_positive = labels[N_TRAIN:].mean()
    assert row["majority_baseline_test"] == pytest.approx(max(test_positive, 1 - test_positive))
    assert row["task_axis"] == "eigen_index" and row["num_eigvecs"] == 6
    assert row["num_test"] == N_TEST and row["epochs"] == 2 and row["seed"] == 42
    # Every trained model's parameters are kept; alignment measures the networks only.
    assert set(out.params) == {"network_0", "network_3", "linear_0", "linear_3"}
    alignment = _align(spectrum, out.params, _config(label_idx=[0, 3], alignment=True))
    assert set(alignment["runs"]) == {"0", "3"}
    assert _align(spectrum, out.params, _config(alignment=False))["runs"] == {}
    # Negative control: another index gives other labels, hence another class balance.
    other = table[(table.task_value == 0) & (table.kind == "linear")].iloc[0]
    labels0 = (spectrum.ntk_eigenvectors[0] > 0).astype(float)
    assert other["positive_fraction_train"] == pytest.approx(labels0[:N_TRAIN].mean())
    assert labels0[:N_TRAIN].mean() != labels[:N_TRAIN].mean()


def test_index_not_below_k_is_refused(spectrum):
    with pytest.raises(ConfigError, match="out of range.*k=6"):
        _train(spectrum, _config(label_idx=6))


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="eigen_training.linearize"):
        _config(linearize="maybe")
    with pytest.raises(ConfigError, match="eigen_training.partition must be in 0..1"):
        _config(partition=2, num_partitions=2)
    with pytest.raises(ConfigError, match="eigen_training.train.epochz"):
        _config(train={"epochz": 1})


def test_spectrum_checks(spectrum):
    _check(spectrum)  # consistent: accepted
    assert spectrum.check(MLP) is spectrum
    with pytest.raises(ValueError, match="computed for model config"):
        spectrum.check({**MLP, "features": [8]})
    with pytest.raises(ValueError, match="computed for model config"):
        _check(spectrum, model_cfg={**MLP, "activation": "gelu"})
    with pytest.raises(ValueError, match="different samples"):
        _check(spectrum, sample_index=spectrum.prepared_sample_index[::-1])
    shifted = jax.tree_util.tree_map(lambda a: a + 1.0, spectrum.ntk_init_params)
    with pytest.raises(ValueError, match="not the θ0 whose NTK was decomposed"):
        _check(spectrum, variables0=shifted)


def test_diverged_run_is_reported_as_failed(spectrum):
    config = _config(alignment=True, train={"max_lr": 1e30, "lr_schedule": "fixed"})
    out = _train(spectrum, config)
    row = out.table.iloc[0]
    assert bool(row["diverged"]) and np.isnan(row["test_accuracy"]) and np.isnan(row["train_loss"])
    assert out.params == {} and _align(spectrum, out.params, config)["runs"] == {}
    # Negative control: the same task at a sane learning rate trains and keeps its model.
    sane = _train(spectrum, _config(alignment=True))
    assert not sane.table["diverged"].any() and set(sane.params) == {"network_1"}


def test_merge_partitions_restores_the_whole_table(spectrum):
    whole = _train(spectrum, _config(label_idx=[1, 2, 3])).table
    config = _config(label_idx=[1, 2, 3], num_partitions=2)
    parts = {
        "part-000-of-002": whole[whole.task_value != 2],
        "part-001-of-002": whole[whole.task_value == 2],
        "part-000-of-003": whole,  # another sweep's partition: ignored
    }
    merged = merge_partition_tables(parts, config)
    pd.testing.assert_frame_equal(merged, whole)
    with pytest.raises(ValueError, match="partitions .*part-001-of-002.* are missing"):
        merge_partition_tables({"part-000-of-002": parts["part-000-of-002"]}, config)
    with pytest.raises(ValueError, match="come from another sweep"):
        merge_partition_tables({**parts, "part-001-of-002": whole[whole.task_value == 1]}, config)


def test_pretrained_comparison_three_models(spectrum):
    config = from_mapping(PretrainedConfig, {"label_idx": 1, "progress": False, "train": TRAIN})
    out = compare_kernels(
        *spectrum.experiment_inputs(), MLP, config, seed=42, dataset=spectrum.dataset
    )
    table = out.table
    assert set(table["kind"]) == {"network", "linear_init", "linear_pretrained"}
    assert table["test_accuracy"].between(0, 1).all() and not table["diverged"].any()
    # Both linear models start at zero output: their first-epoch loss history exists and
    # the pretrained kernel's model starts from the network's end point, not from θ0.
    pretrained = out.params["linear_pretrained_1"]["params"]
    network = out.params["network_1"]["params"]
    init = spectrum.ntk_init_params["params"]
    dist_to_net = _squared_distance(pretrained, network)
    dist_to_init = _squared_distance(pretrained, init)
    assert dist_to_net < dist_to_init


def test_stored_spectrum_node_inputs_are_catalog_names():
    inputs = StoredSpectrum.node_inputs("seed", trained="eigen_training_trained_params")
    assert inputs["ntk_eigenvectors"] == "ntk_eigenvectors"
    assert inputs["seed"] == "params:seed"
    assert inputs["trained"] == "eigen_training_trained_params"
    # Every field of the bundle (and nothing else) is wired by name.
    assert set(inputs) - {"seed", "trained"} == set(fake_spectrum())
