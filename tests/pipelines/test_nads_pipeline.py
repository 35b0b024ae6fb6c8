"""nads and nad_training wired on tiny in-memory catalogs: LeNet-GeLU on 8×8×1 NAD images.

The experiments' behaviour (ordering, errors, divergence) is tested in
``tests/experiments/test_nads.py`` and ``test_nad_tasks.py``; here, the wiring.
"""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.experiments import results
from linearized_kedro.experiments.nad_tasks import NadTasksConfig
from linearized_kedro.experiments.nads import NadsConfig
from linearized_kedro.figures import figure_has_data
from linearized_kedro.pipelines.nad_training import create_pipeline as nad_training_pipeline
from linearized_kedro.pipelines.nads import create_pipeline as nads_pipeline

SHAPE = (8, 8, 1)
D = 64
# The shared preset says ReLU: the NAD pipelines must replace it with nads.activation.
LENET = {"name": "lenet", "activation": "relu", "conv_features": [3, 4], "dense_features": [16, 8]}
NADS = NadsConfig(activation="gelu", input_shape=SHAPE, num_plot=8, progress=False)
TRAINING = NadTasksConfig(
    label_idx=(0, 40),
    num_train=96,
    num_test=64,
    progress=False,
    train={"epochs": 1, "batch_size": 32},
)
NADS_OUTPUTS = (
    "nads_init_params",
    "nads_directions",
    "nads_images",
    "nads_eigenvalues",
    "nads_report",
    "nads_directions_plot",
    "nads_spectrum_plot",
)


class Kept(MemoryDataset):
    def _release(self) -> None:
        pass


def _params(**overrides) -> dict:
    values = {
        "model_config": LENET,
        "nads": NADS,
        "nad_training": TRAINING,
        "label_idx": None,
        "linearize": None,
        "seed": 42,
    }
    values.update(overrides)
    return {f"params:{k}": MemoryDataset(v) for k, v in values.items()}


@pytest.fixture(scope="module")
def nads_outputs():
    catalog = DataCatalog({**_params(), **{n: Kept(copy_mode="assign") for n in NADS_OUTPUTS}})
    SequentialRunner().run(nads_pipeline(), catalog)
    return {name: catalog.load(name) for name in NADS_OUTPUTS}


def test_nads_pipeline_outputs(nads_outputs):
    nads, images = nads_outputs["nads_directions"], nads_outputs["nads_images"]
    assert nads.shape == (D, D) and images.shape == (D, *SHAPE)
    np.testing.assert_array_equal(images.reshape(D, D), nads)
    np.testing.assert_allclose(nads @ nads.T, np.eye(D), atol=1e-5)
    assert nads_outputs["nads_eigenvalues"].shape == (D,)
    assert nads_outputs["nads_report"]["model_config"]["activation"] == "gelu"
    assert "params" in nads_outputs["nads_init_params"]
    for name in ("nads_directions_plot", "nads_spectrum_plot"):
        assert figure_has_data(nads_outputs[name]), name
    # num_plot=8 NADs and their |FFT2|: 16 image panels.
    assert sum(bool(ax.images) for ax in nads_outputs["nads_directions_plot"].axes) == 16


def _train(nads_outputs, **params):
    upstream = {
        name: MemoryDataset(nads_outputs[name], copy_mode="assign")
        for name in ("nads_directions", "nads_eigenvalues", "nads_report", "nads_init_params")
    }
    outputs = (
        "nad_training_results",
        "nad_training_histories",
        "nad_training_accuracy_plot",
        "nad_training_accuracy_figure",
    )
    catalog = DataCatalog(
        {**_params(**params), **upstream, **{n: Kept(copy_mode="assign") for n in outputs}}
    )
    SequentialRunner().run(nad_training_pipeline(), catalog)
    return catalog


def test_nad_training_pipeline(nads_outputs):
    catalog = _train(nads_outputs)
    table = catalog.load("nad_training_results")
    assert list(table.columns) == list(results.COLUMNS)
    assert sorted(zip(table.task_value, table.kind, strict=True)) == [
        (0, "linear"),
        (0, "network"),
        (40, "linear"),
        (40, "network"),
    ]
    np.testing.assert_allclose(
        table["eigenvalue"], nads_outputs["nads_eigenvalues"][table["task_value"]], rtol=1e-12
    )
    histories = catalog.load("nad_training_histories")
    assert set(histories["runs"]) == {"network_0", "linear_0", "network_40", "linear_40"}
    assert figure_has_data(catalog.load("nad_training_accuracy_plot"))
    assert catalog.load("nad_training_accuracy_figure").data  # Plotly traces


def test_shortcuts_select_one_task(nads_outputs):
    table = _train(nads_outputs, label_idx=5, linearize="true").load("nad_training_results")
    assert list(table.task_value) == [5] and list(table.kind) == ["linear"]
