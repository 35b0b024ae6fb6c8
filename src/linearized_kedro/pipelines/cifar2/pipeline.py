"""Wiring of ``cifar2``."""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures

from .nodes import make_cifar2_labels, train_size_sweep


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                make_cifar2_labels,
                ["prepared_labels", "data_report"],
                "cifar2_labels",
                name="make_labels",
            ),
            Node(
                train_size_sweep,
                [
                    "prepared_inputs",
                    "prepared_labels",
                    "cifar2_labels",
                    "data_report",
                    "params:model_config",
                    "params:cifar2",
                    "params:seed",
                ],
                ["cifar2_results", "cifar2_histories"],
                name="train_size_sweep",
            ),
            Node(
                figures.cifar2_accuracy_plot,
                "cifar2_results",
                "cifar2_accuracy_plot",
                name="plot_accuracy_vs_size",
            ),
            Node(
                figures.cifar2_accuracy_plotly,
                "cifar2_results",
                "cifar2_accuracy_figure",
                name="draw_accuracy_vs_size",
            ),
        ],
        namespace="cifar2",
        prefix_datasets_with_namespace=False,
    )
