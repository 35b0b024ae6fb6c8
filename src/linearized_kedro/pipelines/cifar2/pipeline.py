"""Wiring of ``cifar2``."""

from kedro.pipeline import Node, Pipeline

from .nodes import make_cifar2_labels, plot_cifar2_accuracy, train_cifar2


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                make_cifar2_labels,
                ["prepared_labels", "data_report"],
                "cifar2_labels",
                name="make_cifar2_labels",
            ),
            Node(
                train_cifar2,
                [
                    "prepared_inputs",
                    "prepared_labels",
                    "cifar2_labels",
                    "data_report",
                    "params:model_config",
                    "params:cifar2",
                    "params:seed",
                ],
                ["cifar2_results", "cifar2_histories", "cifar2_report"],
                name="train_cifar2_size_sweep",
            ),
            Node(
                plot_cifar2_accuracy,
                ["cifar2_results", "cifar2_report"],
                "cifar2_accuracy_plot",
                name="plot_cifar2_accuracy_vs_size",
            ),
        ]
    )
