"""Wiring of ``pretrained_comparison``."""

from kedro.pipeline import Node, Pipeline

from .nodes import compare_init_and_pretrained_kernels, plot_comparison


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                compare_init_and_pretrained_kernels,
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
                    "params:pretrained_comparison",
                    "params:label_idx",
                    "params:seed",
                ],
                [
                    "pretrained_comparison_results",
                    "pretrained_comparison_histories",
                    "pretrained_comparison_params",
                ],
                name="compare_init_and_pretrained_kernels",
            ),
            Node(
                plot_comparison,
                ["pretrained_comparison_results", "ntk_report"],
                "pretrained_comparison_plot",
                name="plot_pretrained_comparison",
            ),
        ]
    )
