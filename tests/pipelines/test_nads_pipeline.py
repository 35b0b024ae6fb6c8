"""nads and nad_training on tiny in-memory catalogs: LeNet-GeLU on 8×8×1 NAD images (D = 64)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from kedro.io import DataCatalog, DatasetError, MemoryDataset, Version  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from linearized_kedro.datasets import NumpyDataset  # noqa: E402
from linearized_kedro.pipelines.nad_training import create_pipeline as nad_training_pipeline  # noqa: E402,E501
from linearized_kedro.pipelines.nad_training.nodes import train_on_nads  # noqa: E402
from linearized_kedro.pipelines.nads import create_pipeline as nads_pipeline  # noqa: E402
from linearized_kedro.pipelines.nads.nodes import (  # noqa: E402
    compute_nads,
    init_nad_network,
    nad_model_config,
)

SHAPE = [8, 8, 1]
D = 64
# The shared preset says ReLU: the NAD pipelines must replace it with nads.activation.
LENET = {"name": "lenet", "activation": "relu", "conv_features": [3, 4], "dense_features": [16, 8]}
NADS = {"activation": "gelu", "input_shape": SHAPE, "sigma": 0.0, "num_plot": 8, "progress": False}
TRAINING = {
    "label_idx": [0, 40],
    "linearize": "both",
    "epsilon": 1.0,
    "sigma": 1.0,
    "num_train": 96,
    "num_test": 64,
    "progress": False,
    "train": {"epochs": 1, "batch_size": 32},
}


class _Kept(MemoryDataset):
    """The runner releases intermediate outputs; keep them for the assertions."""

    def _release(self) -> None:
        pass


NADS_OUTPUTS = (
    "nads_init_params",
    "nads_directions",
    "nads_images",
    "nads_eigenvalues",
    "nads_report",
    "nads_directions_plot",
    "nads_spectrum_plot",
)


def _params_catalog(nads=NADS, training=TRAINING, model=LENET) -> dict:
    return {
        "params:model_config": MemoryDataset(model),
        "params:nads": MemoryDataset(nads),
        "params:nad_training": MemoryDataset(training),
        "params:label_idx": MemoryDataset(None),
        "params:linearize": MemoryDataset(None),
        "params:seed": MemoryDataset(42),
    }


@pytest.fixture(scope="module")
def nads_outputs():
    catalog = DataCatalog(
        {**_params_catalog(), **{name: _Kept(copy_mode="assign") for name in NADS_OUTPUTS}}
    )
    SequentialRunner().run(nads_pipeline(), catalog)
    return {name: catalog.load(name) for name in NADS_OUTPUTS}


def test_nads_pipeline_outputs(nads_outputs):
    nads, images = nads_outputs["nads_directions"], nads_outputs["nads_images"]
    values, report = nads_outputs["nads_eigenvalues"], nads_outputs["nads_report"]
    assert nads.shape == (D, D) and nads.dtype == np.float32
    assert images.shape == (D, *SHAPE)
    np.testing.assert_array_equal(images.reshape(D, D), nads)
    np.testing.assert_allclose(nads @ nads.T, np.eye(D), atol=1e-5)
    assert values.shape == (D,) and np.all(np.diff(values) <= 0) and values[0] > 0
    # The recorded model is the preset with the NAD activation, not the preset's ReLU.
    assert report["model_config"]["activation"] == "gelu"
    assert report["model_config"]["conv_features"] == [3, 4]
    assert report["settings"]["sigma"] == 0.0 and report["settings"]["input_shape"] == SHAPE
    assert report["input_dim"] == D and report["num_params"] > 0
    assert report["max_relative_residual"] < 1e-10
    assert set(report["timings"]) >= {"operator", "gram", "eigh"}
    assert "num_zero_eigenvalues" in report
    for name in ("nads_directions_plot", "nads_spectrum_plot"):
        assert isinstance(nads_outputs[name], Figure)
    assert "params" in nads_outputs["nads_init_params"]


def test_nads_are_deterministic(nads_outputs):
    variables = init_nad_network(LENET, NADS, 42)
    nads, _, values, _ = compute_nads(variables, LENET, NADS, 42)
    np.testing.assert_array_equal(nads, nads_outputs["nads_directions"])
    np.testing.assert_array_equal(values, nads_outputs["nads_eigenvalues"])


def test_relu_at_zero_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="identically zero.*nads.sigma > 0"):
        init_nad_network(LENET, {**NADS, "activation": "relu"}, 42)
    with pytest.raises(ValueError, match="Unknown keys \\['sigmaa'\\]"):
        init_nad_network(LENET, {**NADS, "sigmaa": 1.0}, 42)
    with pytest.raises(ValueError, match="nads.sigma must be >= 0"):
        nad_model_config(LENET, {**NADS, "sigma": -1.0})
    with pytest.raises(ValueError, match="restricted to inputs"):
        nad_model_config({**LENET, "input_shape": [32, 32, 1]}, NADS)
    with pytest.raises(ValueError, match="seed"):
        init_nad_network(LENET, NADS, "42")
    variables = init_nad_network(LENET, NADS, 0)
    with pytest.raises(ValueError, match="do not match model"):
        compute_nads(variables, {**LENET, "dense_features": [16]}, NADS, 0)


def _training_catalog(nads_outputs, **params) -> DataCatalog:
    upstream = {
        name: MemoryDataset(nads_outputs[name], copy_mode="assign")
        for name in ("nads_directions", "nads_eigenvalues", "nads_report", "nads_init_params")
    }
    outputs = {
        name: _Kept(copy_mode="assign")
        for name in ("nad_training_results", "nad_training_histories", "nad_training_accuracy_plot")
    }
    return DataCatalog({**_params_catalog(**params), **upstream, **outputs})


def test_nad_training_pipeline(nads_outputs):
    catalog = _training_catalog(nads_outputs)
    SequentialRunner().run(nad_training_pipeline(), catalog)
    table = catalog.load("nad_training_results")
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    assert list(table["label_idx"]) == [0, 0, 40, 40]
    assert list(table["kind"]) == ["linear", "network"] * 2
    for column in (
        "eigenvalue",
        "train_accuracy",
        "test_accuracy",
        "train_loss",
        "test_loss",
        "param_distance_squared",
        "param_distance_relative",
        "diverged",
    ):
        assert column in table, column
    np.testing.assert_allclose(
        table["eigenvalue"], nads_outputs["nads_eigenvalues"][[0, 0, 40, 40]], rtol=1e-12
    )
    assert table["test_accuracy"].between(0, 1).all() and not table["diverged"].any()
    assert (table["param_distance_squared"] > 0).all()
    histories = catalog.load("nad_training_histories")
    assert set(histories["runs"]) == {"network_0", "linear_0", "network_40", "linear_40"}
    assert len(histories["runs"]["network_0"]["test_accuracy"]) == 1
    assert histories["settings"]["model_config"]["activation"] == "gelu"
    assert isinstance(catalog.load("nad_training_accuracy_plot"), Figure)


def _train(nads_outputs, **overrides):
    args = {
        "nads_directions": nads_outputs["nads_directions"],
        "nads_eigenvalues": nads_outputs["nads_eigenvalues"],
        "nads_report": nads_outputs["nads_report"],
        "nads_init_params": nads_outputs["nads_init_params"],
        "model_config": LENET,
        "nads_params": NADS,
        "nad_training": TRAINING,
        "label_idx": None,
        "linearize": None,
        "seed": 42,
    }
    args.update(overrides)
    return train_on_nads(**args)


def test_nad_training_bad_inputs(nads_outputs):
    with pytest.raises(ValueError, match="\\[64\\] out of range.*must be < 64"):
        _train(nads_outputs, label_idx=[0, 64])
    with pytest.raises(ValueError, match="D=64 entries but the model input shape.*D=256"):
        _train(nads_outputs, nads_params={**NADS, "input_shape": [16, 16, 1]})
    with pytest.raises(ValueError, match="computed for model config.*kedro run --pipelines nads"):
        _train(nads_outputs, nads_params={**NADS, "activation": "tanh"})
    with pytest.raises(ValueError, match="linearize must be"):
        _train(nads_outputs, linearize="maybe")
    with pytest.raises(ValueError, match="Unknown keys"):
        _train(nads_outputs, nad_training={**TRAINING, "epoch": 3})
    with pytest.raises(ValueError, match="epsilon"):
        _train(nads_outputs, nad_training={**TRAINING, "epsilon": 0.0})


def test_missing_upstream_nads_raise_dataset_error(nads_outputs, tmp_path):
    # What a user sees when `nads` never ran: the versioned dataset has no version.
    catalog = _training_catalog(nads_outputs)
    catalog["nads_directions"] = NumpyDataset(
        filepath=str(tmp_path / "nads_directions" / "nads.npy"), version=Version(None, None)
    )
    with pytest.raises(DatasetError, match="(?i)did not find any versions"):
        SequentialRunner().run(nad_training_pipeline(), catalog)


@pytest.mark.slow
def test_network_learns_early_nads_better_than_late_ones():
    """SPEC §2.3: the NAD index orders directional difficulty (network, toy scale)."""
    lenet = {**LENET, "conv_features": [6, 16], "dense_features": [32, 16]}
    variables = init_nad_network(lenet, NADS, 42)
    nads, _, values, report = compute_nads(variables, lenet, NADS, 42)
    training = {
        **TRAINING,
        "label_idx": [0, 1, 60, 62],
        "linearize": "false",
        "num_train": 1000,
        "num_test": 500,
        "train": {"epochs": 8, "batch_size": 64},
    }
    outputs = {
        "nads_directions": nads,
        "nads_eigenvalues": values,
        "nads_report": report,
        "nads_init_params": variables,
    }
    table, _ = _train(outputs, model_config=lenet, nad_training=training)
    acc = table.set_index("label_idx")["test_accuracy"]
    early, late = acc.loc[[0, 1]].mean(), acc.loc[[60, 62]].mean()
    assert early > late + 0.15, table
    assert early > 0.8, table
