"""Wiring of ``eigen_training``."""

from kedro.pipeline import Node, Pipeline

from .nodes import plot_accuracy_vs_index, plot_alignment, train_on_eigenfunctions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_on_eigenfunctions,
                [
                    "prepared_inputs",
                    "data_report",
                    "ntk_eigenvalues",
                    "ntk_eigenvectors",
                    "ntk_report",
                    "ntk_sample_index",
                    "sample_index",
                    "ntk_init_params",
                    "params:model_config",
                    "params:eigen_training",
                    "params:label_idx",
                    "params:linearize",
                    "params:seed",
                ],
                [
                    "eigen_training_results",
                    "eigen_training_histories",
                    "eigen_training_params",
                    "eigen_training_alignment",
                ],
                name="train_on_eigenfunctions",
            ),
            Node(
                plot_accuracy_vs_index,
                ["eigen_training_results", "ntk_report"],
                "eigen_training_accuracy_plot",
                name="plot_accuracy_vs_eigen_index",
            ),
            Node(
                plot_alignment,
                "eigen_training_alignment",
                "eigen_training_alignment_plot",
                name="plot_kernel_alignment",
            ),
        ]
    )
