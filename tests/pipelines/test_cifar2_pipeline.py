"""cifar2 on a tiny in-memory catalog: digits-shaped random data, MLP, 1-2 epochs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from kedro.io import DataCatalog, MemoryDataset  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402

from linearized_kedro.pipelines.cifar2 import create_pipeline  # noqa: E402
from linearized_kedro.pipelines.cifar2.nodes import (  # noqa: E402
    Cifar2Params,
    make_cifar2_labels,
    plot_cifar2_accuracy,
    train_cifar2,
    training_sizes,
)

NUM_TRAIN, NUM_TEST = 120, 60
MLP = {"name": "mlp", "activation": "relu", "features": [16]}


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    n = NUM_TRAIN + NUM_TEST
    # Every class in both splits, so stratification is well defined.
    labels = np.concatenate([np.arange(NUM_TRAIN) % 10, np.arange(NUM_TEST) % 10])
    labels = labels[
        np.concatenate([rng.permutation(NUM_TRAIN), NUM_TRAIN + rng.permutation(NUM_TEST)])
    ]
    # A learnable signal: the mean brightness depends on the binary class.
    inputs = rng.normal(size=(n, 8, 8, 1)).astype(np.float32)
    inputs += np.where(labels <= 4, 0.5, -0.5)[:, None, None, None].astype(np.float32)
    report = {
        "dataset": "digits",
        "num_train": NUM_TRAIN,
        "num_test": NUM_TEST,
        "input_shape": [8, 8, 1],
    }
    return inputs, labels.astype(np.int64), report


def _params(**overrides):
    params = {
        "num_train": [40, 80],
        "linearize": "both",
        "subset_seed": None,
        "progress": False,
        "train": {"epochs": 2, "max_lr": 0.05, "batch_size": 32},
    }
    params.update(overrides)
    return params


class _KeptMemoryDataset(MemoryDataset):
    """The runner releases intermediate outputs; keep them for the assertions."""

    def _release(self) -> None:
        pass


def _run(params: dict):
    inputs, labels, report = _data()
    catalog = DataCatalog(
        {
            "prepared_inputs": MemoryDataset(inputs),
            "prepared_labels": MemoryDataset(labels),
            "data_report": MemoryDataset(report),
            "params:model_config": MemoryDataset(MLP),
            "params:cifar2": MemoryDataset(params),
            "params:seed": MemoryDataset(42),
            "cifar2_labels": MemoryDataset(),
            "cifar2_results": _KeptMemoryDataset(copy_mode="assign"),
            "cifar2_histories": _KeptMemoryDataset(copy_mode="assign"),
            "cifar2_report": _KeptMemoryDataset(copy_mode="assign"),
            "cifar2_accuracy_plot": _KeptMemoryDataset(copy_mode="assign"),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_binary_labels_map_classes_0_to_4_to_one():
    labels = np.arange(10)
    report = {"num_train": 6, "num_test": 4}
    got = make_cifar2_labels(labels, report)
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert got.dtype == np.float32


@pytest.mark.parametrize("bad", [np.array([0, 3, 10]), np.array([-1, 2, 3])])
def test_labels_outside_ten_classes_are_refused(bad):
    with pytest.raises(ValueError, match="10-class"):
        make_cifar2_labels(bad, {"num_train": 2, "num_test": 1})


def test_training_sizes():
    assert training_sizes([80, 40, -1, 40], 120) == [40, 80, 120]
    assert training_sizes(50, 120) == [50]
    with pytest.raises(ValueError, match="exceeds the 120 prepared"):
        training_sizes([40, 500], 120)
    with pytest.raises(ValueError, match="at least 10"):
        training_sizes([5], 120)
    with pytest.raises(ValueError, match="integer"):
        training_sizes(["40"], 120)


def test_unknown_parameter_key_is_refused():
    with pytest.raises(ValueError, match="Unknown keys"):
        Cifar2Params.from_value({"num_trian": [40]})


def test_pipeline_sweeps_sizes_for_network_and_linearisation():
    catalog = _run(_params())
    table: pd.DataFrame = catalog.load("cifar2_results")
    assert list(zip(table["num_train"], table["kind"], strict=True)) == [
        (40, "linear"),
        (40, "network"),
        (80, "linear"),
        (80, "network"),
    ]
    for column in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "epochs"):
        assert column in table.columns
    assert not table["diverged"].any()
    assert table["test_accuracy"].between(0, 1).all()
    assert (table["epochs"] == 2).all()
    # The signal is easy: trained models beat chance on the test split.
    assert (table["test_accuracy"] > 0.6).all(), table
    histories = catalog.load("cifar2_histories")
    assert set(histories) == {"network_40", "linear_40", "network_80", "linear_80"}
    assert len(histories["network_80"]["test_accuracy"]) == 2
    report = catalog.load("cifar2_report")
    assert report["sizes"] == [40, 80] and report["subset_seed"] == 42 + 999
    assert report["majority_baseline_test"] == pytest.approx(0.5)
    fig = catalog.load("cifar2_accuracy_plot")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_title()
    curves = {line.get_label(): line for line in ax.get_lines()}
    assert set(curves) == {
        "network (test)",
        "network (train)",
        "linearised (NTK at θ0) (test)",
        "linearised (NTK at θ0) (train)",
        "majority class (test)",
    }
    np.testing.assert_array_equal(curves["network (test)"].get_xdata(), [40, 80])


def test_network_only_and_determinism():
    inputs, labels, report = _data()
    y = make_cifar2_labels(labels, report)
    args = (inputs, labels, y, report, MLP)
    # Same shapes and settings as the pipeline test: the engine reuses its compilation.
    first, _, _ = train_cifar2(*args, _params(linearize=False, num_train=[80]), 42)
    second, _, _ = train_cifar2(*args, _params(linearize=False, num_train=[80]), 42)
    assert list(first["kind"]) == ["network"] and list(first["num_train"]) == [80]
    pd.testing.assert_frame_equal(first, second)


def test_diverged_run_is_reported_as_failed():
    inputs, labels, report = _data()
    y = make_cifar2_labels(labels, report)
    # Overflowing inputs make the loss non-finite in the first epoch; same shapes and
    # settings as above, so the engine reuses its compiled epoch.
    table, _, meta = train_cifar2(
        inputs * np.float32(1e30),
        labels,
        y,
        report,
        MLP,
        _params(linearize=False, num_train=[80]),
        42,
    )
    assert table["diverged"].all()
    assert table["test_accuracy"].isna().all() and table["train_accuracy"].isna().all()
    assert table["param_distance"].isna().all()
    assert meta["diverged_runs"] == ["network_80"]
    fig = plot_cifar2_accuracy(table, meta)  # a failed run must not break the figure
    assert any("diverged" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


def test_size_above_prepared_rows_is_a_clear_error():
    inputs, labels, report = _data()
    y = make_cifar2_labels(labels, report)
    with pytest.raises(ValueError, match="exceeds the 120 prepared training samples"):
        train_cifar2(inputs, labels, y, report, MLP, _params(num_train=[500]), 42)
