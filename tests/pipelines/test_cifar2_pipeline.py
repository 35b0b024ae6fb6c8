"""cifar2 wired on an in-memory catalog (SequentialRunner)."""

from __future__ import annotations

import numpy as np
from fakes import CIFAR2_TEST as NUM_TEST
from fakes import CIFAR2_TRAIN as NUM_TRAIN
from fakes import MLP, cifar2_data
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from linearized_kedro.experiments.cifar2 import Cifar2Config
from linearized_kedro.pipelines.cifar2 import create_pipeline


class Kept(MemoryDataset):
    def _release(self) -> None:
        pass


def test_pipeline_outputs():
    inputs, labels = cifar2_data()
    report = {"dataset": "digits", "num_train": NUM_TRAIN, "num_test": NUM_TEST, "num_classes": 10}
    outputs = ["cifar2_labels", "cifar2_results", "cifar2_histories", "cifar2_accuracy_plot"]
    catalog = DataCatalog(
        {
            "prepared_inputs": MemoryDataset(inputs),
            "prepared_labels": MemoryDataset(labels),
            "data_report": MemoryDataset(report),
            "params:model_config": MemoryDataset(MLP),
            "params:cifar2": MemoryDataset(
                Cifar2Config(
                    num_train=(40, 80), progress=False, train={"epochs": 2, "batch_size": 32}
                )
            ),
            "params:seed": MemoryDataset(42),
            **{name: Kept(copy_mode="assign") for name in outputs},
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    np.testing.assert_array_equal(catalog.load("cifar2_labels"), (labels <= 4).astype(np.float32))
    table = catalog.load("cifar2_results")
    assert sorted(set(table["task_value"])) == [40, 80] and set(table["kind"]) == {
        "network",
        "linear",
    }
    histories = catalog.load("cifar2_histories")
    assert set(histories["runs"]) == {"network_40", "linear_40", "network_80", "linear_80"}
    assert histories["settings"]["sizes"] == [40, 80]
    ax = catalog.load("cifar2_accuracy_plot").axes[0]
    curves = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(curves["network (test)"].get_xdata(), [40, 80])
