"""Wiring of ``nad_training``."""

from kedro.pipeline import Node, Pipeline

from linearized_kedro import figures

from .nodes import train_on_nads


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_on_nads,
                [
                    "nads_directions",
                    "nads_eigenvalues",
                    "nads_report",
                    "nads_init_params",
                    "params:model_config",
                    "params:nads",
                    "params:nad_training",
                    "params:label_idx",
                    "params:linearize",
                    "params:seed",
                ],
                ["nad_training_results", "nad_training_histories"],
                name="train_on_nads",
            ),
            Node(
                figures.nad_accuracy_plot,
                "nad_training_results",
                "nad_training_accuracy_plot",
                name="plot_accuracy_vs_index",
            ),
            Node(
                figures.nad_accuracy_plotly,
                "nad_training_results",
                "nad_training_accuracy_figure",
                name="draw_accuracy_vs_index",
            ),
        ],
        namespace="nad_training",
        prefix_datasets_with_namespace=False,
    )
